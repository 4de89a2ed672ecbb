"""`tunelab monitor`: compare the most recent predictions of a served model with reference data,
write a drift report, raise alerts, and roll the served version back when asked to.

What each feature is compared with:
- input length (characters, words) and share of inputs with PII: the reference data;
- predicted labels (classification): the reference data's labels;
- output length (generative): the reference data's replies;
- mean confidence (classification): the run's evaluation (eval_report, else RUN/eval/report.json
  of the served run), else the first
  `window` predictions of the log (never overlapping the current window);
- request outcomes (ok / blocked / rejected / error): the first `window` predictions of the log;
- error rate (5xx): an absolute ceiling, max_error_rate, with an exact binomial test;
- accuracy and mean rating on feedback (monitor.quality, tunelab.monitor.quality): the run's
  evaluated accuracy, else feedback on earlier traffic (silent decay: quality fell although the
  inputs may not have moved).
Reference traffic from the log is only used when the log holds more than one window.
"""
from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config import MonitorConfig
from tunelab.data.pii import PiiDetector
from tunelab.errors import TunelabError
from tunelab.files import write_json, write_text
from tunelab.monitor import drift
from tunelab.monitor.alerts import alert_payload, send_webhook
from tunelab.monitor.content import content_drift
from tunelab.monitor.features import log_features, logged_input_text, outcome, prompt_text, reference_features
from tunelab.monitor import quality
from tunelab.monitor.reference import evaluated_accuracy, evaluated_confidence, resolve_reference
from tunelab.monitor.report import render_html, render_markdown
from tunelab.monitor.window import span_seconds, split_window

# Reference records measured at most: PSI and the tests are as sharp at ten thousand as at a
# million, and the PII detector's cost grows with every record.
REFERENCE_SAMPLE = 10_000
OUTPUT_FEATURES = ("predicted_label", "output_chars")


@dataclass
class MonitorResult:
    out_dir: Path
    report: dict[str, Any]

    @property
    def drifted(self) -> bool:
        return self.report["drifted"]


def run(cfg: MonitorConfig) -> MonitorResult:
    out_dir = Path(cfg.out_dir)
    rows = read_log(cfg.prediction_log)
    current, earlier = split_window(rows, cfg.window, where=str(cfg.prediction_log))
    ref = resolve_reference(cfg.reference, cfg.registry, [r.get("model_version") for r in current])
    thresholds = {"psi": cfg.psi_threshold, "kl": cfg.kl_threshold, "p_value": cfg.p_value,
                  "min_confidence_drop": cfg.min_confidence_drop, "min_samples": cfg.min_samples,
                  "max_error_rate": cfg.max_error_rate, "bins": cfg.bins,
                  "content_auc": cfg.content.auc_threshold if cfg.content.enabled else None}
    detector = PiiDetector()
    sample = ref.records if len(ref.records) <= REFERENCE_SAMPLE else random.Random(0).sample(ref.records,
                                                                                              REFERENCE_SAMPLE)
    features = compare_features(reference_features(sample, detector), log_features(current, detector),
                                log_features(earlier, detector) if earlier else None,
                                evaluated_confidence(ref.run_dir, cfg.eval_report), thresholds)
    if cfg.content.enabled:
        features.append(content_feature(sample, current, cfg.content, cfg.min_samples))
    features.append(drift.rate_above("error_rate", sum(outcome(r) == "error" for r in current), len(current),
                                     max_rate=cfg.max_error_rate, p_value=cfg.p_value)
                    | {"reference_source": "max_error_rate"})
    live = live_quality(cfg, current, earlier, ref.run_dir) if cfg.quality.enabled else None
    if live is not None:
        features += live.pop("features")
    drifted = any(f["drifted"] for f in features)
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "log": str(cfg.prediction_log),
        "window": window_summary(current, earlier, cfg.window),
        "reference": {"source": ref.source, "records": len(ref.records), "sampled": len(sample),
                      "run_dir": str(ref.run_dir) if ref.run_dir else None},
        "thresholds": thresholds,
        "features": features,
        "quality": live,
        "drifted": drifted,
        "alerts": [alert_sentence(f) for f in features if f["drifted"]],
        "notes": notes(current, cfg.min_samples),
        "rollback": roll_back(cfg.registry) if drifted and cfg.rollback else None,
    }
    if drifted and cfg.webhook.url:
        w = cfg.webhook
        report["webhook"] = send_webhook(w.url, alert_payload(report, str(out_dir / "report.html")),
                                         retries=w.retries, timeout_s=w.timeout_s, backoff_s=w.backoff_s)
    else:
        report["webhook"] = None
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "report.json", report)
    write_text(out_dir / "report.md", render_markdown(report))
    write_text(out_dir / "report.html", render_html(report))
    return MonitorResult(out_dir, report)


def watch(cfg: MonitorConfig, on_check: Callable[[MonitorResult], None]) -> MonitorResult:
    """Check every `cfg.watch` until stopped (Ctrl-C) or `cfg.watch_count` checks are done. Each
    check rewrites the report, appends a line to OUT/history.jsonl and is passed to `on_check`."""
    interval, checks = span_seconds(cfg.watch), 0
    while True:
        result = run(cfg)
        record = {key: result.report[key] for key in ("created", "drifted", "alerts", "window", "webhook")}
        with (result.out_dir / "history.jsonl").open("a", encoding="utf-8") as history:
            history.write(json.dumps(record, ensure_ascii=False) + "\n")
        on_check(result)
        checks += 1
        if cfg.watch_count and checks >= cfg.watch_count:
            return result
        time.sleep(interval)


def read_log(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise TunelabError("prediction log not found", where=str(path),
                           fix="run `tunelab serve` and send it requests first, or pass --log with the "
                               "serve.prediction_log file")
    from tunelab.serve.predlog import read_predictions
    rows = read_predictions(path)
    if not rows:
        raise TunelabError("the prediction log holds no predictions", where=str(path),
                           fix="send requests to `tunelab serve` first, then run the monitor")
    return rows


def live_quality(cfg: MonitorConfig, current: list[dict], earlier: list[dict], run_dir: Path | None
                 ) -> dict[str, Any] | None:
    """Quality from the feedback on served answers (monitor.quality): over time for the whole log,
    and the decay features for the current window; None when no feedback joins a prediction."""
    from tunelab.serve.predlog import read_feedback
    items = quality.judged(read_feedback(cfg.prediction_log))
    if not items:
        return None
    now, before = {r["request_id"] for r in current}, {r["request_id"] for r in earlier}
    in_window = [i for i in items if i["request_id"] in now]
    s = cfg.quality
    return {"bucket": s.bucket, "over_time": quality.over_time(items, span_seconds(s.bucket)),
            "window": quality.summary(in_window), "earlier": quality.summary([i for i in items if i["request_id"] in before]),
            "features": quality.decay_features(in_window, [i for i in items if i["request_id"] in before],
                                               evaluated_accuracy(run_dir, cfg.eval_report), min_drop=s.min_drop,
                                               p_value=cfg.p_value, min_samples=s.min_feedback)}


def content_feature(reference: list[dict[str, Any]], current: list[dict[str, Any]], settings,
                    min_samples: int) -> dict[str, Any]:
    """Content drift of the inputs (monitor.content): reference prompts against logged inputs."""
    return content_drift([prompt_text(r) for r in reference], [logged_input_text(r.get("input")) for r in current],
                         encoder=settings.encoder, auc_threshold=settings.auc_threshold, folds=settings.folds,
                         max_reference=settings.max_reference, farthest=settings.farthest,
                         min_samples=min_samples) | {"reference_source": "reference data"}


def compare_features(ref: dict[str, list], cur: dict[str, list], early: dict[str, list] | None,
                     evaluated: tuple[float, str] | None, t: dict[str, Any]) -> list[dict[str, Any]]:
    def compare(name: str, kind: str, reference: list, current: list, source: str) -> dict[str, Any]:
        # the model's outputs are judged by KL divergence (the default rule), its inputs by PSI
        measure = "kl" if name in OUTPUT_FEATURES else "psi"
        return drift.feature_drift(name, reference, current, kind=kind, psi_threshold=t["psi"],
                                   kl_threshold=t["kl"], measure=measure, p_value=t["p_value"],
                                   min_samples=t["min_samples"], bins=t["bins"]) | {"reference_source": source}

    features = [compare("input_chars", "numeric", ref["input_chars"], cur["input_chars"], "reference data"),
                compare("input_words", "numeric", ref["input_words"], cur["input_words"], "reference data"),
                compare("pii", "categorical", ref["pii"], cur["pii"], "reference data")]
    if cur["label"]:
        if ref.get("label"):
            features.append(compare("predicted_label", "categorical", ref["label"], cur["label"],
                                    "reference data labels"))
        elif early and early["label"]:
            features.append(compare("predicted_label", "categorical", early["label"], cur["label"], "earlier traffic"))
    if cur["confidence"]:
        features.append(confidence_drift(cur["confidence"], early, evaluated, t))
    if cur["output_chars"]:
        if ref.get("output_chars"):
            features.append(compare("output_chars", "numeric", ref["output_chars"], cur["output_chars"],
                                    "reference data replies"))
        elif early and early["output_chars"]:
            features.append(compare("output_chars", "numeric", early["output_chars"], cur["output_chars"],
                                    "earlier traffic"))
    if early:
        features.append(compare("outcome", "categorical", early["outcome"], cur["outcome"], "earlier traffic"))
    else:
        features.append(not_tested("outcome", "categorical", "not tested: the log holds no traffic before the "
                                   "current window to compare request outcomes with"))
    return features


def confidence_drift(current: list[float], early: dict[str, list] | None, evaluated: tuple[float, str] | None,
                     t: dict[str, Any]) -> dict[str, Any]:
    if evaluated is not None:
        reference, source = evaluated
    elif early and early["confidence"]:
        reference, source = early["confidence"], "earlier traffic"
    else:
        return not_tested("confidence", "mean", "not tested: no evaluation report with confidences and no "
                          "traffic before the current window to take a reference confidence from")
    return drift.mean_drop(reference, current, min_drop=t["min_confidence_drop"], p_value=t["p_value"],
                           min_samples=t["min_samples"]) | {"reference_source": source}


def not_tested(feature: str, kind: str, reason: str) -> dict[str, Any]:
    return {"feature": feature, "kind": kind, "reference_n": None, "current_n": None, "psi": None, "kl": None,
            "statistic": None, "p_value": None, "drifted": False, "reason": reason, "reference_source": None}


def window_summary(current: list[dict], earlier: list[dict], window: int | str) -> dict[str, Any]:
    versions: dict[str, int] = {}
    for row in current:
        versions[str(row.get("model_version"))] = versions.get(str(row.get("model_version")), 0) + 1
    return {"size": window, "predictions": len(current), "earlier_predictions": len(earlier),
            "from_ts": current[0].get("ts"), "to_ts": current[-1].get("ts"), "model_versions": versions}


FEATURE_WORDS = {"content": "content of the inputs", "input_chars": "input length in characters", "input_words": "input length in words",
                 "pii": "share of inputs with PII", "predicted_label": "predicted-label distribution",
                 "confidence": "mean confidence", "output_chars": "output length in characters",
                 "outcome": "request outcomes (ok, blocked, rejected, error)", "error_rate": "error rate",
                 "feedback_accuracy": "accuracy on feedback", "feedback_rating": "mean rating on feedback"}


def alert_sentence(feature: dict[str, Any]) -> str:
    name = FEATURE_WORDS.get(feature["feature"], feature["feature"])
    if feature["feature"] == "feedback_accuracy":
        return (f"Silent decay: accuracy on feedback-labelled answers is {feature['current_rate']:.1%} of "
                f"{feature['current_n']}, against {feature['reference_rate']:.1%} in the {feature['reference_source']} "
                f"(p={feature['p_value']:.2g}).")
    if feature["feature"] == "feedback_rating":
        return (f"Silent decay: the mean rating of answers fell from {feature['reference_mean']:.2f} to "
                f"{feature['current_mean']:.2f} of its scale (p={feature['p_value']:.2g}).")
    if feature["kind"] == "mean":
        return (f"Mean confidence fell from {feature['reference_mean']:.3f} to {feature['current_mean']:.3f} "
                f"(drop {feature['statistic']:.3f}, p={feature['p_value']:.2g}).")
    if feature["kind"] == "rate":
        return (f"Error rate is {feature['current_rate']:.1%} of {feature['current_n']} requests, above the allowed "
                f"{feature['max_rate']:.1%} (p={feature['p_value']:.2g}).")
    if feature["feature"] == "content":
        return (f"The content of the inputs drifted from the reference data: a classifier tells them apart with "
                f"ROC AUC {feature['auc']:.3f} (0.5 = no drift).")
    distance = f"KL {feature['kl']:.3f}" if feature.get("measure") == "kl" else f"PSI {feature['psi']:.3f}"
    return (f"The {name} drifted from the {feature['reference_source']}: {distance}, "
            f"{feature['test']} p={feature['p_value']:.2g}.")


def notes(current: list[dict], min_samples: int) -> list[str]:
    if len(current) >= min_samples:
        return []
    return [f"Only {len(current)} predictions in the window: the drift tests need at least {min_samples}, so only "
            "the error rate was tested; send more traffic, or lower monitor.min_samples knowing the tests get noisy."]


def roll_back(registry: str | Path | None) -> dict[str, Any]:
    """Make the previous live version live again; a rollback that cannot happen is recorded, not
    raised: the drift report is still written and the alert still goes out."""
    if registry is None or not Path(registry).is_file():
        return {"from": None, "to": None, "error": f"no registry at {registry}; nothing was rolled back"}
    from tunelab.serve.registry import Registry
    reg = Registry(registry)
    before = reg.live()
    try:
        entry = reg.rollback()
    except TunelabError as exc:
        return {"from": before.get("version") if before else None, "to": None, "error": str(exc)}
    return {"from": before.get("version") if before else None, "to": entry["version"], "path": entry.get("path"),
            "error": None}
