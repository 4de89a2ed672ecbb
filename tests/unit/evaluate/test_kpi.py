"""KPI/cost summary: golden figures, their sources, and what is missing when inputs are not set."""
import pytest

from tunelab.config import CostSettings
from tunelab.evaluate.kpi import kpi_report

TUNED = {"accuracy": 0.9, "macro_f1": 0.85, "per_class": {}}
BASELINES = {"probe": {"accuracy": 0.8, "macro_f1": 0.7, "source": "base"}}
COMPARISONS = {"probe": {"macro_f1": {"difference": 0.15, "ci_low": 0.1, "ci_high": 0.2, "confidence": 0.95,
                                      "resamples": 1000, "verdict": "better"}}}


def timing(p50, rates, device="cpu: test machine", tokens=None):
    return {"device": device, "by_batch_size": {
        size: {"p50_ms": p50 * int(size), "p95_ms": p50 * int(size) * 1.5, "p99_ms": p50 * int(size) * 2,
               "requests_per_s": rate, "tokens_per_s": tokens, "samples_ms": [p50]}
        for size, rate in rates.items()}}


def report(cost=None, latency=None, baseline_latency=None, training_seconds=None, tokens=None):
    return kpi_report(headline="macro_f1", tuned=TUNED, baselines=BASELINES, comparisons=COMPARISONS,
                      latency=latency, baseline_latency=baseline_latency,
                      cost=CostSettings(**(cost or {})).model_dump(), training_seconds=training_seconds,
                      measured_tokens_per_request=tokens)


def test_quality_figures_name_their_report_keys():
    quality = report()["quality"]
    assert quality == {
        "metric": "macro_f1",
        "tuned": {"value": 0.85, "source": "report.metrics.macro_f1"},
        "baselines": {"probe": {"value": 0.7, "source": "report.baselines.probe.macro_f1"}},
        "differences": {"probe": {"value": 0.15, "source": "report.comparisons.probe.macro_f1",
                                  "ci_low": 0.1, "ci_high": 0.2, "verdict": "better"}}}


def test_full_cost_golden_values():
    cost = report(cost={"gpu_hour_usd": 2.0, "api_usd_per_1k_tokens": 0.002, "monthly_requests": 9_000_000},
                  latency=timing(10.0, {"1": 90.0, "8": 400.0, "32": 500.0}), training_seconds=5400, tokens=250.0)["cost"]
    assert cost["inputs"]["training_hours"] == {"value": 1.5, "source": "run manifest training time"}
    assert cost["inputs"]["tokens_per_request"]["source"] == "measured: mean tokens per test request"
    assert cost["inputs"]["requests_per_s"] == {"value": 500.0, "source": "measured: throughput at batch 32"}
    assert cost["inputs"]["gpu_hour_usd"] == {"value": 2.0, "source": "config eval.cost.gpu_hour_usd"}
    assert cost["training_usd"]["value"] == pytest.approx(3.0)
    assert cost["monthly_self_hosted_usd"]["value"] == pytest.approx(10.0)  # 9M / 500 per s = 5 busy hours
    assert cost["monthly_api_usd"]["value"] == pytest.approx(4500.0)  # 9M x 250 tokens x $0.002/1k
    assert cost["monthly_saving_usd"]["value"] == pytest.approx(4490.0)
    assert cost["payback_months"]["value"] == pytest.approx(3.0 / 4490.0)
    assert cost["missing"] == [] and cost["omitted"] == {}
    assert all(isinstance(f["source"], str) and f["source"] for name, f in cost.items()
               if name not in ("inputs", "missing", "omitted"))


def test_configured_values_take_precedence_over_measured_ones():
    cost = report(cost={"gpu_hour_usd": 4.0, "training_hours": 2.0, "tokens_per_request": 100.0,
                        "api_usd_per_1k_tokens": 0.01, "monthly_requests": 1000},
                  latency=timing(10.0, {"1": 100.0}), training_seconds=99_999, tokens=250.0)["cost"]
    assert cost["inputs"]["training_hours"] == {"value": 2.0, "source": "config eval.cost.training_hours"}
    assert cost["inputs"]["tokens_per_request"]["source"] == "config eval.cost.tokens_per_request"
    assert cost["training_usd"]["value"] == pytest.approx(8.0)
    assert cost["monthly_api_usd"]["value"] == pytest.approx(1.0)
    assert cost["monthly_self_hosted_usd"]["value"] == pytest.approx(1000 / 100 / 3600 * 4.0)


def test_missing_inputs_omit_figures_and_name_the_config_keys():
    cost = report(cost={"gpu_hour_usd": 2.0})["cost"]
    for name in ("training_usd", "monthly_self_hosted_usd", "monthly_api_usd", "monthly_saving_usd", "payback_months"):
        assert name not in cost
    assert cost["missing"] == ["eval.cost.training_hours", "eval.cost.monthly_requests", "eval.latency.batch_sizes",
                               "eval.cost.tokens_per_request", "eval.cost.api_usd_per_1k_tokens"]
    assert cost["omitted"]["training_usd"] == "needs eval.cost.training_hours"
    assert cost["omitted"]["monthly_api_usd"] == ("needs eval.cost.monthly_requests, eval.cost.tokens_per_request, "
                                                  "eval.cost.api_usd_per_1k_tokens")
    assert cost["omitted"]["payback_months"] == ("needs eval.cost.training_hours, eval.cost.monthly_requests, "
                                                 "eval.cost.tokens_per_request, eval.cost.api_usd_per_1k_tokens, "
                                                 "eval.latency.batch_sizes")
    with_time = report(cost={"gpu_hour_usd": 2.0}, training_seconds=3600)["cost"]
    assert with_time["training_usd"]["value"] == 2.0 and "eval.cost.training_hours" not in with_time["missing"]


def test_no_saving_means_no_payback_with_a_reason():
    cost = report(cost={"gpu_hour_usd": 100.0, "api_usd_per_1k_tokens": 0.0001, "monthly_requests": 3600},
                  latency=timing(10.0, {"1": 1.0}), training_seconds=3600, tokens=10.0)["cost"]
    assert cost["monthly_self_hosted_usd"]["value"] == pytest.approx(100.0)
    assert cost["monthly_saving_usd"]["value"] < 0
    assert cost["payback_months"]["value"] is None
    assert "never paid back" in cost["payback_months"]["reason"]


def test_no_cost_settings_gives_no_cost_section():
    assert report(latency=timing(10.0, {"1": 100.0}), training_seconds=3600, tokens=5.0)["cost"] is None


def test_latency_figures_at_batch_one_and_best_throughput():
    latency = report(latency=timing(10.0, {"1": 90.0, "8": 400.0, "32": 380.0}, tokens=1234.0))["latency"]
    assert latency["p50_ms"] == {"value": 10.0, "source": "measured: latency at batch 1 on cpu: test machine"}
    assert latency["p99_ms"]["value"] == 20.0 and latency["p95_ms"]["value"] == 15.0
    assert latency["requests_per_s"] == {"value": 400.0, "source": "measured: throughput at batch 8 on cpu: test machine"}
    assert latency["tokens_per_s"]["value"] == 1234.0
    assert "baseline" not in latency


def test_latency_against_a_baseline_and_without_batch_one():
    latency = report(latency=timing(10.0, {"8": 400.0, "32": 500.0}),
                     baseline_latency=timing(40.0, {"1": 25.0, "8": 100.0}, device="cpu: same"))["latency"]
    assert latency["p50_ms"] == {"value": 80.0, "source": "measured: latency at batch 8 on cpu: test machine"}
    assert latency["baseline"]["p50_ms"]["value"] == 40.0
    assert latency["baseline"]["requests_per_s"]["source"] == "measured: baseline throughput at batch 8 on cpu: same"
    assert latency["p50_ratio"]["value"] == pytest.approx(2.0)
    assert latency["requests_per_s_ratio"]["value"] == pytest.approx(5.0)
    assert "tokens_per_s" not in latency


def test_latency_not_measured_names_the_setting():
    assert report()["latency"] == {"missing": ["eval.latency.batch_sizes"]}
