"""KPI and cost summary: the few figures a decision needs (quality, latency, money), each as
{"value": x, "source": "..."} so a reader can trace it to a measurement or a configured price.

Cost model (eval.cost; every price is the user's, nothing is assumed):
- training cost = training hours x gpu_hour_usd (hours: eval.cost.training_hours, else the run
  manifest's training wall time);
- monthly self-hosted cost = monthly_requests / requests per second at the best measured batch
  size / 3600 x gpu_hour_usd: the machine hours the requests keep busy, i.e. a fully used server
  (idle time and redundancy come on top);
- monthly API cost = monthly_requests x tokens_per_request / 1000 x api_usd_per_1k_tokens;
- monthly saving = API cost - self-hosted cost; payback months = training cost / saving.
A figure whose inputs are not set is left out and its config keys are listed under "missing".
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

COST_KEYS = ("gpu_hour_usd", "training_hours", "api_usd_per_1k_tokens", "tokens_per_request", "monthly_requests")
LATENCY_KEY = "eval.latency.batch_sizes"


def figure(value: Any, source: str, **extra: Any) -> dict[str, Any]:
    return {"value": value, "source": source, **extra}


def kpi_report(*, headline: str, tuned: Mapping[str, Any], baselines: Mapping[str, Mapping[str, Any]],
               comparisons: Mapping[str, Mapping[str, Mapping[str, Any]]], latency: Mapping[str, Any] | None,
               baseline_latency: Mapping[str, Any] | None, cost: Mapping[str, Any],
               training_seconds: float | None, measured_tokens_per_request: float | None) -> dict[str, Any]:
    """The report's kpi section: {"quality", "latency", "cost"}; cost is None when no
    eval.cost setting is given at all."""
    throughput = best_throughput(latency)
    return {"quality": quality_figures(headline, tuned, baselines, comparisons),
            "latency": latency_figures(latency, baseline_latency),
            "cost": cost_figures(cost, throughput, training_seconds, measured_tokens_per_request)}


def quality_figures(headline, tuned, baselines, comparisons) -> dict[str, Any]:
    section: dict[str, Any] = {"metric": headline,
                               "tuned": figure(tuned.get(headline), f"report.metrics.{headline}"),
                               "baselines": {}, "differences": {}}
    for name, scores in baselines.items():
        if scores.get(headline) is not None:
            section["baselines"][name] = figure(scores[headline], f"report.baselines.{name}.{headline}")
    for name, comparison in comparisons.items():
        c = comparison.get(headline)
        if c is not None:
            section["differences"][name] = figure(c["difference"], f"report.comparisons.{name}.{headline}",
                                                  ci_low=c["ci_low"], ci_high=c["ci_high"], verdict=c["verdict"])
    return section


def single_request_batch(latency: Mapping[str, Any]) -> str | None:
    """Batch size 1 when measured (one request at a time: what a user waits), else the smallest."""
    sizes = latency.get("by_batch_size") or {}
    return "1" if "1" in sizes else min(sizes, key=int, default=None)


def best_throughput(latency: Mapping[str, Any] | None) -> tuple[float, str] | None:
    """(requests per second, batch size) at the batch size with the highest throughput."""
    if not latency:
        return None
    measured = [(row["requests_per_s"], size) for size, row in (latency.get("by_batch_size") or {}).items()
                if row.get("requests_per_s")]
    return max(measured, default=None)


def latency_figures(latency, baseline_latency) -> dict[str, Any]:
    if not latency or single_request_batch(latency) is None:
        return {"missing": [LATENCY_KEY]}
    section = measured_latency(latency, "")
    if baseline_latency and single_request_batch(baseline_latency) is not None:
        section["baseline"] = measured_latency(baseline_latency, "baseline ")
        tuned_p50, base_p50 = section["p50_ms"]["value"], section["baseline"]["p50_ms"]["value"]
        if base_p50:
            section["p50_ratio"] = figure(tuned_p50 / base_p50, "tuned p50_ms / baseline p50_ms (below 1: faster)")
        if "requests_per_s" in section and "requests_per_s" in section["baseline"]:
            section["requests_per_s_ratio"] = figure(
                section["requests_per_s"]["value"] / section["baseline"]["requests_per_s"]["value"],
                "tuned requests_per_s / baseline requests_per_s (above 1: more throughput)")
    return section


def measured_latency(latency: Mapping[str, Any], who: str) -> dict[str, Any]:
    device = latency.get("device") or "unknown device"
    size = single_request_batch(latency)
    row = latency["by_batch_size"][size]
    section = {f"{q}_ms": figure(row[f"{q}_ms"], f"measured: {who}latency at batch {size} on {device}")
               for q in ("p50", "p95", "p99")}
    best = best_throughput(latency)
    if best:
        rate, best_size = best
        section["requests_per_s"] = figure(rate, f"measured: {who}throughput at batch {best_size} on {device}")
        tokens = latency["by_batch_size"][best_size].get("tokens_per_s")
        if tokens is not None:
            section["tokens_per_s"] = figure(tokens, f"measured: {who}tokens per second at batch {best_size}")
    return section


def cost_figures(cost: Mapping[str, Any], throughput: tuple[float, str] | None, training_seconds: float | None,
                 measured_tokens_per_request: float | None) -> dict[str, Any] | None:
    if all(cost.get(key) is None for key in COST_KEYS):
        return None
    inputs = cost_inputs(cost, throughput, training_seconds, measured_tokens_per_request)
    value = {name: f["value"] for name, f in inputs.items()}
    section: dict[str, Any] = {"inputs": inputs}
    omitted: dict[str, list[str]] = {}

    def compute(name: str, needs: dict[str, str], formula, source: str) -> None:
        lacking = [key for input_name, key in needs.items() if value.get(input_name) is None]
        if lacking:
            omitted[name] = lacking
        else:
            section[name] = figure(formula(), source)
            value[name] = section[name]["value"]

    compute("training_usd", {"training_hours": "eval.cost.training_hours", "gpu_hour_usd": "eval.cost.gpu_hour_usd"},
            lambda: value["training_hours"] * value["gpu_hour_usd"], "training_hours x gpu_hour_usd")
    compute("monthly_self_hosted_usd",
            {"monthly_requests": "eval.cost.monthly_requests", "requests_per_s": LATENCY_KEY,
             "gpu_hour_usd": "eval.cost.gpu_hour_usd"},
            lambda: value["monthly_requests"] / value["requests_per_s"] / 3600 * value["gpu_hour_usd"],
            "monthly_requests / requests_per_s / 3600 x gpu_hour_usd (busy machine hours, fully used server)")
    compute("monthly_api_usd",
            {"monthly_requests": "eval.cost.monthly_requests", "tokens_per_request": "eval.cost.tokens_per_request",
             "api_usd_per_1k_tokens": "eval.cost.api_usd_per_1k_tokens"},
            lambda: value["monthly_requests"] * value["tokens_per_request"] / 1000 * value["api_usd_per_1k_tokens"],
            "monthly_requests x tokens_per_request / 1000 x api_usd_per_1k_tokens")
    # the two derived figures inherit the inputs their operands lack
    if "monthly_api_usd" in section and "monthly_self_hosted_usd" in section:
        section["monthly_saving_usd"] = figure(value["monthly_api_usd"] - value["monthly_self_hosted_usd"],
                                               "monthly_api_usd - monthly_self_hosted_usd")
    else:
        omitted["monthly_saving_usd"] = inherited(omitted, "monthly_api_usd", "monthly_self_hosted_usd")
    if "monthly_saving_usd" in section and "training_usd" in section:
        section["payback_months"] = payback(value["training_usd"], section["monthly_saving_usd"]["value"])
    else:
        omitted["payback_months"] = inherited(omitted, "training_usd", "monthly_saving_usd")
    section["missing"] = list(dict.fromkeys(key for keys in omitted.values() for key in keys))
    section["omitted"] = {name: "needs " + ", ".join(keys) for name, keys in omitted.items()}
    return section


def inherited(omitted: dict[str, list[str]], *names: str) -> list[str]:
    return list(dict.fromkeys(key for name in names for key in omitted.get(name, [])))


def cost_inputs(cost, throughput, training_seconds, measured_tokens_per_request) -> dict[str, dict[str, Any]]:
    """Each input with where it came from: the config first, a measurement otherwise."""
    inputs = {}
    for key in ("gpu_hour_usd", "api_usd_per_1k_tokens", "monthly_requests"):
        if cost.get(key) is not None:
            inputs[key] = figure(cost[key], f"config eval.cost.{key}")
    if cost.get("training_hours") is not None:
        inputs["training_hours"] = figure(cost["training_hours"], "config eval.cost.training_hours")
    elif training_seconds is not None:
        inputs["training_hours"] = figure(training_seconds / 3600, "run manifest training time")
    if cost.get("tokens_per_request") is not None:
        inputs["tokens_per_request"] = figure(cost["tokens_per_request"], "config eval.cost.tokens_per_request")
    elif measured_tokens_per_request is not None:
        inputs["tokens_per_request"] = figure(measured_tokens_per_request, "measured: mean tokens per test request")
    if throughput is not None:
        rate, size = throughput
        inputs["requests_per_s"] = figure(rate, f"measured: throughput at batch {size}")
    return inputs


def payback(training_usd: float, saving: float) -> dict[str, Any]:
    source = "training_usd / monthly_saving_usd"
    if saving <= 0 or not math.isfinite(saving):
        return figure(None, source, reason=f"self-hosting saves nothing per month ({saving:+.2f} USD against the "
                                           "API), so the training cost is never paid back")
    return figure(training_usd / saving, source)
