"""Deploy gate: thresholds on report and derived metrics, baselines to beat, and no silent pass."""
import copy

import pytest

from tunelab.errors import TunelabError
from tunelab.evaluate.gate import DERIVED_METRICS, evaluate_gates

REPORT = {
    "task": "classification",
    "metrics": {"accuracy": 0.9, "macro_f1": 0.85, "mcc": 0.7, "ece": 0.04, "brier": 0.1, "examples": 200,
                "per_class": {"pos": {"f1": 0.9}}, "confusion_matrix": [[90, 10], [10, 90]]},
    "comparisons": {
        "probe": {"macro_f1": {"difference": 0.12, "ci_low": 0.05, "ci_high": 0.19, "confidence": 0.95,
                               "resamples": 1000, "verdict": "better"}},
        "base": {"macro_f1": {"difference": 0.01, "ci_low": -0.03, "ci_high": 0.05, "confidence": 0.95,
                              "resamples": 1000, "verdict": "no significant difference"}}},
    "latency": {"device": "cpu", "by_batch_size": {
        "1": {"p50_ms": 12.0, "p95_ms": 20.0, "p99_ms": 31.0, "requests_per_s": 80.0},
        "8": {"p50_ms": 40.0, "p95_ms": 50.0, "p99_ms": 60.0, "requests_per_s": 190.0}}},
    "robustness": {"metric": "macro_f1", "original": 0.85, "examples": 200, "perturbations": {
        "typos": {"score": 0.78, "flip_rate": 0.12, "flipped": 21, "originally_correct": 180},
        "casing": {"score": 0.84, "flip_rate": 0.02, "flipped": 4, "originally_correct": 180}}},
    "fairness": {"max_gap": 0.06, "threshold": 0.03, "flagged": True},
    "forgetting": None,
    "overfitting": {"train_loss": 0.3, "eval_loss": 0.45, "gap": 0.15, "flagged": False},
}


def gate(report=REPORT, minimums=None, maximums=None, better_than=(), headline="macro_f1"):
    return evaluate_gates(report, minimums=minimums or {}, maximums=maximums or {}, better_than=list(better_than),
                          headline=headline)


def test_all_checks_passing_with_their_values():
    result = gate(minimums={"macro_f1": 0.8, "robust_score": 0.75, "requests_per_s": 150},
                  maximums={"ece": 0.05, "p99_latency_ms": 50, "p50_latency_ms": 12.0, "flip_rate": 0.15,
                            "eval_gap": 0.2},
                  better_than=["probe"])
    assert result["passed"] is True
    values = {(c["metric"], c["op"]): c["value"] for c in result["checks"]}
    assert values == {("macro_f1", ">="): 0.85, ("robust_score", ">="): 0.78, ("requests_per_s", ">="): 190.0,
                      ("ece", "<="): 0.04, ("p99_latency_ms", "<="): 31.0, ("p50_latency_ms", "<="): 12.0,
                      ("flip_rate", "<="): 0.12, ("eval_gap", "<="): 0.15, ("macro_f1", "better than"): 0.12}
    assert all(c["passed"] and c["reason"] is None for c in result["checks"])
    assert result["checks"][-1]["threshold"] == "probe"


def test_a_floor_or_ceiling_crossed_fails_the_gate_with_a_reason():
    result = gate(minimums={"macro_f1": 0.9, "accuracy": 0.8}, maximums={"fairness_gap": 0.03, "p95_latency_ms": 25})
    assert result["passed"] is False
    failed = {c["metric"]: c for c in result["checks"] if not c["passed"]}
    assert set(failed) == {"macro_f1", "fairness_gap"}
    assert failed["macro_f1"]["reason"] == "macro_f1 0.85 is below the minimum 0.9"
    assert failed["fairness_gap"] == {"metric": "fairness_gap", "op": "<=", "threshold": 0.03, "value": 0.06,
                                      "passed": False, "reason": "fairness_gap 0.06 is above the maximum 0.03"}


def test_better_than_needs_a_significant_improvement():
    result = gate(better_than=["probe", "base"])
    assert [c["passed"] for c in result["checks"]] == [True, False]
    assert result["passed"] is False
    assert "no significant difference" in result["checks"][1]["reason"]
    assert "95% CI -0.0300 to +0.0500" in result["checks"][1]["reason"]


def test_an_absent_section_is_a_failed_check_never_a_silent_pass():
    report = copy.deepcopy(REPORT)
    report["latency"]["by_batch_size"].pop("1")
    report["robustness"] = None
    result = gate(report, minimums={"retention": 0.9, "robust_score": 0.5}, maximums={"p99_latency_ms": 100})
    assert result["passed"] is False
    reasons = {c["metric"]: c["reason"] for c in result["checks"]}
    assert all(c["value"] is None and not c["passed"] for c in result["checks"])
    assert "eval.forgetting.data" in reasons["retention"]
    assert "eval.robustness.perturbations" in reasons["robust_score"]
    assert "batch size 1" in reasons["p99_latency_ms"]


def test_a_metric_without_a_value_fails():
    report = copy.deepcopy(REPORT)
    report["metrics"]["mcc"] = None
    report["metrics"]["brier"] = float("nan")
    report["robustness"]["perturbations"] = {"typos": {"score": 0.5, "flip_rate": None, "flipped": 0,
                                                       "originally_correct": 0}}
    result = gate(report, minimums={"mcc": 0.5, "robust_score": 0.4}, maximums={"brier": 0.2, "flip_rate": 0.1})
    by_metric = {c["metric"]: c for c in result["checks"]}
    assert by_metric["robust_score"]["passed"] is True
    for name in ("mcc", "brier", "flip_rate"):
        assert by_metric[name]["passed"] is False and by_metric[name]["value"] is None and by_metric[name]["reason"]
    assert result["passed"] is False


def test_unknown_metric_is_a_user_error_listing_the_valid_names():
    with pytest.raises(TunelabError) as error:
        gate(minimums={"macro_f2": 0.5})
    message = str(error.value)
    assert "macro_f2" in message and "eval.gate.min" in message
    assert "macro_f1" in message and all(name in message for name in DERIVED_METRICS)
    with pytest.raises(TunelabError, match="per_class"):
        gate(maximums={"per_class": 1})  # not a scalar metric


def test_unknown_baseline_is_a_user_error_naming_the_compared_ones():
    with pytest.raises(TunelabError) as error:
        gate(better_than=["gpt"])
    assert "'gpt'" in str(error.value) and "probe, base" in str(error.value)


def test_a_gate_with_nothing_to_check_is_refused():
    with pytest.raises(TunelabError, match="nothing to check"):
        gate()
