"""monitor.run on synthetic traffic written through the server's PredictionLog: stable traffic
raises nothing, shifted traffic is caught feature by feature, tiny logs say so, and a rollback
moves the registry's live version."""
from __future__ import annotations

import json

import pytest

from monitor_logs import run_monitor, classification_rows, reference_records, run_dir, write_jsonl, write_log
from tunelab.errors import TunelabError
from tunelab.monitor import run as monitor
from tunelab.serve.registry import Registry

SETTINGS = dict(window=200, psi_threshold=0.2, p_value=0.01, min_confidence_drop=0.1, rollback=False, registry=None)


def by_name(report):
    return {f["feature"]: f for f in report["features"]}


@pytest.fixture
def reference(tmp_path):
    return write_jsonl(tmp_path / "prepared" / "val.jsonl", reference_records(300))


def test_stable_traffic_does_not_drift(tmp_path, reference):
    log = write_log(tmp_path / "p.db", classification_rows(200, seed=1))
    result = run_monitor(log, reference.parent, out_dir=tmp_path / "out", **SETTINGS)
    features = by_name(result.report)
    assert result.drifted is False and result.report["alerts"] == []
    assert {"input_chars", "input_words", "pii", "predicted_label", "error_rate"} <= features.keys()
    assert all(f["p_value"] is not None for n, f in features.items() if n in ("input_chars", "predicted_label"))
    assert result.report["rollback"] is None and result.report["notes"] == []
    # no eval report and no earlier traffic: the confidence has nothing to be compared with, and says so
    assert features["confidence"]["p_value"] is None and "no evaluation report" in features["confidence"]["reason"]
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {"window", "reference", "features", "drifted", "alerts", "rollback"} <= saved.keys()
    assert saved["window"]["predictions"] == 200 and saved["reference"]["records"] == 300


def test_shifted_traffic_drifts_feature_by_feature(tmp_path, reference):
    runs = run_dir(tmp_path / "runs" / "sentiment", reference.parent, mean_confidence=0.9)
    log = write_log(tmp_path / "p.db", classification_rows(200, seed=2, words=(30, 60), pos_share=0.1,
                                                           confidence=0.65, version=str(runs)))
    result = run_monitor(log, None, out_dir=tmp_path / "out", **SETTINGS)
    features = by_name(result.report)
    assert result.drifted is True
    for name in ("input_chars", "input_words", "predicted_label", "confidence"):
        assert features[name]["drifted"] is True, features[name]["reason"]
    assert features["pii"]["drifted"] is False and features["error_rate"]["drifted"] is False
    # the reference came from the run that served the traffic, its confidence from its eval report
    assert str(runs) in result.report["reference"]["source"]
    assert features["confidence"]["reference_mean"] == pytest.approx(0.9)
    assert "eval" in features["confidence"]["reference_source"]
    assert any(a.startswith("Mean confidence fell from 0.900") for a in result.report["alerts"])
    assert len(result.report["alerts"]) == sum(f["drifted"] for f in result.report["features"])


def test_earlier_traffic_is_the_reference_for_confidence_and_outcomes(tmp_path, reference):
    log = write_log(tmp_path / "p.db", classification_rows(200, seed=3),
                    classification_rows(200, seed=4, confidence=0.6, blocked_share=0.3))
    result = run_monitor(log, reference, out_dir=tmp_path / "out", **SETTINGS)
    features = by_name(result.report)
    assert result.report["window"]["earlier_predictions"] == 200
    assert features["confidence"]["drifted"] is True and features["confidence"]["reference_source"] == "earlier traffic"
    assert features["outcome"]["drifted"] is True and features["outcome"]["current_shares"]["blocked"] > 0.2


def test_a_tiny_log_says_so_instead_of_testing(tmp_path, reference):
    log = write_log(tmp_path / "p.db", classification_rows(5, seed=5))
    result = run_monitor(log, reference, out_dir=tmp_path / "out", **SETTINGS)
    assert result.drifted is False
    assert "Only 5 predictions" in result.report["notes"][0]
    assert all(f["p_value"] is None for f in result.report["features"] if f["feature"] != "error_rate")
    assert "5 values in the current window" in by_name(result.report)["input_chars"]["reason"]


def test_errors_are_caught_even_in_a_tiny_log(tmp_path, reference):
    log = write_log(tmp_path / "p.db", classification_rows(5, seed=6, status=500))
    result = run_monitor(log, reference, out_dir=tmp_path / "out", **SETTINGS)
    assert result.drifted is True and by_name(result.report)["error_rate"]["drifted"] is True
    assert result.report["alerts"] == ["Error rate is 100.0% of 5 requests, above the allowed 5.0% (p=3.1e-07)."]


def test_drift_rolls_the_registry_back(tmp_path, reference):
    registry = Registry(tmp_path / "registry.json")
    first = registry.register(run_dir(tmp_path / "runs" / "a", reference.parent))
    second = registry.register(run_dir(tmp_path / "runs" / "b", reference.parent))
    registry.promote(second["version"])
    log = write_log(tmp_path / "p.db", classification_rows(200, seed=7, words=(30, 60), version=second["version"]))
    result = run_monitor(log, None, out_dir=tmp_path / "out", **{**SETTINGS, "rollback": True,
                                                                 "registry": registry.path})
    assert result.drifted is True
    assert result.report["rollback"] == {"from": second["version"], "to": first["version"], "path": first["path"],
                                         "error": None}
    assert registry.live()["version"] == first["version"]
    assert "Rolled back from v2 to v1" in (tmp_path / "out" / "report.md").read_text()


def test_no_drift_leaves_the_registry_alone(tmp_path, reference):
    registry = Registry(tmp_path / "registry.json")
    registry.register(run_dir(tmp_path / "runs" / "a", reference.parent))
    second = registry.register(run_dir(tmp_path / "runs" / "b", reference.parent))
    registry.promote(second["version"])
    log = write_log(tmp_path / "p.db", classification_rows(200, seed=8, version=second["version"]))
    result = run_monitor(log, None, out_dir=tmp_path / "out", **{**SETTINGS, "rollback": True,
                                                                 "registry": registry.path})
    assert result.drifted is False and result.report["rollback"] is None
    assert registry.live()["version"] == second["version"]


def test_a_rollback_with_nowhere_to_go_is_reported_not_raised(tmp_path, reference):
    registry = Registry(tmp_path / "registry.json")
    only = registry.register(run_dir(tmp_path / "runs" / "a", reference.parent))
    log = write_log(tmp_path / "p.db", classification_rows(200, seed=9, words=(30, 60), version=only["version"]))
    result = run_monitor(log, None, out_dir=tmp_path / "out", **{**SETTINGS, "rollback": True,
                                                                 "registry": registry.path})
    assert result.report["rollback"]["to"] is None and "no earlier live version" in result.report["rollback"]["error"]
    assert registry.live()["version"] == only["version"]


def test_html_report_escapes_logged_text(tmp_path, reference):
    rows = classification_rows(40, seed=10)
    for row in rows:
        row["label"] = row["output"] = "<script>alert(1)</script>"
    log = write_log(tmp_path / "p.db", rows)
    run_monitor(log, reference, out_dir=tmp_path / "out", **SETTINGS)
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.count("<svg") >= 6  # reference and current charts for lengths, PII and labels


def test_unusable_inputs_are_one_sentence_errors(tmp_path, reference):
    with pytest.raises(TunelabError, match="prediction log not found"):
        run_monitor(tmp_path / "missing.db", reference, out_dir=tmp_path / "out", **SETTINGS)
    empty = write_log(tmp_path / "empty.db")
    with pytest.raises(TunelabError, match="holds no predictions"):
        run_monitor(empty, reference, out_dir=tmp_path / "out", **SETTINGS)
    log = write_log(tmp_path / "p.db", classification_rows(20, seed=11, version="unknown"))
    with pytest.raises(TunelabError, match="no reference data"):
        run_monitor(log, None, out_dir=tmp_path / "out", **SETTINGS)


def test_an_eval_report_elsewhere_gives_the_reference_confidence(tmp_path, reference):
    elsewhere = run_dir(tmp_path / "evaluated", reference.parent, mean_confidence=0.95) / "eval" / "report.json"
    log = write_log(tmp_path / "p.db", classification_rows(100, seed=12, confidence=0.9))
    result = run_monitor(log, reference, out_dir=tmp_path / "out", eval_report=elsewhere, **SETTINGS)
    confidence = by_name(result.report)["confidence"]
    assert confidence["reference_mean"] == pytest.approx(0.95) and confidence["drifted"] is False
    with pytest.raises(TunelabError, match="evaluation report not found"):
        run_monitor(log, reference, out_dir=tmp_path / "out", eval_report=tmp_path / "none.json", **SETTINGS)


def test_a_large_reference_is_measured_on_a_seeded_sample(tmp_path, monkeypatch):
    monkeypatch.setattr(monitor, "REFERENCE_SAMPLE", 100)
    reference = write_jsonl(tmp_path / "ref.jsonl", reference_records(250))
    log = write_log(tmp_path / "p.db", classification_rows(60, seed=13))
    first = run_monitor(log, reference, out_dir=tmp_path / "a", **SETTINGS).report
    second = run_monitor(log, reference, out_dir=tmp_path / "b", **SETTINGS).report
    assert first["reference"]["records"] == 250 and first["reference"]["sampled"] == 100
    assert by_name(first)["input_chars"]["reference_n"] == 100
    assert first["features"] == second["features"]

