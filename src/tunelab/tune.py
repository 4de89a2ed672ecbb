"""`tunelab tune`: hyperparameter search with Optuna over the space declared in `tune.space`.

Each trial is a normal `tunelab train` run directory (OUTPUT_DIR/trial-NNNN) scored by the eval
stage on the validation split (never the test split). The TPE sampler proposes values; a pruner
(Hyperband by default) stops unpromising trials on the validation metric that training reports
at each evaluation, through a TrainerCallback. The study lives in an Optuna RDB storage (SQLite
by default): an interrupted search resumes with --resume, and several machines share one study
by pointing tune.storage at one database. Results: a table, results.json, results.csv.
"""
from __future__ import annotations

import csv
import io
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from transformers import TrainerCallback

from tunelab.config import TUNABLE, RunConfig, apply_override, validate_config
from tunelab.errors import TunelabError
from tunelab.files import write_json, write_text

LOWER_IS_BETTER = ("loss", "perplexity", "ece")


class TrialInterrupted(Exception):
    """Training was interrupted (Ctrl-C); its checkpoint is saved and the trial is retried on --resume."""


@dataclass
class TuneResult:
    out_dir: Path
    results: dict[str, Any]
    interrupted: bool = False


def run(cfg: RunConfig, *, resume: bool = False, log=lambda message: None) -> TuneResult:
    tune = cfg.tune
    out_dir = Path(tune.output_dir)
    check_space(cfg)
    validation = objective_data(cfg)
    metric, direction = objective(cfg)
    storage_url = tune.storage or f"sqlite:///{(out_dir / 'study.db').resolve()}"
    name = tune.study or out_dir.resolve().name
    out_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(storage_url, name, direction, tune, resume)
    requeue_interrupted(study)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    remaining = tune.trials - len(study.get_trials(deepcopy=False, states=finished))
    interrupted = False
    if remaining > 0:
        try:
            study.optimize(lambda trial: run_trial(trial, cfg, validation, metric, direction, log),
                           n_trials=remaining, catch=(),
                           callbacks=[optuna.study.MaxTrialsCallback(tune.trials, states=finished)])
        except TrialInterrupted:
            interrupted = True
    results = summarise(study, metric, direction, storage_url, out_dir)
    write_results(out_dir, results)
    return TuneResult(out_dir, results, interrupted)


def check_space(cfg: RunConfig) -> None:
    """Every value the space can produce must make a valid config: checked on the extremes and
    the choices before the first trial, so a bad range never leaves a half-run study."""
    if not cfg.tune.space:
        raise TunelabError("tune.space declares no parameter to search", where="tune.space",
                           fix=f"add at least one of {', '.join(TUNABLE)}, e.g. lr: {{low: 1e-5, high: 1e-3, log: true}}")
    for name, spec in cfg.tune.space.items():
        key, integer = TUNABLE[name]
        values = spec.choices if spec.choices is not None else [spec.low, spec.high]
        for value in values:
            if integer and isinstance(value, float) and not value.is_integer():
                raise TunelabError(f"tune.space.{name} gives {value}, but {key} takes whole numbers",
                                   where=f"tune.space.{name}", fix="use whole numbers for low/high or choices")
            try:
                trial_config(cfg, {name: value}, "unused")
            except TunelabError as exc:
                raise TunelabError(f"tune.space.{name} can give {value}, which {key} does not accept ({exc.what})",
                                   where=f"tune.space.{name}", fix="narrow the range to values that field accepts") from None


def objective_data(cfg: RunConfig) -> str:
    """The validation records the objective is scored on: tune.data, or train.data's val.jsonl
    (train.eval_data for a single training file)."""
    if cfg.tune.data:
        path = Path(cfg.tune.data)
        path = path / "val.jsonl" if path.is_dir() else path
    elif cfg.train.data and Path(cfg.train.data).is_dir():
        path = Path(cfg.train.data) / "val.jsonl"
    else:
        path = Path(cfg.train.eval_data) if cfg.train.eval_data else None
    if path is None or not path.is_file():
        raise TunelabError("hyperparameter search needs validation data to score trials on, and none was found",
                           where=str(path) if path else "tune.data",
                           fix="set train.data to a prepared directory with val.jsonl, or tune.data to a validation JSONL")
    return str(path)


def objective(cfg: RunConfig) -> tuple[str, str]:
    metric = cfg.tune.metric
    if metric is None:
        from tunelab.train.data import load_files, record_kind
        first = load_files(cfg.train.data, cfg.train.eval_data)[0][:1] if cfg.train.data else []
        metric = "macro_f1" if first and record_kind(first[0]) == "classification" else "exact_match"
    direction = cfg.tune.direction or ("minimize" if metric in LOWER_IS_BETTER else "maximize")
    return metric, direction


def open_study(url: str, name: str, direction: str, tune, resume: bool) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(
        url, heartbeat_interval=tune.heartbeat_s, grace_period=2 * tune.heartbeat_s,
        failed_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=1))
    exists = name in [s.study_name for s in storage.get_all_studies()]
    if exists and not resume:
        raise TunelabError(f"a study named {name} already exists in {url}", where="tune.study",
                           fix="pass --resume to continue (or join) it, or choose another tune.study or tune.output_dir")
    sampler = optuna.samplers.TPESampler(seed=tune.seed)
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=make_pruner(tune.pruner),
                                direction=direction, load_if_exists=True)
    if study.direction.name.lower() != direction:
        raise TunelabError(f"the study {name} maximises/minimises the other way ({study.direction.name.lower()})",
                           where="tune.direction", fix="use the study's direction, or a new tune.study")
    return study


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    return {"hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3),
            "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
            "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2),
            "none": optuna.pruners.NopPruner}[name]()


def requeue_interrupted(study: optuna.Study) -> None:
    """A trial stopped by Ctrl-C is FAIL with user attribute "interrupted": run its values again
    (once) on resume. Trials of a machine that died are retried by the storage's heartbeat."""
    retried = {t.user_attrs.get("retry_of") for t in study.get_trials(deepcopy=False)}
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        if trial.user_attrs.get("interrupted") and trial.number not in retried:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})


def suggest(trial: optuna.Trial, name: str, spec) -> Any:
    if spec.choices is not None:
        return trial.suggest_categorical(name, spec.choices)
    if TUNABLE[name][1]:
        return trial.suggest_int(name, int(spec.low), int(spec.high), step=int(spec.step or 1), log=spec.log)
    return trial.suggest_float(name, spec.low, spec.high, step=spec.step, log=spec.log)


def trial_config(cfg: RunConfig, params: dict[str, Any], output_dir: str) -> RunConfig:
    raw = cfg.model_dump(mode="json", exclude={"tune"})
    for name, value in params.items():
        apply_override(raw, f"{TUNABLE[name][0]}={value}")
    apply_override(raw, f"train.output_dir={output_dir}")
    return validate_config(raw, "tune trial")


class ReportAndPrune(TrainerCallback):
    """Reports the validation metric of each evaluation to Optuna (step = evaluation number) and
    stops training when the pruner says the trial cannot catch up."""

    def __init__(self, trial: optuna.Trial, metric: str, direction: str):
        self.trial, self.direction, self.evaluations, self.pruned = trial, direction, 0, False
        self.metric = metric

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(f"eval_{self.metric}")
        sign = 1.0
        if value is None:  # the objective is not a training metric (exact_match...): its loss stands in
            value = (metrics or {}).get("eval_loss")
            sign = -1.0 if self.direction == "maximize" else 1.0
        if value is None:
            return
        self.evaluations += 1
        self.trial.report(sign * float(value), step=self.evaluations)
        if self.trial.should_prune():
            self.pruned = True
            control.should_training_stop = True


def run_trial(trial: optuna.Trial, cfg: RunConfig, validation: str, metric: str, direction: str, log) -> float:
    from tunelab.evaluate import run as eval_run
    from tunelab.train import run as train_run
    params = {name: suggest(trial, name, spec) for name, spec in cfg.tune.space.items()}
    run_dir = Path(cfg.tune.output_dir) / f"trial-{trial.number:04d}"
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    log(f"trial {trial.number}: {params}")
    reporter = ReportAndPrune(trial, metric, direction)
    result = train_run.run(trial_config(cfg, params, str(run_dir)), callbacks=(reporter,))
    if result.interrupted:
        trial.set_user_attr("interrupted", True)
        raise TrialInterrupted(str(run_dir))
    if reporter.pruned:
        log(f"trial {trial.number}: pruned after {reporter.evaluations} evaluation(s)")
        raise optuna.TrialPruned()
    settings = cfg.eval.model_copy(deep=True)
    settings.model, settings.data, settings.out_dir = str(run_dir), validation, str(run_dir / "eval")
    settings.baselines, settings.robustness.perturbations = [], []  # the objective needs the tuned model only
    report = eval_run.run(settings).report
    if report["metrics"].get(metric) is None:
        raise TunelabError(f"the eval report has no metric {metric!r}", where="tune.metric",
                           fix=f"choose one of {', '.join(k for k, v in report['metrics'].items() if isinstance(v, float))}")
    value = float(report["metrics"][metric])
    log(f"trial {trial.number}: {metric} {value:.4f}")
    return value


def summarise(study: optuna.Study, metric: str, direction: str, storage: str, out_dir: Path) -> dict[str, Any]:
    trials = [{"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params,
               "run_dir": t.user_attrs.get("run_dir"), "worker": t.user_attrs.get("worker"),
               "seconds": round(t.duration.total_seconds(), 1) if t.duration else None}
              for t in study.get_trials(deepcopy=False)]
    complete = [t for t in trials if t["state"] == "complete"]
    best = (max if direction == "maximize" else min)(complete, key=lambda t: t["value"]) if complete else None
    return {"study": study.study_name, "storage": storage, "metric": metric, "direction": direction,
            "best": best, "best_run_dir": best["run_dir"] if best else None, "trials": trials}


def write_results(out_dir: Path, results: dict[str, Any]) -> None:
    write_json(out_dir / "results.json", results)
    names = sorted({p for t in results["trials"] for p in t["params"]})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["number", "state", results["metric"], *names, "run_dir", "seconds"])
    for t in results["trials"]:
        writer.writerow([t["number"], t["state"], t["value"], *(t["params"].get(n) for n in names), t["run_dir"],
                         t["seconds"]])
    write_text(out_dir / "results.csv", buffer.getvalue())
