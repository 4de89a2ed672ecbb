"""Where the monitor's reference comes from (I/O at the edge).

Reference data, in order: the path the user gives (a prepared directory or a canonical JSONL);
otherwise the held-out data of the run that served the traffic, read from the `config.yaml` of
that run directory (the registry entry of the predictions' model_version, else the registry's
live entry, else a model_version that is itself a run directory).

Reference confidence (classification): the mean confidence of an evaluation report (the one
given, else RUN/eval/report.json of the served run: its calibration bins, weighted by count),
else None, and the caller falls back to the traffic logged before the current window.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError
from tunelab.files import read_jsonl
from tunelab.train.run_dir import RunDir

HELD_OUT = ("val.jsonl", "test.jsonl")


@dataclass
class Reference:
    records: list[dict[str, Any]]
    source: str            # what was read, for the report
    run_dir: Path | None   # the served run, when the reference came from (or matches) one


def reference_files(path: Path) -> list[Path]:
    """A prepared directory's held-out splits (val.jsonl and test.jsonl: two samples of the data
    the model was meant for, and never trained on), or its train.jsonl when it has neither."""
    if path.is_file():
        return [path]
    held_out = [path / name for name in HELD_OUT if (path / name).is_file()]
    if held_out:
        return held_out
    if (path / "train.jsonl").is_file():
        return [path / "train.jsonl"]
    raise TunelabError("the reference directory has no val.jsonl, test.jsonl or train.jsonl", where=str(path),
                       fix="pass a directory from `tunelab data prepare`, or a canonical JSONL file")


def read_reference(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        raise TunelabError("reference data not found", where=str(path),
                           fix="pass --reference with a prepared directory or a canonical JSONL file")
    records: list[dict[str, Any]] = []
    for file in reference_files(path):
        try:
            records += read_jsonl(file)
        except ValueError as exc:
            raise TunelabError(f"reference data is not JSONL ({exc})", where=str(file),
                               fix="pass canonical JSONL records, such as `tunelab data prepare` writes") from None
    if not records:
        raise TunelabError("reference data holds no records", where=str(path),
                           fix="pass a prepared directory or JSONL file with records in it")
    if not all(isinstance(r, dict) and ({"text", "label"} <= r.keys() or "messages" in r or "prompt" in r)
               for r in records):
        raise TunelabError("reference records are not canonical (text/label, messages, or prompt)", where=str(path),
                           fix="prepare the data with `tunelab data prepare` and pass its directory")
    return records


def served_run_dir(registry: str | Path | None, model_versions: list[str]) -> Path | None:
    """The run directory that served the window: the registry entry of its most frequent
    model_version, else the live entry, else a model_version that is a path to a run directory."""
    entries = _registry_entries(registry)
    by_version = {e.get("version"): e for e in entries["versions"]}
    for version, _ in Counter(model_versions).most_common():
        if version in by_version and by_version[version].get("path"):
            return Path(by_version[version]["path"])
    live = by_version.get(entries["live"])
    if live and live.get("path"):
        return Path(live["path"])
    for version in model_versions:
        if version and RunDir(version).config:
            return Path(version)
    return None


def _registry_entries(registry: str | Path | None) -> dict[str, Any]:
    if registry is None or not Path(registry).is_file():
        return {"versions": [], "live": None}
    from tunelab.serve.registry import Registry
    reg = Registry(registry)
    live = reg.live()
    return {"versions": reg.versions(), "live": live.get("version") if live else None}


def training_data_of(run_dir: Path) -> str:
    """The held-out data of the run (RunDir.held_out_data: train.eval_data when set, else its
    first training source), as it can be opened from here."""
    run = RunDir(run_dir)
    if not run.config:
        raise TunelabError("the served run has no config.yaml to find its training data", where=str(run_dir),
                           fix="pass --reference with a prepared directory or JSONL file")
    data = run.held_out_data()
    if not data:
        raise TunelabError("the served run's config.yaml names no training data", where=str(run_dir / "config.yaml"),
                           fix="pass --reference with a prepared directory or JSONL file")
    if not Path(data).exists():
        raise TunelabError(f"the served run's training data {data} is not here", where=str(run_dir / "config.yaml"),
                           fix="run the monitor from the directory training ran in, or pass --reference")
    return data


def resolve_reference(reference: str | Path | None, registry: str | Path | None,
                      model_versions: list[str]) -> Reference:
    run_dir = served_run_dir(registry, model_versions)
    if reference is not None:
        return Reference(read_reference(reference), str(reference), run_dir)
    if run_dir is None:
        raise TunelabError("no reference data: the log's model versions are not in the registry and it has no "
                           "live version", where=str(registry) if registry else None,
                           fix="pass --reference with a prepared directory or a canonical JSONL file")
    data = training_data_of(run_dir)
    return Reference(read_reference(data), f"{data} (training data of {run_dir})", run_dir)


def evaluated_confidence(run_dir: Path | None, eval_report: str | Path | None = None) -> tuple[float, str] | None:
    """(mean confidence, source) from `eval_report` or else RUN/eval/report.json; None when the
    run has no report, or its report has no confidences (an older report, a generative run)."""
    if eval_report is not None:
        path = Path(eval_report)
        if not path.is_file():
            raise TunelabError("evaluation report not found", where=str(path),
                               fix="pass the report.json `tunelab eval` wrote, or leave monitor.eval_report unset")
    elif run_dir is not None and RunDir(run_dir).eval_report_path.is_file():
        path = RunDir(run_dir).eval_report_path
    else:
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise TunelabError("evaluation report is not JSON", where=str(path),
                           fix="pass the report.json `tunelab eval` wrote") from None
    bins = (report.get("calibration") or {}).get("bins") or []
    counted = [(b["count"], b["confidence"]) for b in bins if b.get("count") and b.get("confidence") is not None]
    if counted:
        total = sum(count for count, _ in counted)
        return sum(count * conf for count, conf in counted) / total, f"{path} (calibration bins)"
    mean = (report.get("metrics") or {}).get("mean_confidence")
    return (float(mean), str(path)) if isinstance(mean, (int, float)) else None


def evaluated_accuracy(run_dir: Path | None, eval_report: str | Path | None = None) -> tuple[float, str] | None:
    """(accuracy, source) of the evaluation report (as evaluated_confidence finds it); None when
    there is none or it has no accuracy (a generative run)."""
    path = Path(eval_report) if eval_report is not None else (
        RunDir(run_dir).eval_report_path if run_dir is not None else None)
    if path is None or not path.is_file():
        return None
    try:
        accuracy = (json.loads(path.read_text(encoding="utf-8")).get("metrics") or {}).get("accuracy")
    except ValueError:
        raise TunelabError("evaluation report is not JSON", where=str(path),
                           fix="pass the report.json `tunelab eval` wrote") from None
    return (float(accuracy), f"{path} (accuracy)") if isinstance(accuracy, (int, float)) else None
