"""`tunelab models shadow | canary | compare` as a user runs them: the registry changes they make,
the comparison they print and write, and the bad input that stops with one sentence (exit 2,
nothing written)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from cli_helpers import tunelab

from tunelab.serve.predlog import PredictionLog
from tunelab.serve.registry import Registry

pytestmark = pytest.mark.slow  # a dozen CLI starts: about a minute on 2 shared cores


def fake_run(path: Path) -> Path:
    """A run directory as the registry reads it (a generative run's config and manifest)."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"train": {"data": "data.jsonl"}}))
    (path / "manifest.json").write_text(json.dumps({"stage": "train", "task": "sft"}))
    return path


def registry_of_two(root: Path) -> Registry:
    registry = Registry(root / "registry.json")
    registry.register(fake_run(root / "runs" / "a"))
    registry.register(fake_run(root / "runs" / "b"))
    return registry


def test_shadow_and_canary_switch_in_the_registry_and_show_in_the_list(tmp_path):
    registry = registry_of_two(tmp_path)
    assert "v2 is the shadow" in tunelab("models", "shadow", "v2", cwd=tmp_path).stdout
    assert "v2 is the canary for 25% of the traffic" in tunelab("models", "canary", "v2", "--share", "0.25",
                                                                 cwd=tmp_path).stdout
    assert "shadow: v2; canary: v2 (25%)" in tunelab("models", "list", cwd=tmp_path).stdout
    assert "shadow off" in tunelab("models", "shadow", "--off", cwd=tmp_path).stdout
    data = registry.load()
    assert data["shadow"] is None and data["canary"]["version"] == "v2" and data["canary"]["share"] == 0.25


def test_compare_prints_and_writes_the_comparison(tmp_path):
    registry_of_two(tmp_path)
    tunelab("models", "shadow", "v2", cwd=tmp_path)
    with PredictionLog(tmp_path / "predictions.db", retention_days=None) as log:
        for i in range(40):  # the live model right on half, the shadow on all; feedback gives the truth
            truth = "pos" if i % 2 else "neg"
            common = {"ts": 1_700_000_000 + i, "request_id": f"r{i}", "endpoint": "/v1/classify", "status": 200,
                      "outcome": "answered", "input": f"text {i}"}
            log.log({**common, "model_version": "v1", "role": "live", "label": "pos", "output": "pos",
                     "latency_ms": 10.0 + i % 5})
            log.log({**common, "model_version": "v2", "role": "shadow", "label": truth, "output": truth,
                     "latency_ms": 12.0})
            log.log_feedback({"request_id": f"r{i}", "label": truth, "annotator": "kim"})
    proc = tunelab("models", "compare", "--resamples", "200", cwd=tmp_path)
    assert "agreement with live: 50.0% of 40 requests both answered" in proc.stdout
    assert "recommendation: promote: v2 is better: macro_f1 1.000 vs live 0.333" in proc.stdout
    result = json.loads((tmp_path / "compare.json").read_text())
    assert result["quality"]["labelled"] == 40 and result["quality"]["comparison"]["verdict"] == "better"
    assert result["live"]["latency_ms"]["p50"] == 12.0 and result["candidate"]["latency_ms"]["p99"] == 12.0
    assert result["recommendation"]["action"] == "promote"


def test_bad_input_stops_with_one_sentence(tmp_path):
    registry_of_two(tmp_path)
    cases = [
        (("models", "shadow", "v9"), "unknown model version 'v9' (registered: v1, v2)"),
        (("models", "shadow", "v1"), "v1 is the live version; a shadow is a candidate beside it"),
        (("models", "canary", "v2", "--share", "1.5"), "the canary share must be above 0 and at most 1, got 1.5"),
        (("models", "canary"), "no version given to run as the canary"),
        (("models", "compare"), "nothing to compare: no shadow or canary version"),
        (("models", "compare", "--candidate", "v2"), "prediction log not found"),
    ]
    for args, sentence in cases:
        proc = tunelab(*args, cwd=tmp_path, check=False)
        assert proc.returncode == 2 and sentence in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
    PredictionLog(tmp_path / "predictions.db").close()
    proc = tunelab("models", "compare", "--candidate", "v2", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "holds no shadow or canary answers of v2" in proc.stderr
    assert not (tmp_path / "compare.json").exists()
