"""OpenAI's fine-tuning `method` as tunelab's train settings, for the jobs server's config
generation (tunelab.jobs.spec): what each method trains (task, record kind) and the train: keys
only that method sets. The common hyperparameters (n_epochs, batch_size, learning_rate_multiplier
and their "auto") stay spec.py's; this module adds the method-specific part, reinforcement's
above all:

method {type: reinforcement, reinforcement: {grader, hyperparameters}} -> train.task rft, its
prompts file (messages ending with the user's turn, extra fields for the grader), the grader
written beside the job as grader.json (train.grader), and

| OpenAI hyperparameter | tunelab                                                                |
|---|---|
| n_epochs, learning_rate_multiplier | as for supervised (train.epochs; train.lr = the default rate of rft x multiplier) |
| batch_size (prompts per step) | train.batch_size = batch_size x train.rft.num_generations (TRL counts answers) |
| compute_multiplier (auto: 1) | train.rft.num_generations = round(8 x multiplier), at least 2 (answers sampled per prompt) |
| eval_interval (auto: once an epoch) | train.eval_steps |
| eval_samples | auto only (each evaluation prompt gets num_generations answers) |
| reasoning_effort | auto or default only (no reasoning budget to set) |

`grader` is validated when the job is created (400 naming method.reinforcement.grader); a python
grader is refused unless the server allows python graders.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError

METHOD_TASK = {"supervised": "sft", "dpo": "dpo", "reinforcement": "rft"}
METHOD_KIND = {"supervised": "generative", "dpo": "preference", "reinforcement": "prompt"}
DEFAULT_GROUP_SIZE = 8
REINFORCEMENT_KEYS = ("n_epochs", "batch_size", "learning_rate_multiplier", "compute_multiplier", "eval_interval",
                      "eval_samples", "reasoning_effort")
PARAM = "method.reinforcement"


class MethodError(Exception):
    """A method this server cannot take: a 400 with `param` naming the field (the attributes of
    spec.JobRequestError)."""

    def __init__(self, message: str, param: str, code: str = "invalid_reinforcement_method"):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def reinforcement_method(section: dict[str, Any] | None, *, allow_python: bool = False) -> dict[str, Any]:
    """The requested reinforcement method as OpenAI reports it (grader as given, hyperparameters
    as asked, "auto" where none), once the grader and each hyperparameter are known good."""
    if not isinstance(section, dict) or "grader" not in section:
        raise MethodError("method reinforcement needs reinforcement.grader (a grader JSON object)", f"{PARAM}.grader")
    unknown = sorted(set(section) - {"grader", "hyperparameters"})
    if unknown:
        raise MethodError(f"unknown field {unknown[0]!r} in method.reinforcement", f"{PARAM}.{unknown[0]}")
    from tunelab.graders import GraderRuntime, load_grader
    try:
        grader = load_grader(section["grader"], where="grader")
        GraderRuntime(allow_python=allow_python).check_allowed(grader)
    except TunelabError as exc:
        raise MethodError(str(exc), f"{PARAM}.grader", code="invalid_grader") from None
    given = section.get("hyperparameters") or {}
    if not isinstance(given, dict):
        raise MethodError("method.reinforcement.hyperparameters must be an object", f"{PARAM}.hyperparameters")
    hyper = {key: "auto" for key in REINFORCEMENT_KEYS} | given
    for key, value in hyper.items():
        _check(key, value)
    return {"type": "reinforcement", "reinforcement": {"grader": grader.spec, "hyperparameters": hyper}}


def _check(key: str, value: Any) -> None:
    param = f"{PARAM}.hyperparameters.{key}"
    if key not in REINFORCEMENT_KEYS:
        raise MethodError(f"unknown hyperparameter {key!r} of method reinforcement; known: "
                          f"{', '.join(REINFORCEMENT_KEYS)}", param)
    if value == "auto":
        return
    ranges = {"n_epochs": (1, 50, int), "batch_size": (1, 256, int), "learning_rate_multiplier": (0, 10, float),
              "compute_multiplier": (0.25, 8, float), "eval_interval": (1, 1_000_000, int)}
    if key in ranges:
        low, high, kind = ranges[key]
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and (kind is float or
                                                                                     float(value).is_integer())
        if not number or not (low < value <= high if key == "learning_rate_multiplier" else low <= value <= high):
            raise MethodError(f"{key} must be \"auto\" or a {'whole ' if kind is int else ''}number in "
                              f"{'(' if key == 'learning_rate_multiplier' else '['}{low:g}, {high:g}] (got {value!r})",
                              param)
    elif key == "reasoning_effort" and value != "default":
        raise MethodError("reasoning_effort must be \"auto\" or \"default\" here: the models this server trains "
                          "have no reasoning budget to set", param)
    elif key == "eval_samples":
        raise MethodError("eval_samples must be \"auto\" here: each evaluation prompt is answered num_generations "
                          "times, the group size compute_multiplier sets", param)


def group_size(hyper: dict[str, Any]) -> int:
    multiplier = hyper.get("compute_multiplier", "auto")
    return max(2, round(DEFAULT_GROUP_SIZE * (1.0 if multiplier == "auto" else float(multiplier))))


def train_section_for_method(method: dict[str, Any], *, job_dir: Path, allow_python: bool = False) -> dict[str, Any]:
    """The train: keys of `method` (its hyperparameters resolved: no "auto" left in n_epochs and
    batch_size) beyond the common ones spec.job_config sets (model, data, epochs, batch_size, lr
    ...): merge them over that section. Writes a reinforcement job's grader to JOB_DIR/grader.json."""
    kind = method["type"]
    hyper = method[kind].get("hyperparameters") or {}
    if kind == "supervised":
        return {"task": "sft"}
    if kind == "dpo":
        return {"task": "dpo", "dpo": {"beta": hyper["beta"]}}
    if kind != "reinforcement":
        raise MethodError(f"method type '{kind}' is not supported; use supervised, dpo or reinforcement",
                          "method.type", code="unsupported_method")
    grader_path = Path(job_dir) / "grader.json"
    grader_path.parent.mkdir(parents=True, exist_ok=True)
    grader_path.write_text(json.dumps(method[kind]["grader"], indent=2), encoding="utf-8")
    generations = group_size(hyper)
    section: dict[str, Any] = {"task": "rft", "grader": str(grader_path),
                               "batch_size": int(hyper["batch_size"]) * generations,
                               "rft": {"num_generations": generations, "allow_python_graders": allow_python}}
    if hyper.get("eval_interval") not in (None, "auto"):
        section["eval_steps"] = int(hyper["eval_interval"])
    return section
