"""Configuration: pydantic sections composed into RunConfig, loaded from YAML with key=value
overrides. Unknown keys are errors that name the key and the closest valid one.

Every field carries a one-line description: the configuration reference is generated from them.
Each stage's section lives in its own module (data, train, evaluate, serve, loop, jobs, tune);
everything is importable from `tunelab.config`.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from tunelab.config.base import Section  # noqa: F401
from tunelab.config.data import (ALL_PII_TYPES, AugmentConfig, AugmentEdit, AugmentEndpointSettings,  # noqa: F401
                                 CleanConfig, DataConfig, DataFormat, DedupConfig, PiiConfig,
                                 PiiType, SplitConfig)
from tunelab.config.evaluate import (CostSettings, EndpointSettings, EvalConfig, ExplainSettings,  # noqa: F401
                                     FairnessSettings, ForgettingSettings, GateSettings,
                                     GenerationSettings, LatencySettings, NormalizeStep,
                                     Perturbation, RobustnessSettings)
from tunelab.config.jobs import JobsConfig  # noqa: F401
from tunelab.config.loop import (ContentDriftSettings, IssuesSettings, LabelConfig, MonitorConfig,  # noqa: F401
                                 QualitySettings, RetrainConfig, RetrainGateSettings,
                                 ReviewSettings, SelectSettings, WINDOW, WebhookSettings,
                                 count_or_span)
from tunelab.config.serve import GuardSettings, ServeConfig  # noqa: F401
from tunelab.config.train import (ADAPTER_METHODS, DistributedSettings, DpoLoss, DpoSettings,  # noqa: F401
                                  EwcSettings, LoraSettings, METHODS, MixSettings, RemoteSettings,
                                  ReplaySettings, RftSettings, StageSettings, TASKS,
                                  TrackingSettings, TrainConfig, TrainMethod, TrainTask)
from tunelab.config.tune import SearchRange, TUNABLE, TuneConfig  # noqa: F401
from tunelab.errors import TunelabError


class RunConfig(Section):
    data: DataConfig = Field(default_factory=DataConfig, description="Data preparation (`tunelab data prepare`).")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Fine-tuning (`tunelab train`).")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation (`tunelab eval`).")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="Serving (`tunelab serve`).")
    monitor: MonitorConfig = Field(default_factory=MonitorConfig, description="Monitoring (`tunelab monitor`).")
    label: LabelConfig = Field(default_factory=LabelConfig, description="Labelling (`tunelab label`).")
    retrain: RetrainConfig = Field(default_factory=RetrainConfig, description="The next round (`tunelab retrain`).")
    tune: TuneConfig = Field(default_factory=TuneConfig, description="Hyperparameter search (`tunelab tune`).")
    jobs: JobsConfig = Field(default_factory=JobsConfig, description="The fine-tuning jobs server (`tunelab jobs serve`).")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read YAML (if given), apply `key.sub=value` overrides, and validate as a whole."""
    where = str(path) if path else "command line"
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(Path(path))
    for item in overrides or []:
        apply_override(raw, item)
    return validate_config(raw, where)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TunelabError("config file not found", where=str(path), fix="check the path")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{path}:{mark.line + 1}" if mark else str(path)
        raise TunelabError(f"the YAML does not parse ({getattr(exc, 'problem', exc)})", where=at,
                           fix="fix the syntax at that line") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise TunelabError("the config must be a mapping of sections", where=str(path),
                           fix="start it with a key such as `data:`")
    return loaded


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in a nested dict; the value is parsed as YAML (numbers, lists, booleans)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise TunelabError(f"override {item!r} is not of the form key.sub=value",
                           fix="write it like data.split.seed=3")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise TunelabError(f"override {item!r} sets a key below {part!r}, which is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(value) if value != "" else None
    except yaml.YAMLError:
        node[parts[-1]] = value


def validate_config(raw: dict[str, Any], where: str) -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise _one_sentence(exc, where) from None


def _one_sentence(exc: ValidationError, where: str) -> TunelabError:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    dotted = ".".join(loc)
    if err["type"] == "extra_forbidden":
        valid = _field_names_at(loc[:-1])
        close = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.5)
        prefix = ".".join(loc[:-1] + [""])
        hint = f"did you mean '{prefix}{close[0]}'" if close else (  # no '?': str() ends the sentence
            f"valid keys here are: {', '.join(valid)}")
        return TunelabError(f"unknown key '{dotted}'", where=where, fix=hint)
    got = err.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return TunelabError(f"'{dotted}' is invalid: {err['msg']}{shown}".replace("Value error, ", ""),
                        where=where, fix="correct it in the config or the override")


def _field_names_at(loc: list[str]) -> list[str]:
    model: type[BaseModel] = RunConfig
    for part in loc:
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def field_description(dotted: str) -> str:
    """The description of a config field such as `train.lr`: the one text a CLI option's help
    and the configuration reference both show."""
    model: type[BaseModel] = RunConfig
    *sections, name = dotted.split(".")
    for part in sections:
        model = model.model_fields[part].annotation
    return model.model_fields[name].description


def config_to_dict(cfg: BaseModel) -> dict[str, Any]:
    return cfg.model_dump(mode="json")
