"""Reinforcement fine-tuning (train.task rft) with TRL's GRPOTrainer: for each prompt the model
samples a group of answers, the grader (tunelab.graders, OpenAI's grader JSON) scores each one,
and GRPO moves the model towards the answers that scored above their group's mean, with a KL
penalty (beta) to the model the stage started from.

The grader is the reward function TRL calls; everything else (sampling, advantages, clipping, the
KL term, logging reward mean and spread, KL and completion lengths) is TRL's. The reference for
the KL term is the policy as this stage starts:
- LoRA / DoRA: TRL copies the trainable adapter into a frozen adapter named "ref" (dropped after
  the stage, like DPO's);
- full / freeze: TRL loads the reference from the model's `config._name_or_path`, which names the
  base model when the policy was merged from an adapter run or trained by an earlier stage, so the
  starting weights are saved first (checkpoints/.../reference) and that name points at them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from trl import GRPOConfig, GRPOTrainer

from tunelab.errors import TunelabError
from tunelab.files import write_json
from tunelab.graders import GraderRuntime, grade, load_grader
from tunelab.train.dpo import is_peft

GRADER_ERRORS = "grader_errors.jsonl"
GRADER_FILE = "grader.json"
MAX_ERROR_ROWS = 1000  # enough to see every kind of failure; the count per step is in metrics.jsonl


class GraderReward:
    """The grader as a TRL reward function: one score per sampled answer, graded against its
    prompt record (the dataset's "item" column, the record as JSON text).

    A failure of the grader itself (a python grader that raises or hangs, a scoring model that is
    down, an item without the field a template names) is a zero reward whose reason goes to
    grader_errors.jsonl, or, with on_error "fail", stops the run with that reason. An answer that
    is merely wrong, or not the JSON the grader reads, is an ordinary zero."""

    def __init__(self, grader, runtime: GraderRuntime, *, on_error: str, errors_path: Path):
        self.grader = grader
        self.runtime = runtime
        self.on_error = on_error
        self.errors_path = Path(errors_path)
        self.failures = 0
        self.__name__ = grader.name  # TRL logs rewards/<name>/mean and /std

    def __call__(self, prompts, completions, item, trainer_state=None, log_metric=None, **kwargs) -> list[float]:
        scores, failed = [], 0
        for completion, record in zip(completions, item):
            answer = completion[-1]["content"] if isinstance(completion, list) else completion
            result = grade(self.grader, answer, json.loads(record), runtime=self.runtime)
            if result.grader_failed:
                failed += 1
                self._record(result, answer, record, getattr(trainer_state, "global_step", None))
            scores.append(result.score)
        if log_metric is not None:
            log_metric("grader_failures", failed / max(len(scores), 1))
        return scores

    def _record(self, result, answer: str, record: str, step: int | None) -> None:
        self.failures += 1
        if self.on_error == "fail":
            raise TunelabError(f"grader '{self.grader.name}' failed at step {step} ({result.reason})",
                               where=_preview(record),
                               fix="check it with `tunelab grade GRADER --data ... --predictions ...`, or set "
                                   "train.rft.on_grader_error=zero to score such answers 0 and go on")
        if self.failures <= MAX_ERROR_ROWS:
            self.errors_path.parent.mkdir(parents=True, exist_ok=True)
            with self.errors_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, "grader": self.grader.name, "error": result.error,
                                    "reason": result.reason, "answer": answer, "item": json.loads(record)},
                                   ensure_ascii=False) + "\n")

    def keep_with_run(self) -> None:
        """grader.json in the run directory, so `tunelab eval` grades with the grader that trained it."""
        if int(os.environ.get("RANK", "0")) == 0:
            write_json(self.errors_path.parent / GRADER_FILE, self.grader.spec)

    def close(self) -> None:
        self.runtime.close()


def grader_reward(grader_file: str | None, settings, run_dir: Path) -> GraderReward:
    """The reward of an rft run, checked before any weights load: the grader file is valid, and a
    python grader runs only where the configuration enables it."""
    if not grader_file:
        raise TunelabError("the training records end with the user's turn, which makes them prompts for "
                           "reinforcement fine-tuning (rft), and rft needs a grader: train.grader is not set",
                           fix="for sft, end each conversation with the assistant's reply; for rft, pass "
                               "train.grader=GRADER.json (OpenAI's grader JSON, see docs/rft.md)")
    grader = load_grader(grader_file)
    runtime = GraderRuntime(allow_python=settings.allow_python_graders,
                            python_timeout_s=settings.python_grader_timeout_s, base_url=settings.score_model_base_url)
    runtime.check_allowed(grader)
    rank = int(os.environ.get("RANK", "0"))
    name = GRADER_ERRORS if rank == 0 else GRADER_ERRORS.replace(".jsonl", f".rank{rank}.jsonl")
    return GraderReward(grader, runtime, on_error=settings.on_grader_error, errors_path=Path(run_dir) / name)


def check_group_size(settings, *, batch_size: int, grad_accum: int, eval_batch_size: int, has_eval: bool) -> None:
    """GRPO samples whole groups: the answers of one optimizer step (batch_size x grad_accum on every
    process) and of one evaluation batch must be whole multiples of the group size."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    group = settings.num_generations
    if (batch_size * grad_accum * world) % group:
        raise TunelabError(f"train.batch_size x train.grad_accum x processes ({batch_size} x {grad_accum} x {world}) "
                           f"is not a multiple of train.rft.num_generations ({group})",
                           fix=f"make it one, e.g. train.batch_size={group * max(1, batch_size // group)}: each "
                               "batch holds whole groups of answers to the same prompt")
    if has_eval and (eval_batch_size * world) % group:
        raise TunelabError(f"train.eval_batch_size x processes ({eval_batch_size} x {world}) is not a multiple of "
                           f"train.rft.num_generations ({group})",
                           fix=f"set train.eval_batch_size to a multiple of {group}")


def grpo_kwargs(settings) -> dict[str, Any]:
    """train.rft as GRPOConfig keyword arguments."""
    return {"num_generations": settings.num_generations, "beta": settings.beta, "epsilon": settings.epsilon,
            "max_completion_length": settings.max_completion_length, "temperature": settings.temperature,
            "loss_type": settings.loss_type, "scale_rewards": settings.scale_rewards,
            "num_iterations": settings.num_iterations}


def build_rft_trainer(model, tokenizer, train_dataset, eval_dataset, *, common: dict, reward: GraderReward,
                      callbacks: list, **grpo: Any):
    # GRPO counts its own tokens (num_tokens); the Trainer's counter looks for input_ids in
    # batches of prompts that have none, and warns on every step
    args = GRPOConfig(**{**common, "include_num_input_tokens_seen": "no"}, **grpo, log_completions=False)
    reward.keep_with_run()
    named = model.config._name_or_path
    if grpo["beta"] and not is_peft(model):
        model.config._name_or_path = save_reference(model, tokenizer, Path(common["output_dir"]) / "reference", args)
    try:
        return GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=train_dataset,
                           eval_dataset=eval_dataset, processing_class=tokenizer, callbacks=callbacks)
    finally:
        model.config._name_or_path = named


def save_reference(model, tokenizer, directory: Path, args) -> str:
    """The weights this stage starts from, where TRL loads its reference model from."""
    state = args.distributed_state
    if state.is_main_process:
        model.save_pretrained(str(directory))
        tokenizer.save_pretrained(str(directory))
    state.wait_for_everyone()
    return str(directory)


def _preview(record: str, limit: int = 120) -> str:
    return "item " + (record if len(record) <= limit else record[:limit] + "…")


def prepare_reward(tc, run_dir: Path, rft_stage_data: list) -> GraderReward | None:
    """The run's reward when any stage is rft (None otherwise), with the grader and the group size
    checked against each rft stage's data before any weights load."""
    if not rft_stage_data:
        return None
    reward = grader_reward(tc.grader, tc.rft, run_dir)
    for data in rft_stage_data:
        check_group_size(tc.rft, batch_size=tc.batch_size, grad_accum=tc.grad_accum,
                         eval_batch_size=tc.eval_batch_size or tc.batch_size, has_eval=bool(data.eval))
    return reward
