"""`tunelab eval` (classification so far): the tuned model against its base and cheap
alternatives on the same held-out examples, each difference with a paired bootstrap interval."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tunelab.errors import TunelabError
from tunelab.evaluate import baselines as cheap
from tunelab.evaluate.compare import paired_bootstrap
from tunelab.evaluate.metrics import HEADLINE, METRIC_FUNCTIONS, classification_metrics
from tunelab.evaluate.predict import classify, load_classifier
from tunelab.files import read_jsonl, write_json, write_text

BUILTIN_BASELINES = ("probe", "base")


@dataclass
class EvalResult:
    out_dir: Path
    report: dict[str, Any]


def run(model: str, data: str, *, baselines: list[str], out_dir: str | Path, resamples: int = 1000,
        seed: int = 0) -> EvalResult:
    out_dir = Path(out_dir)
    run_info = read_run(model)
    records = load_test_records(data)
    tuned, tokenizer = load_classifier(model)
    labels = [tuned.config.id2label[i] for i in range(tuned.config.num_labels)]
    y_true = label_indices(records, labels, data)
    texts = [r["text"] for r in records]
    systems: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    predicted, _ = classify(tuned, tokenizer, texts, prefix=run_info["prefix"])
    systems["tuned"] = {"predictions": predicted, "seconds": time.perf_counter() - started, "source": model}
    for name in baselines:
        systems[name] = baseline_predictions(name, run_info, labels, texts, seed)
    report = build_report(model, data, labels, y_true, systems, resamples, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "report.json", report)
    write_text(out_dir / "report.md", render_markdown(report))
    return EvalResult(out_dir, report)


def read_run(model: str) -> dict[str, Any]:
    """What the run directory says about its base model, training data and task prefix."""
    path = Path(model)
    manifest_file = path / "manifest.json"
    if not path.exists():
        raise TunelabError("model not found", where=model, fix="give a run directory from `tunelab train`")
    if not manifest_file.is_file():
        return {"base": None, "config": None, "prefix": ""}
    manifest = json.loads(manifest_file.read_text())
    config = yaml.safe_load((path / "config.yaml").read_text()) if (path / "config.yaml").is_file() else None
    prefixes = manifest.get("task_prefixes") or {}
    return {"base": manifest.get("base_model", {}).get("path"), "config": config,
            "prefix": next(iter(prefixes.values())) if len(prefixes) == 1 else ""}


def load_test_records(data: str) -> list[dict[str, Any]]:
    path = Path(data)
    if path.is_dir():
        path = path / "test.jsonl"
    if not path.is_file():
        raise TunelabError("test data not found", where=str(path), fix="give test.jsonl or a prepared directory")
    records = read_jsonl(path)
    if not records or not all({"text", "label"} <= r.keys() for r in records):
        raise TunelabError("test data has no classification records (text, label)", where=str(path))
    return records


def label_indices(records, labels: list[str], where: str) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({r["label"] for r in records} - index.keys())
    if unknown:
        raise TunelabError(f"test labels {unknown} are not among the model's labels {labels}", where=where)
    return np.array([index[r["label"]] for r in records])


def baseline_predictions(name: str, run_info: dict[str, Any], labels: list[str], texts: list[str],
                         seed: int) -> dict[str, Any]:
    started = time.perf_counter()
    if name in BUILTIN_BASELINES:
        if not run_info["base"] or not run_info["config"]:
            raise TunelabError(f"baseline '{name}' needs a run directory from `tunelab train` (its manifest names "
                               "the base model and training data)")
        base = run_info["base"]
        if name == "probe":
            train_texts, train_labels = training_examples(run_info["config"], labels)
            predictions, _ = cheap.embedding_probe(base, train_texts, train_labels, texts, seed=seed)
        else:
            from tunelab.models.load import load_model, load_tokenizer
            import torch
            torch.manual_seed(seed)
            model = load_model(base, "classification", labels=labels).eval()
            predictions, _ = classify(model, load_tokenizer(base), texts)
        source = base
    else:
        model, tokenizer = load_classifier(name)
        predictions, _ = classify(model, tokenizer, texts)
        source = name
    return {"predictions": predictions, "seconds": time.perf_counter() - started, "source": source}


def training_examples(config: dict[str, Any], labels: list[str]) -> tuple[list[str], list[int]]:
    """The same training examples the fine-tune saw (its data, sampled as it was sampled)."""
    from tunelab.train.data import load_training_data
    train = config["train"]
    data = load_training_data(train["data"], None, None, train["seed"]).sample(train.get("max_train_examples"),
                                                                               train["seed"])
    index = {label: i for i, label in enumerate(labels)}
    return [r["text"] for r in data.train], [index[r["label"]] for r in data.train]


def build_report(model, data, labels, y_true, systems, resamples, seed) -> dict[str, Any]:
    scores = {name: classification_metrics(y_true, s["predictions"], labels) for name, s in systems.items()}
    comparisons = {}
    for name in systems:
        if name == "tuned":
            continue
        comparisons[name] = {metric: paired_bootstrap(METRIC_FUNCTIONS[metric], y_true, systems["tuned"]["predictions"],
                                                      systems[name]["predictions"], resamples=resamples, seed=seed)
                             for metric in HEADLINE}
    return {
        "task": "classification",
        "model": model,
        "data": data,
        "labels": labels,
        "metrics": scores["tuned"],
        "baselines": {name: {**scores[name], "source": systems[name]["source"]} for name in systems if name != "tuned"},
        "comparisons": comparisons,
        "timing_s": {name: round(s["seconds"], 2) for name, s in systems.items()},
        "verdict": verdict_line(scores, comparisons),
    }


def verdict_line(scores, comparisons) -> str:
    tuned = scores["tuned"]
    parts = [f"tuned macro-F1 {tuned['macro_f1']:.3f}, MCC {tuned['mcc']:.3f}"]
    for name, comparison in comparisons.items():
        f1 = comparison["macro_f1"]
        parts.append(f"vs {name} {scores[name]['macro_f1']:.3f}: {f1['verdict']} "
                     f"(diff {f1['difference']:+.3f}, 95% CI {f1['ci_low']:+.3f} to {f1['ci_high']:+.3f})")
    return "; ".join(parts)


def render_markdown(report: dict[str, Any]) -> str:
    systems = {"tuned": report["metrics"], **report["baselines"]}
    lines = ["# Evaluation report", "", f"{report['verdict']}", "", "| system | accuracy | macro-F1 | MCC |",
             "|---|---:|---:|---:|"]
    lines += [f"| {name} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {m['mcc']:.4f} |" for name, m in systems.items()]
    for name, comparison in report["comparisons"].items():
        lines += ["", f"## tuned vs {name} (paired bootstrap, {comparison['macro_f1']['resamples']} resamples)", "",
                  "| metric | difference | 95% CI | verdict |", "|---|---:|---|---|"]
        lines += [f"| {metric} | {c['difference']:+.4f} | {c['ci_low']:+.4f} to {c['ci_high']:+.4f} | {c['verdict']} |"
                  for metric, c in comparison.items()]
    return "\n".join(lines) + "\n"
