"""`tunelab eval`: prove the fine-tune helped and show where it is not ready for production.

The tuned model and each baseline answer the same held-out examples; every difference carries
a paired bootstrap interval. Around that: calibration, slices, fairness, robustness,
forgetting, over-fitting, latency, a KPI/cost summary and an optional deploy gate.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config import EvalConfig
from tunelab.errors import TunelabError
from tunelab.evaluate import classification, generative, grading, preference, reward
from tunelab.evaluate.endpoint import is_endpoint, parse_endpoint
from tunelab.evaluate.forgetting import forgetting_flag
from tunelab.evaluate.gate import evaluate_gates
from tunelab.evaluate.kpi import kpi_report
from tunelab.evaluate.latency import device_description
from tunelab.evaluate.overfitting import overfitting_report, reward_curves
from tunelab.evaluate.report import render_html, render_markdown
from tunelab.evaluate.report_sections import METRIC_NAMES
from tunelab.files import read_jsonl, write_json, write_jsonl, write_text
from tunelab.train.run_dir import RunDir


@dataclass
class EvalResult:
    out_dir: Path
    report: dict[str, Any]

    @property
    def gate_failed(self) -> bool:
        return bool(self.report["gate"]) and not self.report["gate"]["passed"]


def run(cfg: EvalConfig, *, progress: Callable[[str], None] = lambda message: None) -> EvalResult:
    if not cfg.model:
        raise TunelabError("no model to evaluate", fix="pass a run directory: `tunelab eval RUN_DIR`")
    model = cfg.model
    if is_endpoint(model):  # a model behind an endpoint and no run directory: the data must be given
        parse_endpoint(model)
        run = exported = RunDir(model)  # names no directory, so it answers as a model directory with nothing to say
        out_dir = Path(cfg.out_dir) if cfg.out_dir else Path("eval") / _file_name(parse_endpoint(model).model)
    else:
        exported = RunDir.open(model)
        out_dir = Path(cfg.out_dir) if cfg.out_dir else exported.path / "eval"
        run = trained_run(exported, cfg.data)
        model = run.endpoint or model  # a run trained remotely answers from its endpoint
    data, records = test_records(run, cfg.data)
    task = ("classification" if "text" in records[0] else "preference" if _is_preference(records[0])
            else "rft" if _is_prompt(records[0]) else "generative")
    # an export is compared with the run it came from: the report shows what exporting changed
    source = [str(run.path)] if run is not exported else []
    common = dict(prefixes=input_prefixes(run, records), baselines=baseline_names(source + cfg.baselines),
                  settings=cfg, data_where=data, progress=progress)
    if task == "classification":
        section = classification.evaluate(model, records, run, **common)
    elif task == "preference":
        section = preference.evaluate(model, records, run, **common)
    else:
        grader, runtime = grading.grader_for(cfg, run)
        if task == "rft" and grader is None:
            raise TunelabError("the test records are prompts (no reference reply), which only a grader can score, "
                               "and none is given", where=str(data), fix="set eval.grader=GRADER.json")
        evaluator = reward if task == "rft" else generative
        section = evaluator.evaluate(model, records, run, **common, grader=grader, runtime=runtime)
        if runtime is not None:
            runtime.close()
    predictions = section.pop("predictions", None)
    headline = section.pop("headline")
    tokens_per_request = section.pop("tokens_per_request")
    report = {"task": task, "model": model, "data": str(data), "device": device_description(),
              "labels": section.pop("labels", None), **section}
    report["export"] = ({"format": exported.export_format, "int8": bool(exported.manifest.get("int8")),
                         "source_run": str(exported.source_run.path)} if exported.source_run else None)
    report.setdefault("forgetting", None)
    report.setdefault("reward", None)
    report.setdefault("preference", None)  # preference (DPO) runs with a base baseline only
    report.setdefault("explanations", None)  # classification runs with eval.explain.examples only
    report["overfitting"] = overfitting_report(run.path / "metrics.jsonl") if run.is_run else None
    report["training_rewards"] = reward_curves(run.path / "metrics.jsonl") if run.is_run else None
    report["kpi"] = kpi_report(headline=headline, tuned=report["metrics"], baselines=report["baselines"],
                               comparisons=report["comparisons"], latency=report["latency"],
                               baseline_latency=(report["latency"] or {}).get("baseline"),
                               cost=cfg.cost.model_dump(), training_seconds=run.training_seconds,
                               measured_tokens_per_request=tokens_per_request)
    report["gate"] = evaluate_gates(report, minimums=cfg.gate.min, maximums=cfg.gate.max,
                                    better_than=cfg.gate.better_than, headline=headline) if cfg.gate.enforce else None
    report["flags"] = flags(report)
    report["verdict"] = verdict_line(report, headline)
    write_reports(out_dir, report, records, predictions)
    return EvalResult(out_dir, report)


def _file_name(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-") or "endpoint"


def trained_run(model: RunDir, data: str | None) -> RunDir:
    """The run whose test split, prefixes, training data and base model an evaluation of `model`
    uses: for an export (`tunelab export`), the run it was made from, so the export is evaluated
    as that run is; else `model` itself."""
    source = model.source_run
    if source is None:
        return model
    if not source.path.is_dir():
        if data:  # the export carries its labels, prefixes and truncation length
            return model
        raise TunelabError(f"the run this export was made from is no longer at {source.path}, and its test split "
                           "is found through it", where=str(model.path),
                           fix="pass --data with a test JSONL or a prepared directory")
    return source


def baseline_names(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))  # --baseline base --baseline base compares once


def test_records(run: RunDir, data: str | None) -> tuple[str, list[dict[str, Any]]]:
    """(where, records): the given test data, else the test split(s) `tunelab data prepare` held
    out beside the run's training data (one per task of a mixture, each record tagged with its
    task so it gets that task's prefix)."""
    if data:
        return str(data), load_test_records(data)
    sources = run.test_sources()
    if not sources:
        raise TunelabError("no test data given and none found beside the run's training data", where=str(run.path),
                           fix="pass --data with a test JSONL or a prepared directory")
    records = []
    for source in sources:
        found = load_test_records(source["path"])
        if source["task"]:
            found = [{**r, "meta": {**(r.get("meta") or {}), "task": source["task"]}} for r in found]
        records += found
    return ", ".join(s["path"] for s in sources), records


def input_prefixes(run: RunDir, records: list[dict[str, Any]]) -> list[str]:
    """The prefix each test input gets: its task's (meta.task), as in training."""
    return [run.prefix((r.get("meta") or {}).get("task")) for r in records]


def load_test_records(data: str) -> list[dict[str, Any]]:
    path = Path(data)
    if path.is_dir():
        path = path / "test.jsonl"
    if not path.is_file():
        raise TunelabError("test data not found", where=str(path), fix="give test.jsonl or a prepared directory")
    records = read_jsonl(path)
    kinds = {"classification" if {"text", "label"} <= r.keys() else "chat" if _is_chat(r)
             else "prompt" if _is_prompt(r) else "preference" if _is_preference(r) else "other" for r in records}
    if not records or len(kinds) != 1 or "other" in kinds:
        raise TunelabError("test data must hold classification records (text, label), chat records "
                           "(messages ending with an assistant reply), prompt records (messages ending with the "
                           "user's turn, graded by a grader) or preference pairs (prompt, chosen, rejected), one "
                           "kind per file", where=str(path),
                           fix="evaluate the test.jsonl written by `tunelab data prepare`")
    return records


def _is_chat(record: dict) -> bool:
    messages = record.get("messages")
    return isinstance(messages, list) and len(messages) >= 2 and messages[-1].get("role") == "assistant"


def _is_preference(record: dict) -> bool:
    return {"prompt", "chosen", "rejected"} <= record.keys() and isinstance(record["prompt"], (str, list))


def _is_prompt(record: dict) -> bool:
    messages = record.get("messages")
    return isinstance(messages, list) and len(messages) >= 1 and messages[-1].get("role") == "user"


def flags(report: dict[str, Any]) -> list[str]:
    """One sentence per concern a reviewer should see before deploying."""
    found = []
    fairness = report.get("fairness")
    if fairness and fairness["flagged"]:
        found.append(f"fairness: the true-positive-rate gap between groups is {fairness['max_gap']:.1%}, above "
                     f"the {fairness['threshold']:.1%} threshold")
    if report.get("forgetting") and forgetting_flag(report["forgetting"]):
        found.append(forgetting_flag(report["forgetting"]))
    overfit = report.get("overfitting")
    if overfit and overfit["flagged"]:
        found.append(f"over-fitting: {overfit.get('reason') or 'validation loss turned up'}")
    robust = report.get("robustness")
    if robust:
        rated = [(kind, run) for kind, run in robust["perturbations"].items() if run["flip_rate"] is not None]
        worst = max(rated, key=lambda item: item[1]["flip_rate"], default=None)
        if worst and worst[1]["flip_rate"] > 0.1:
            found.append(f"robustness: {worst[1]['flip_rate']:.1%} of correct answers flip under {worst[0]}")
    faithfulness = (report.get("explanations") or {}).get("faithfulness") or {}
    if faithfulness.get("examples") and faithfulness["top_k_drop"] <= faithfulness["random_drop"]:
        found.append(f"explanations: deleting the {faithfulness['k']} top-attributed words lowers the predicted "
                     f"label's probability no more than deleting {faithfulness['k']} random words "
                     f"({faithfulness['top_k_drop']:+.3f} against {faithfulness['random_drop']:+.3f}): the "
                     "attributions do not show what this model relies on")
    for name, comparison in report["comparisons"].items():
        if any(c["verdict"] == "worse" for c in comparison.values()):
            found.append(f"the tuned model is worse than {name} on "
                         + ", ".join(m for m, c in comparison.items() if c["verdict"] == "worse"))
    if report["gate"] and not report["gate"]["passed"]:
        failed = [c["metric"] for c in report["gate"]["checks"] if not c["passed"]]
        found.append(f"gate failed on {', '.join(failed)}")
    return found


def verdict_line(report: dict[str, Any], headline: str) -> str:
    metrics = report["metrics"]
    shown = {"classification": ("macro_f1", "mcc"), "rft": ("reward", "pass_rate"),
             "preference": ("preference_accuracy", "margin")}.get(
        report["task"], ("exact_match", "token_f1", "reward"))
    shown = [m for m in shown if m in metrics]
    parts = [f"tuned {', '.join(f'{_pretty(m)} {metrics[m]:.3f}' for m in shown)}"]
    for name, comparison in report["comparisons"].items():
        c = comparison[headline]
        parts.append(f"vs {name} {report['baselines'][name][headline]:.3f}: {c['verdict']} "
                     f"(diff {c['difference']:+.3f}, {c['confidence']:.0%} CI {c['ci_low']:+.3f} to {c['ci_high']:+.3f})")
    return "; ".join(parts)


def _pretty(metric: str) -> str:
    """The report's own metric names, but for the verdict's wording of the grader's figures."""
    return {"reward": "mean reward", "pass_rate": "pass rate"}.get(metric) or METRIC_NAMES.get(metric, metric)


def write_reports(out_dir: Path, report: dict[str, Any], records, predictions) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "report.json", report)
    write_text(out_dir / "report.md", render_markdown(report))
    write_text(out_dir / "report.html", render_html(report))
    if predictions is not None and report["task"] == "preference":  # each pair's scores, to read the misses
        write_jsonl(out_dir / "predictions.jsonl",
                    [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"], **p}
                     for r, p in zip(records, predictions)])
    elif predictions is not None:  # generative answers, for reading failures one by one
        write_jsonl(out_dir / "predictions.jsonl",
                    [{"messages": r["messages"], "prediction": p} for r, p in zip(records, predictions)])
