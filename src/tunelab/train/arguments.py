"""TrainConfig -> the keyword arguments every transformers/TRL trainer config shares. One place
decides the defaults that reflect practice: AdamW, cosine decay with warm-up, clipping at 1.0,
weight decay, evaluation and checkpoints each epoch, the best checkpoint kept."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from tunelab.errors import TunelabError


def default_lr(task: str, method: str) -> float:
    if method in ("lora", "dora", "qlora"):
        return 2e-4  # adapters start from zero and need a larger step than the weights they adapt
    if task == "classification":
        return 5e-5
    if task == "dpo":
        return 5e-6
    return 2e-5


def best_metric(task: str, metric: str | None) -> tuple[str, bool]:
    """(metric_for_best_model, greater_is_better)."""
    name = metric or ("macro_f1" if task == "classification" else "eval_loss")
    bare = name.removeprefix("eval_")
    return name, bare not in ("loss", "perplexity")


def mixed_precision(setting) -> bool:
    cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if setting == "auto":
        return cuda_bf16
    if setting and not cuda_bf16:
        raise TunelabError("train.bf16 is on but this machine has no GPU with bf16 support",
                           fix="set train.bf16=auto (or false) on CPU")
    return bool(setting)


def distributed_kwargs(dist) -> dict[str, Any]:
    if dist.strategy == "deepspeed":
        offload = {"device": "cpu"} if dist.offload else {"device": "none"}
        zero: dict[str, Any] = {"stage": dist.zero_stage, "offload_optimizer": offload}
        if dist.zero_stage == 3:
            zero.update(offload_param=offload, stage3_gather_16bit_weights_on_model_save=True)
        config = {"zero_optimization": zero, "train_micro_batch_size_per_gpu": "auto",
                  "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "bf16": {"enabled": "auto"}}
        return {"deepspeed": config}
    if dist.strategy == "fsdp":
        return {"fsdp": dist.fsdp, "fsdp_config": {"offload_params": dist.offload}}
    return {}


def training_kwargs(tc, *, task: str, checkpoints_dir: Path, has_eval: bool, run_name: str) -> dict[str, Any]:
    on_gpu = torch.cuda.is_available()
    metric, greater = best_metric(task, tc.metric)
    per_epoch = tc.eval_steps is None and tc.save_steps is None
    kwargs: dict[str, Any] = dict(
        output_dir=str(checkpoints_dir),
        run_name=run_name,
        num_train_epochs=tc.epochs,
        max_steps=tc.max_steps,
        learning_rate=tc.lr or default_lr(task, tc.method),
        per_device_train_batch_size=tc.batch_size,
        per_device_eval_batch_size=tc.eval_batch_size or tc.batch_size,
        gradient_accumulation_steps=tc.grad_accum,
        lr_scheduler_type=tc.scheduler,
        warmup_steps=tc.warmup,  # below 1: a share of the total steps (transformers 5)
        optim=tc.optimizer,
        weight_decay=tc.weight_decay,
        max_grad_norm=tc.max_grad_norm,
        seed=tc.seed,
        data_seed=tc.seed,
        logging_steps=tc.logging_steps,
        logging_first_step=True,
        include_num_input_tokens_seen="non_padding",
        report_to=_report_to(tc.tracking.backend),
        save_strategy="epoch" if per_epoch else "steps",
        save_steps=tc.save_steps or tc.eval_steps or 500,
        save_total_limit=tc.keep_checkpoints,
        use_cpu=not on_gpu,
        bf16=mixed_precision(tc.bf16),
        gradient_checkpointing=tc.gradient_checkpointing,
        use_liger_kernel=tc.liger,
        # several CPU processes (accelerate launch / torchrun) talk over gloo; NCCL is for GPUs
        ddp_backend="gloo" if not on_gpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        disable_tqdm=True,
    )
    if has_eval:
        kwargs.update(eval_strategy="epoch" if per_epoch else "steps",
                      eval_steps=tc.eval_steps or tc.save_steps,
                      load_best_model_at_end=True, metric_for_best_model=metric, greater_is_better=greater)
        if not per_epoch:  # the best checkpoint must be one that was evaluated
            kwargs["save_steps"] = kwargs["eval_steps"]
    else:
        kwargs["eval_strategy"] = "no"
    if tc.liger and not on_gpu:
        raise TunelabError("train.liger needs a GPU (Liger kernels are Triton kernels)", fix="set train.liger=false on CPU")
    kwargs.update(distributed_kwargs(tc.distributed))
    return kwargs


def _report_to(backend: str) -> list[str] | str:
    return {"mlflow": ["mlflow"], "tensorboard": ["tensorboard"], "none": "none"}[backend]
