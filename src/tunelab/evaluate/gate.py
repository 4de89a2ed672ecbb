"""Deploy gate (`tunelab eval --gate`): the report checked against eval.gate's floors, ceilings and
baselines to beat. A gate never passes silently: a metric this report lacks is a failed check
saying why, and a name that no report could hold is a user error listing the valid ones.

Gate metric names are any numeric key of report["metrics"] (accuracy, macro_f1, mcc, ece, brier,
exact_match, token_f1, bleu, chrf, rouge1, rouge2, rougeL, perplexity, ...) plus these, derived
from the report's other sections:
  p50_latency_ms, p95_latency_ms, p99_latency_ms  latency percentiles at batch size 1
  requests_per_s    throughput at the best measured batch size
  retention         tuned / base general score (forgetting.retention)
  fairness_gap      largest true-positive-rate gap between groups (fairness.max_gap)
  flip_rate         worst share of correct answers a perturbation flips (max over robustness)
  robust_score      worst headline score under a perturbation (min over robustness)
  eval_gap          final eval loss - final train loss (overfitting.gap)
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tunelab.errors import TunelabError

Lookup = Callable[[Mapping[str, Any]], tuple[float | None, str | None]]  # (value, why it is absent)


def _latency(quantile: str) -> Lookup:
    def lookup(report):
        latency = report.get("latency")
        if not latency:
            return None, "latency was not measured (eval.latency.batch_sizes)"
        row = (latency.get("by_batch_size") or {}).get("1")
        if row is None:
            return None, "latency was not measured at batch size 1 (add 1 to eval.latency.batch_sizes)"
        return row.get(f"{quantile}_ms"), None
    return lookup


def _requests_per_s(report):
    latency = report.get("latency")
    rates = [row.get("requests_per_s") for row in ((latency or {}).get("by_batch_size") or {}).values()]
    rates = [rate for rate in rates if rate is not None]
    if not rates:
        return None, "throughput was not measured (eval.latency.batch_sizes)"
    return max(rates), None


def _section_value(section: str, key: str, absent: str) -> Lookup:
    def lookup(report):
        found = report.get(section)
        if not found:
            return None, absent
        if found.get(key) is None:
            return None, f"{section}.{key} has no value in this report"
        return found[key], None
    return lookup


def _over_perturbations(key: str, pick: Callable) -> Lookup:
    def lookup(report):
        robustness = report.get("robustness")
        if not robustness or not robustness.get("perturbations"):
            return None, "robustness was not measured (eval.robustness.perturbations is empty)"
        values = [p.get(key) for p in robustness["perturbations"].values() if p.get(key) is not None]
        if not values:
            return None, f"no perturbation has a {key} (no originally-correct examples)"
        return pick(values), None
    return lookup


DERIVED_METRICS: dict[str, Lookup] = {
    "p50_latency_ms": _latency("p50"),
    "p95_latency_ms": _latency("p95"),
    "p99_latency_ms": _latency("p99"),
    "requests_per_s": _requests_per_s,
    "retention": _section_value("forgetting", "retention",
                                "no forgetting check in this report (set eval.forgetting.data)"),
    "fairness_gap": _section_value("fairness", "max_gap",
                                   "no fairness section in this report (test records need meta.group)"),
    "flip_rate": _over_perturbations("flip_rate", max),
    "robust_score": _over_perturbations("score", min),
    "eval_gap": _section_value("overfitting", "gap",
                               "no over-fitting section in this report (needs a run directory whose "
                               "metrics.jsonl has evaluations)"),
}


def report_metric_names(report: Mapping[str, Any]) -> list[str]:
    """Scalar keys of report["metrics"] (a None value is a scalar the report could not compute)."""
    return [name for name, value in (report.get("metrics") or {}).items()
            if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))]


def evaluate_gates(report: Mapping[str, Any], *, minimums: Mapping[str, float], maximums: Mapping[str, float],
                   better_than: Sequence[str], headline: str) -> dict[str, Any]:
    """{"passed", "checks": [{"metric", "op", "threshold", "value", "passed", "reason"}]}; reason is
    None for a passed check and one sentence for a failed one."""
    if not (minimums or maximums or better_than):
        raise TunelabError("--gate has nothing to check", where="eval.gate",
                           fix="set eval.gate.min, eval.gate.max or eval.gate.better_than")
    metric_names = report_metric_names(report)
    known = metric_names + [name for name in DERIVED_METRICS if name not in metric_names]
    for setting, names in (("eval.gate.min", minimums), ("eval.gate.max", maximums)):
        for name in names:
            if name not in known:
                raise TunelabError(f"unknown gate metric '{name}'", where=setting,
                                   fix=f"use one of: {', '.join(known)}")
    comparisons = report.get("comparisons") or {}
    for name in better_than:
        if name not in comparisons:
            raise TunelabError(f"gate baseline '{name}' was not compared in this evaluation",
                               where="eval.gate.better_than",
                               fix=f"add it to eval.baselines (or --baseline {name}); compared: "
                                   f"{', '.join(comparisons) or 'none'}")
    checks = [threshold_check(report, name, ">=", limit, metric_names) for name, limit in minimums.items()]
    checks += [threshold_check(report, name, "<=", limit, metric_names) for name, limit in maximums.items()]
    checks += [baseline_check(comparisons[name], name, headline) for name in better_than]
    return {"passed": all(check["passed"] for check in checks), "checks": checks}


def metric_value(report: Mapping[str, Any], name: str, metric_names: list[str]) -> tuple[float | None, str | None]:
    if name in metric_names:
        value = report["metrics"][name]
        return value, None if value is not None else f"report.metrics.{name} has no value in this report"
    return DERIVED_METRICS[name](report)


def threshold_check(report, name: str, op: str, threshold: float, metric_names: list[str]) -> dict[str, Any]:
    value, absent = metric_value(report, name, metric_names)
    if absent is None and (value is None or not math.isfinite(value)):
        absent = f"{name} is {value}, not a number"
    if absent is not None:
        return {"metric": name, "op": op, "threshold": threshold, "value": None, "passed": False, "reason": absent}
    passed = value >= threshold if op == ">=" else value <= threshold
    side = "below the minimum" if op == ">=" else "above the maximum"
    return {"metric": name, "op": op, "threshold": threshold, "value": value, "passed": passed,
            "reason": None if passed else f"{name} {value:.4g} is {side} {threshold:.4g}"}


def baseline_check(comparison: Mapping[str, Any], baseline: str, headline: str) -> dict[str, Any]:
    """Passes only on a significant improvement: the interval of the difference excludes zero."""
    result = comparison.get(headline)
    if result is None:
        return {"metric": headline, "op": "better than", "threshold": baseline, "value": None, "passed": False,
                "reason": f"the comparison with {baseline} has no {headline}"}
    passed = result["verdict"] == "better"
    reason = None if passed else (
        f"{headline} vs {baseline}: {result['verdict']} (difference {result['difference']:+.4f}, "
        f"{result.get('confidence', 0.95):.0%} CI {result['ci_low']:+.4f} to {result['ci_high']:+.4f})")
    return {"metric": headline, "op": "better than", "threshold": baseline, "value": result["difference"],
            "passed": passed, "reason": reason}
