"""What `train.provider: openai` sends: tunelab's canonical records as OpenAI's training-file lines,
and the job's `method` with hyperparameters mapped from the train config. Pure functions (the
client is tunelab.train.remote).

Records (one JSON object a line, `meta` left out):
- chat (sft, method supervised): {"messages": [{"role", "content", "weight"?}, ...]}
- preference (dpo, method dpo): {"input": {"messages": PROMPT}, "preferred_output": [{"role":
  "assistant", "content": CHOSEN}], "non_preferred_output": [{... REJECTED}]} (a string prompt
  becomes one user message)
- prompts (rft, method reinforcement): {"messages": [... ending with the user's turn], and every
  other field the grader reads as item.*}

Hyperparameters:
- n_epochs = train.epochs (whole epochs only)
- batch_size = train.batch_size x train.grad_accum (examples per optimizer step)
- learning_rate_multiplier = train.lr / tunelab's default rate for the task and train.method
  (2e-4 for LoRA SFT/DPO, 2e-5 for full SFT, ...), so a tunelab jobs server training with the same
  method trains at exactly train.lr; "auto" when train.lr is unset (the provider's default)
- dpo: beta = train.dpo.beta
- reinforcement: grader = the train.grader JSON; batch_size = train.batch_size x train.grad_accum
  / train.rft.num_generations (prompts per step: TRL's batch counts sampled answers);
  compute_multiplier = train.rft.num_generations / 8 (tunelab's default group size);
  eval_interval = train.eval_steps when set
Everything else in train: (max_length, scheduler, LoRA rank, ...) is the provider's to choose.
"""
from __future__ import annotations

import math
import re
from typing import Any

from tunelab.errors import TunelabError

KIND_METHOD = {"generative": "supervised", "preference": "dpo", "prompt": "reinforcement"}
MESSAGE_KEYS = ("role", "content", "weight", "name")
DEFAULT_GROUP_SIZE = 8


def openai_line(record: dict[str, Any], kind: str) -> dict[str, Any]:
    """One canonical record as a line of OpenAI's training file for `kind`'s method."""
    if kind == "generative":
        return {"messages": [_message(m) for m in record["messages"]]}
    if kind == "preference":
        prompt = record["prompt"]
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [_message(m) for m in prompt]
        return {"input": {"messages": messages},
                "preferred_output": [{"role": "assistant", "content": record["chosen"]}],
                "non_preferred_output": [{"role": "assistant", "content": record["rejected"]}]}
    if kind == "prompt":
        return {**{k: v for k, v in record.items() if k != "meta"},
                "messages": [_message(m) for m in record["messages"]]}
    raise TunelabError(f"provider openai fine-tunes chat, preference and prompt (rft) data; this is {kind} data",
                       fix="train classification runs here (train.provider=local)")


def _message(message: dict[str, Any]) -> dict[str, Any]:
    return {k: message[k] for k in MESSAGE_KEYS if k in message}


def check_remote_config(tc) -> None:
    """Settings a fine-tuning API cannot take, refused before anything is uploaded."""
    refused = [(bool(tc.stages), "train.stages (one job trains one dataset)"),
               (bool(tc.mix), "train.mix (one job trains one dataset)"),
               (tc.replay is not None, "train.replay"), (tc.regularization != "none", "train.regularization")]
    for present, what in refused:
        if present:
            raise TunelabError(f"provider openai does not take {what}",
                               fix="train it here (train.provider=local), or drop the setting")
    if not tc.data:
        raise TunelabError("provider openai needs train.data", fix="set --data PREPARED_DIR")
    if tc.epochs != int(tc.epochs):
        raise TunelabError(f"provider openai trains whole epochs (train.epochs is {tc.epochs:g})",
                           fix=f"set train.epochs={math.ceil(tc.epochs)}")


def learning_rate_multiplier(tc, task: str) -> float | str:
    if tc.lr is None:
        return "auto"
    from tunelab.train.arguments import default_lr
    return tc.lr / default_lr(task, tc.method)


def job_method(tc, kind: str, grader: dict[str, Any] | None = None) -> dict[str, Any]:
    """OpenAI's `method` for a run of this record kind (see the module's mapping)."""
    method = KIND_METHOD.get(kind)
    if method is None:
        openai_line({}, kind)  # the sentence for a kind no method trains
    task = {"supervised": "sft", "dpo": "dpo", "reinforcement": "rft"}[method]
    hyper: dict[str, Any] = {"n_epochs": int(tc.epochs), "batch_size": tc.batch_size * tc.grad_accum,
                             "learning_rate_multiplier": learning_rate_multiplier(tc, task)}
    if method == "dpo":
        hyper["beta"] = tc.dpo.beta
    if method == "reinforcement":
        if grader is None:
            raise TunelabError("reinforcement fine-tuning needs a grader", fix="set train.grader=GRADER.json")
        # TRL counts sampled answers per step, OpenAI prompts: num_generations answers each
        hyper["batch_size"] = max(1, tc.batch_size * tc.grad_accum // tc.rft.num_generations)
        hyper["compute_multiplier"] = tc.rft.num_generations / DEFAULT_GROUP_SIZE
        if tc.eval_steps:
            hyper["eval_interval"] = tc.eval_steps
        return {"type": method, method: {"grader": grader, "hyperparameters": hyper}}
    return {"type": method, method: {"hyperparameters": hyper}}


def job_suffix(tc, run_name: str) -> str:
    """The fine-tuned model's suffix: train.remote.suffix, else the run directory's name, as
    OpenAI allows it (letters, digits, '.', '_', '-'; at most 64 characters)."""
    suffix = tc.remote.suffix or re.sub(r"[^A-Za-z0-9._-]+", "-", run_name).strip("-")
    return suffix[:64] or "tunelab"

