"""`tunelab train`: one config in, one run directory out (model or adapter, tokenizer, resolved
config, metrics.jsonl, manifest, model card), loadable by transformers, PEFT and vLLM alone.

Everything that can be wrong with the configuration is checked before weights are loaded:
the data, the task, the labels, the method on this hardware, the chat template, and memory.
"""
from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import EarlyStoppingCallback, set_seed
from transformers.trainer_callback import PrinterCallback

from tunelab.config import RunConfig, StageSettings
from tunelab.errors import TunelabError
from tunelab.models import adapters
from tunelab.models.load import (adapter_base, load_model, load_model_config, load_model_skeleton, load_tokenizer,
                                 resolve_model_path)
from tunelab.train import callbacks as cb
from tunelab.train import ewc, replay, rft
from tunelab.train.arguments import check_supported, training_kwargs
from tunelab.train.assistant_spans import (ALL_TOKENS, RENDERED_SPANS, TRL_TRAINING_TEMPLATE, check_conversations,
                                           known_training_template, loss_mask_source)
from tunelab.train.classify import build_classification_trainer, check_class_weights, class_weight_vector
from tunelab.train.data import KIND_TO_TASK, TrainingData, load_training_data, to_dataset
from tunelab.train.dpo import build_dpo_trainer, drop_reference_adapter, needs_chat_template
from tunelab.train.run_dir import save_weights, write_run_files
from tunelab.train.tracking import configure_tracking, tracking_run
from tunelab.train.sft import build_sft_trainer
from tunelab.train.stages import (check_stage_kinds, completed_stages, load_weights, planned_stages,
                                  save_snapshot, snapshot_dir)


@dataclass
class TrainResult:
    run_dir: Path
    task: str
    metrics: dict[str, Any] = field(default_factory=dict)
    stages: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    main_process: bool = True  # False on the other processes of a multi-process launch


def run(cfg: RunConfig, callbacks: tuple = ()) -> TrainResult:
    """callbacks: extra TrainerCallbacks for every stage (`tunelab tune` reports and prunes through one)."""
    if cfg.train.provider == "openai":  # trained by a fine-tuning API; the run directory records the job
        from tunelab.train import remote
        return remote.run(cfg)
    tc = cfg.train
    started = time.time()
    datasets.disable_progress_bars()  # rich bars show progress; per-map tqdm bars only add noise
    run_dir = Path(tc.output_dir)
    stages = planned_stages(tc)
    data = load_training_data(stages[0].data, tc.eval_data, tc.mix, tc.seed).sample(tc.max_train_examples, tc.seed)
    stage_data = [data] + [load_training_data(s.data, None, None, tc.seed).sample(tc.max_train_examples, tc.seed)
                           for s in stages[1:]]  # every stage's data checked before any weights load
    check_stage_kinds([d.kind for d in stage_data], [s.name for s in stages])
    stage_data = [replay.mix_in(d, tc.replay, tc.seed) for d in stage_data]  # train.replay, if set
    data = stage_data[0]
    tasks = [resolve_task(s.task or tc.task, d.kind) for s, d in zip(stages, stage_data)]
    task = tasks[-1]  # the run's task: what its final weights were trained for (sft then rft: rft)
    reward = rft.prepare_reward(tc, run_dir, [d for t, d in zip(tasks, stage_data) if t == "rft"])
    every = TrainingData(data.kind, [r for d in stage_data for r in d.train], [r for d in stage_data for r in d.eval],
                         {f: h for d in stage_data for f, h in d.sources.items()}, data.prefixes)
    labels = resolve_labels(tc.labels, every) if task == "classification" else None
    if labels:
        check_class_weights(tc.class_weights, labels)
    check_hardware(tc)
    ewc.check(tc, task, labels)  # EWC without general data is refused here, before any weights load
    tokenizer, loss_mask = prepare_tokenizer(load_tokenizer(tc.model), "sft" if "sft" in tasks else task,
                                             tc.assistant_only_loss,
                                             chat=task != "dpo" or needs_chat_template(every.train + every.eval))
    if loss_mask == RENDERED_SPANS:  # every conversation's assistant spans found, or refused, before weights load
        for stage, stage_records in ((s, d) for s, d, t in zip(stages, stage_data, tasks) if t == "sft"):
            check_conversations(tokenizer, stage_records.train, where=stage.data or "train.mix")
            check_conversations(tokenizer, stage_records.eval, where=tc.eval_data or stage.data or "train.mix",
                                split="validation")
    # LoRA targets and blocks to train are checked on the structure alone (meta device, no weights)
    adapters.check_method(load_model_skeleton(tc.model, task, labels=labels), tc.method, task=task, lora=tc.lora,
                          freeze_last_n=tc.freeze_last_n)
    preflight_memory(tc, task, labels)
    set_seed(tc.seed)
    model = load_model(tc.model, task, labels=labels, quantization_config=quantization(tc.method))
    model = adapters.apply_method(model, tc.method, task=task, lora=tc.lora, freeze_last_n=tc.freeze_last_n)
    trainable = adapters.count_trainable(model)
    anchor = (ewc.estimate(model, ewc.load_general(tc.ewc.data, task, labels, tc.ewc.fisher_examples), task,
                           tokenizer, labels, strength=tc.ewc.strength, max_length=tc.max_length)
              if tc.regularization == "ewc" else None)
    configure_tracking(tc.tracking, run_dir)

    # --resume: stages whose snapshot is complete are skipped; the next starts from the last of them
    done = completed_stages(run_dir, stages) if tc.resume and len(stages) > 1 else []
    if done:
        load_weights(model, snapshot_dir(run_dir, len(done) - 1, stages[len(done) - 1]))
    results, interrupted, trainer = list(done), False, None
    for index, (stage, data) in enumerate(zip(stages, stage_data)):
        if index < len(done):
            continue
        trainer = build_trainer(model, tokenizer, data, tasks[index], labels, tc, stage, run_dir, index, len(stages),
                                reward=reward)
        if anchor is not None:
            ewc.attach(trainer, anchor, tasks[index])
        for callback in callbacks:
            trainer.add_callback(callback)
        # the interrupted stage continues from its last complete checkpoint; a later stage that
        # never reached one starts afresh from the previous stage's snapshot
        resume = tc.resume and index == len(done) and (
            index == 0 or cb.last_complete_checkpoint(Path(trainer.args.output_dir)) is not None)
        outcome = train_stage(trainer, resume)
        if tasks[index] in ("dpo", "rft"):
            drop_reference_adapter(model)  # TRL's frozen copy of the adapter is not part of the run
        results.append({"stage": stage.name, "data": stage.data, **outcome})
        interrupted = outcome["interrupted"]
        if interrupted:
            break
        if len(stages) > 1:
            save_snapshot(trainer, snapshot_dir(run_dir, index, stage), results[-1])
    if trainer is None:  # every stage had finished before: only the run's own files remain to write
        trainer = build_trainer(model, tokenizer, data, task, labels, tc, stages[-1], run_dir, len(stages) - 1,
                                len(stages), reward=reward)
        if task in ("dpo", "rft"):
            drop_reference_adapter(model)

    # an adapter trained on weights merged from an adapter run is saved merged (run_dir.save_weights)
    save_weights(trainer, run_dir, merge_adapter=adapter_base(resolve_model_path(tc.model)) is not None)
    if trainer.is_world_process_zero():
        (run_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle; config.yaml records the same
        final = results[-1]["eval"]
        write_run_files(run_dir, config=cfg.model_dump(mode="json"), base_model=tc.model,
                        resolved_base=resolve_model_path(adapter_base(resolve_model_path(tc.model)) or tc.model),
                        task=task, method=tc.method, data_sources=every.sources, seed=tc.seed,
                        wall_time_s=time.time() - started, trainable=trainable, final_metrics=final,
                        stages=results, prefixes=every.prefixes, labels=labels, interrupted=interrupted,
                        loss_mask=loss_mask)
    # under accelerate launch / torchrun no process returns (and exits) before process 0 has
    # finished the run directory, so whatever runs next on any of them finds it complete
    trainer.accelerator.wait_for_everyone()
    if reward is not None:
        reward.close()  # python graders' worker processes
    return TrainResult(run_dir, task, results[-1]["eval"], results, interrupted,
                       main_process=trainer.is_world_process_zero())


def resolve_task(task: str, kind: str) -> str:
    expected = KIND_TO_TASK[kind]
    if task == "auto":
        return expected
    if task != expected:
        raise TunelabError(f"train.task is {task} but the data is {kind} records",
                           fix=f"set train.task={expected} (or auto), or give {task} data")
    return task


def resolve_labels(declared: list[str] | None, data: TrainingData) -> list[str]:
    found = sorted({r["label"] for r in data.train + data.eval})
    if declared is None:
        if len(found) < 2:
            raise TunelabError(f"classification needs at least two labels; the data has {found}",
                               fix="check the label column given to `tunelab data prepare`")
        return found
    unknown = sorted(set(found) - set(declared))
    if unknown:
        raise TunelabError(f"the data has labels {unknown} that train.labels ({declared}) lacks",
                           fix="add them to train.labels or remove those records")
    return list(declared)


def check_hardware(tc) -> None:
    """What this machine cannot run fails here, before any weights load."""
    if tc.method == "qlora" and not torch.cuda.is_available():
        raise TunelabError("method qlora needs a CUDA GPU (4-bit weights through bitsandbytes)",
                           fix="use method lora on this machine")
    if tc.method == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
        raise TunelabError("method qlora needs the bitsandbytes package",
                           fix="pip install bitsandbytes, or use method lora")
    check_supported(tc)


def quantization(method: str):
    if method != "qlora":
        return None
    from transformers import BitsAndBytesConfig
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def preflight_memory(tc, task: str, labels: list[str] | None) -> None:
    """Refuse, with a suggestion that fits, a run that cannot fit in memory: before loading weights."""
    from tunelab.models import memory
    on_gpu = torch.cuda.is_available()
    bf16 = tc.bf16 is True or (tc.bf16 == "auto" and on_gpu and torch.cuda.is_bf16_supported())
    estimate = memory.estimate_training_memory(
        load_model_config(tc.model), task=task, method=tc.method, batch_size=tc.batch_size,
        max_length=tc.max_length, weight_bytes=2 if bf16 else 4,
        # prepare_model_for_kbit_training turns gradient checkpointing on for QLoRA
        gradient_checkpointing=tc.gradient_checkpointing or tc.method == "qlora",
        lora_r=tc.lora.r, lora_targets=tc.lora.target_modules, lora_dropout=tc.lora.dropout,
        freeze_last_n=tc.freeze_last_n, num_labels=len(labels) if labels else 2,
        flash_attention=on_gpu)  # sdpa on GPU keeps no full score matrix; CPU attention does
    available, device = memory.available_memory()
    if tc.memory_limit_gb is not None:
        available = int(tc.memory_limit_gb * memory.GB)
        device = f"the configured limit (train.memory_limit_gb={tc.memory_limit_gb})"
    memory.preflight(estimate, available, device, method=tc.method, batch_size=tc.batch_size,
                     gradient_checkpointing=tc.gradient_checkpointing, on_gpu=on_gpu)


def prepare_tokenizer(tokenizer, task: str, assistant_only_loss: bool, chat: bool = True):
    """(tokenizer, how an SFT loss mask is found: assistant_spans.ALL_TOKENS, ...; None for other
    tasks). chat: the data is rendered with the chat template (SFT; DPO with conversational prompts)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # batches need padding; masked out of the loss
    if task in ("sft", "dpo", "rft") and chat and not getattr(tokenizer, "chat_template", None):
        raise TunelabError("the tokenizer has no chat template, so chat data cannot be rendered",
                           fix="use a tokenizer with one (an instruct model's), or set tokenizer.chat_template")
    if task != "sft":
        return tokenizer, None
    if not assistant_only_loss:
        return tokenizer, ALL_TOKENS
    source = loss_mask_source(tokenizer)
    if source == TRL_TRAINING_TEMPLATE:  # TRL ships marked copies of popular templates (Qwen, Llama, Gemma, ...)
        tokenizer.chat_template = known_training_template(tokenizer)
    return tokenizer, source


def build_trainer(model, tokenizer, data: TrainingData, task: str, labels, tc, stage: StageSettings, run_dir: Path,
                  index: int, stage_count: int, reward=None):
    has_eval = bool(data.eval)
    checkpoints = run_dir / "checkpoints" / (stage.name if stage_count > 1 else "")
    common = training_kwargs(tc, task=task, checkpoints_dir=checkpoints, has_eval=has_eval,
                             run_name=f"{run_dir.name}-{stage.name}" if stage_count > 1 else run_dir.name)
    if stage.epochs:
        common["num_train_epochs"] = stage.epochs
    if stage.lr:
        common["learning_rate"] = stage.lr
    callbacks = [cb.MetricsLog(run_dir / "metrics.jsonl", stage.name if stage_count > 1 else None),
                 cb.CompleteCheckpoints(), cb.InterruptToCheckpoint(),
                 cb.RichProgress(stage.name if stage_count > 1 else f"training ({task})")]
    if has_eval and tc.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=tc.early_stopping_patience))
    train_ds = to_dataset(data.train, data.kind, labels)
    eval_ds = to_dataset(data.eval, data.kind, labels) if has_eval else None
    if task == "classification":
        weights = class_weight_vector(tc.class_weights, labels, list(train_ds["label"]))
        trainer = build_classification_trainer(model, tokenizer, train_ds, eval_ds, common=common,
                                               max_length=tc.max_length, class_weights=weights, callbacks=callbacks)
    elif task == "dpo":
        trainer = build_dpo_trainer(model, tokenizer, train_ds, eval_ds, common=common, max_length=tc.max_length,
                                    beta=tc.dpo.beta, loss_type=tc.dpo.loss_type, callbacks=callbacks)
    elif task == "rft":
        trainer = rft.build_rft_trainer(model, tokenizer, train_ds, eval_ds, common=common, reward=reward,
                                        callbacks=callbacks, **rft.grpo_kwargs(tc.rft))
    else:
        trainer = build_sft_trainer(model, tokenizer, train_ds, eval_ds, common=common, max_length=tc.max_length,
                                    assistant_only_loss=tc.assistant_only_loss, packing=tc.packing,
                                    callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # RichProgress shows progress; metrics.jsonl keeps the logs
    return trainer


def train_stage(trainer, resume: bool) -> dict[str, Any]:
    checkpoint = None
    if resume:
        checkpoint = cb.last_complete_checkpoint(Path(trainer.args.output_dir))
        if checkpoint is None:
            raise TunelabError("--resume found no complete checkpoint", where=trainer.args.output_dir,
                               fix="run without --resume to start afresh")
    with tracking_run(trainer):  # the final evaluation is logged in the same MLflow run as the training
        output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        interrupt = next(c for c in trainer.callback_handler.callbacks if isinstance(c, cb.InterruptToCheckpoint))
        evaluation = trainer.evaluate() if trainer.eval_dataset is not None and not interrupt.interrupted else {}
    return {"train_loss": output.training_loss, "steps": trainer.state.global_step,
            "best_checkpoint": trainer.state.best_model_checkpoint, "eval": evaluation,
            "interrupted": interrupt.interrupted}
