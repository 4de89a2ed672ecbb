"""TrainConfig -> the keyword arguments every transformers/TRL trainer config shares. One place
decides the defaults that reflect practice: AdamW, cosine decay with warm-up, clipping at 1.0,
weight decay, evaluation and checkpoints each epoch, the best checkpoint kept."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch

from tunelab.config import ADAPTER_METHODS
from tunelab.errors import TunelabError


def default_lr(task: str, method: str) -> float:
    if method in ADAPTER_METHODS:
        # adapters start from zero and need a larger step than the weights they adapt; RL moves
        # an already capable model, a tenth of that
        return 2e-5 if task == "rft" else 2e-4
    if task == "classification":
        return 5e-5
    if task == "dpo":
        return 5e-6
    if task == "rft":
        return 1e-6  # TRL's GRPO default: policy-gradient steps on full weights must stay small
    return 2e-5


def best_metric(task: str, metric: str | None) -> tuple[str, bool]:
    """(metric_for_best_model, greater_is_better)."""
    name = metric or ("macro_f1" if task == "classification" else "eval_reward" if task == "rft" else "eval_loss")
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


def launcher_strategy() -> str | None:
    """deepspeed or fsdp when `accelerate launch --config_file` chose it (its launcher sets these
    variables for every process), else None. Read it before a Trainer exists: Accelerator sets
    the same variables itself once it holds a DeepSpeed or FSDP plugin."""
    for strategy, variable in (("deepspeed", "ACCELERATE_USE_DEEPSPEED"), ("fsdp", "ACCELERATE_USE_FSDP")):
        if os.environ.get(variable, "false").lower() == "true":
            return strategy
    return None


def check_supported(tc) -> None:
    """Refuse, before any weights load, what this machine or this launch cannot do: bf16, Liger
    kernels, DeepSpeed and FSDP without a GPU or their package, and a strategy chosen twice."""
    mixed_precision(tc.bf16)
    on_gpu = torch.cuda.is_available()
    if tc.liger and not on_gpu:
        raise TunelabError("train.liger needs a GPU (Liger kernels are Triton kernels)",
                           fix="set train.liger=false on CPU")
    if tc.liger and importlib.util.find_spec("liger_kernel") is None:
        raise TunelabError("train.liger is on but the liger-kernel package is not installed",
                           fix="pip install liger-kernel, or set train.liger=false")
    strategy = tc.distributed.strategy
    chosen = launcher_strategy()
    if chosen and strategy != "auto":
        raise TunelabError(f"the accelerate config this was launched with already chooses {chosen}, and "
                           f"train.distributed.strategy={strategy} would override it",
                           fix="set train.distributed.strategy=auto to follow the accelerate config, or launch "
                               "with torchrun / a plain multi-process accelerate config")
    if strategy == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        raise TunelabError("train.distributed.strategy is deepspeed but the deepspeed package is not installed",
                           fix="pip install deepspeed (on the GPU machines), or set train.distributed.strategy=auto")
    if strategy == "fsdp":
        fsdp_config(tc.distributed.fsdp, tc.distributed.offload, tc.gradient_checkpointing)  # raises on bad options
    sharded = chosen or strategy
    if sharded in ("deepspeed", "fsdp") and not on_gpu:
        # accelerate shards only on accelerators: on CPU it would quietly run plain DDP instead
        raise TunelabError(f"{'DeepSpeed' if sharded == 'deepspeed' else 'FSDP'} needs GPUs, and this machine has none",
                           fix="on CPU, train with plain DDP over gloo: train.distributed.strategy=auto, launched "
                               "with torchrun --nproc_per_node N -m tunelab.cli train CONFIG")


def deepspeed_config(zero_stage: int, offload: bool) -> dict[str, Any]:
    """A DeepSpeed config whose "auto" values transformers fills from the training arguments
    (batch size, accumulation, clipping, bf16, learning rate), so the two never disagree."""
    device = {"device": "cpu", "pin_memory": True} if offload else {"device": "none"}
    zero: dict[str, Any] = {"stage": zero_stage, "offload_optimizer": device, "overlap_comm": True,
                            "contiguous_gradients": True}
    if zero_stage == 3:
        # full weights gathered on save, so the run directory holds a normal save_pretrained model
        zero.update(offload_param=device, stage3_gather_16bit_weights_on_model_save=True)
    config: dict[str, Any] = {"zero_optimization": zero, "train_batch_size": "auto",
                              "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
                              "gradient_clipping": "auto", "bf16": {"enabled": "auto"}}
    if offload:
        # ZeRO-Offload steps the optimizer on the CPU and refuses a torch optimizer there:
        # DeepSpeed's own AdamW (its CPU Adam), with hyper-parameters from the training arguments
        config["optimizer"] = {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto",
                                                           "weight_decay": "auto"}}
    return config


FSDP_OPTIONS = {"full_shard", "shard_grad_op", "auto_wrap", "offload"}


def fsdp_config(options: str, offload: bool, gradient_checkpointing: bool) -> dict[str, Any]:
    """train.distributed.fsdp's option words as transformers' FSDP2 fsdp_config: full_shard
    re-shards weights after forward (ZeRO-3-like), shard_grad_op keeps them (ZeRO-2-like),
    auto_wrap shards each transformer block on its own, offload keeps parameters on the CPU."""
    words = options.split()
    unknown = [w for w in words if w not in FSDP_OPTIONS]
    if unknown or {"full_shard", "shard_grad_op"} <= set(words):
        raise TunelabError(f"train.distributed.fsdp {options!r} is not a valid set of FSDP options",
                           fix="combine one of full_shard / shard_grad_op with auto_wrap and offload, "
                               "e.g. 'full_shard auto_wrap'")
    return {
        "version": 2,
        "reshard_after_forward": "shard_grad_op" not in words,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP" if "auto_wrap" in words else "NO_WRAP",
        "cpu_offload": offload or "offload" in words,
        # FSDP's own activation checkpointing: the Trainer flag would add an all-gather in backward
        "activation_checkpointing": gradient_checkpointing,
    }


def distributed_kwargs(dist, gradient_checkpointing: bool = False) -> dict[str, Any]:
    if dist.strategy == "deepspeed":
        return {"deepspeed": deepspeed_config(dist.zero_stage, dist.offload)}
    if dist.strategy == "fsdp":
        return {"fsdp": True, "fsdp_config": fsdp_config(dist.fsdp, dist.offload, gradient_checkpointing),
                "activation_checkpointing": False}
    return {}


def training_kwargs(tc, *, task: str, checkpoints_dir: Path, has_eval: bool, run_name: str) -> dict[str, Any]:
    """Call check_supported(tc) first, once per run (run.check_hardware does)."""
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
        activation_checkpointing=tc.gradient_checkpointing,  # transformers 5 name of gradient_checkpointing
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
    kwargs.update(distributed_kwargs(tc.distributed, tc.gradient_checkpointing))
    return kwargs


def _report_to(backend: str) -> list[str] | str:
    return {"mlflow": ["mlflow"], "tensorboard": ["tensorboard"], "none": "none"}[backend]
