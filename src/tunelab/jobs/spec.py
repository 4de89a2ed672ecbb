"""From OpenAI's job request to tunelab's configuration: which base a `model` names, what each
"auto" hyperparameter resolves to, the fine-tuned model's name, and the config.yaml a job's
`tunelab train` and `tunelab eval` read (docs/jobs.md has the table)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tunelab.config import JobsConfig, apply_override, validate_config
from tunelab.errors import TunelabError
# METHOD_TASK / METHOD_KIND: which tunelab task trains each OpenAI method, the record kind its file holds
from tunelab.jobs.methods import METHOD_KIND, METHOD_TASK, MethodError, reinforcement_method, train_section_for_method

# "auto", as resolved once the training file's size is known (OpenAI's published rule for epochs)
AUTO_EPOCHS, MIN_TARGET_EXAMPLES, MAX_TARGET_EXAMPLES, MAX_AUTO_EPOCHS = 3, 100, 25_000, 25
AUTO_BATCH_SHARE, MAX_AUTO_BATCH = 0.002, 256
AUTO_LR_MULTIPLIER, AUTO_BETA = 1.0, 0.1


class JobRequestError(Exception):
    """A create request this server cannot take: a 400 with `param` naming the field."""

    def __init__(self, message: str, param: str | None, code: str = "invalid_request"):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def requested_method(request) -> dict[str, Any]:
    """The job's `method` as OpenAI reports it, hyperparameters as asked ("auto" or values);
    the deprecated top-level `hyperparameters` stand for the supervised method's."""
    method = request.method
    kind = method.type if method is not None else "supervised"
    if kind not in METHOD_TASK:
        raise JobRequestError(f"method type '{kind}' is not supported by this server; use supervised, dpo or "
                              "reinforcement", "method.type", code="unsupported_method")
    if kind == "reinforcement":  # grader and hyperparameters checked by tunelab.jobs.methods
        try:
            return reinforcement_method(method.reinforcement)
        except MethodError as exc:
            raise JobRequestError(exc.message, exc.param, exc.code) from None
    section = getattr(method, kind, None) if method is not None else None
    hyper = section.hyperparameters if section is not None and section.hyperparameters is not None else None
    if hyper is None and kind == "supervised" and request.hyperparameters is not None:
        hyper = request.hyperparameters
    from tunelab.jobs.schemas import DpoHyperparameters, SupervisedHyperparameters
    hyper = hyper or (DpoHyperparameters() if kind == "dpo" else SupervisedHyperparameters())
    return {"type": kind, kind: {"hyperparameters": hyper.model_dump()}}


def resolve_auto(method: dict[str, Any], examples: int) -> dict[str, Any]:
    """The method with every "auto" replaced by its value for `examples` training examples:
    n_epochs 3, raised so at least 100 examples are seen (at most 25 epochs) and lowered so at
    most 25,000 are; batch_size 0.2% of the examples as a power of two in 1-256;
    learning_rate_multiplier 1 (tunelab's default rate for the training method); beta 0.1."""
    kind = method["type"]
    hyper = dict(method[kind]["hyperparameters"])
    if hyper.get("n_epochs") == "auto":
        epochs = AUTO_EPOCHS
        if examples * epochs < MIN_TARGET_EXAMPLES:
            epochs = min(MAX_AUTO_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / examples))
        elif examples * epochs > MAX_TARGET_EXAMPLES:
            epochs = max(1, MAX_TARGET_EXAMPLES // examples)
        hyper["n_epochs"] = epochs
    if hyper.get("batch_size") == "auto":
        wanted = max(1.0, examples * AUTO_BATCH_SHARE)
        hyper["batch_size"] = min(MAX_AUTO_BATCH, 2 ** round(math.log2(wanted)))
    if hyper.get("learning_rate_multiplier") == "auto":
        hyper["learning_rate_multiplier"] = AUTO_LR_MULTIPLIER
    if hyper.get("beta") == "auto":
        hyper["beta"] = AUTO_BETA
    return {"type": kind, kind: {**method[kind], "hyperparameters": hyper}}  # a reinforcement grader stays


def fine_tuned_name(base_name: str, suffix: str | None, job_id: str) -> str:
    """OpenAI's `ft:BASE:SUFFIX:JOBID` (SUFFIX empty without one)."""
    return f"ft:{base_name}:{suffix or ''}:{job_id}"


def base_model_name(name: str) -> str:
    """A base's name as it goes into ft: names (no ':'; a path's last part)."""
    return Path(name.rstrip("/")).name.replace(":", "-") or "model"


def job_config(*, cfg: JobsConfig, method: dict[str, Any], base: str, prepared: Path, run_dir: Path,
               seed: int, examples: int, resume: bool) -> dict[str, Any]:
    """The RunConfig (as a dict, checked whole) of one job: its train: section from the method's
    resolved hyperparameters, checkpoints `jobs.checkpoints_per_epoch` times an epoch, metrics
    every step, no tracker, no early stopping; its eval: section kept cheap (no perturbed
    re-runs, no latency sweep); then jobs.overrides."""
    from tunelab.train.arguments import default_lr

    kind = method["type"]
    hyper = method[kind]["hyperparameters"]
    task = METHOD_TASK[kind]
    steps_per_epoch = max(1, math.ceil(examples / hyper["batch_size"]))
    train = {"model": base, "data": str(prepared), "task": task, "method": cfg.method,
             "output_dir": str(run_dir), "epochs": hyper["n_epochs"], "batch_size": hyper["batch_size"],
             "lr": default_lr(task, cfg.method) * hyper["learning_rate_multiplier"], "seed": seed,
             "save_steps": max(1, steps_per_epoch // cfg.checkpoints_per_epoch),
             "keep_checkpoints": cfg.keep_checkpoints, "logging_steps": 1, "early_stopping_patience": None,
             "tracking": {"backend": "none"}, "resume": resume}
    train.update(train_section_for_method(method, job_dir=Path(run_dir).parent))  # dpo's beta, rft's grader ...
    raw = {"train": train,
           "eval": {"baselines": ["base"], "resamples": 200, "robustness": {"perturbations": []},
                    "latency": {"batch_sizes": [1], "requests": 4}}}
    for item in cfg.overrides:
        apply_override(raw, item)
    validate_config(raw, "the job's configuration (jobs.overrides)")
    return raw


def resolve_base(model: str, cfg: JobsConfig, fine_tuned: dict[str, Any] | None) -> tuple[str, str]:
    """(what train.model gets, the base's name in ft: names) for the `model` a request names:
    a base of jobs.models, or `fine_tuned`, the succeeded job whose ft: model it is."""
    if model in cfg.models:
        return cfg.models[model], base_model_name(model)
    if fine_tuned is not None:
        return str(Path(fine_tuned["run_dir"])), fine_tuned["base_name"]
    offered = ", ".join(sorted(cfg.models)) or "none (set jobs.models)"
    raise JobRequestError(f"the model '{model}' is not available for fine-tuning here; this server offers: {offered}, "
                          "or a succeeded job's ft: model", "model", code="model_not_available")


def check_base_exists(base: str) -> None:
    """A local base must be a directory; a hub id is found (or not) by training, offline or not."""
    looks_local = base.startswith(("/", ".", "~")) or Path(base).exists()
    if looks_local and not Path(base).expanduser().is_dir():
        raise TunelabError("base model directory not found", where=base, fix="fix jobs.models")
