"""`tunelab monitor` on a log whose inputs never drift but whose answers got worse, as feedback
shows: the silent-decay alert, the live-quality section of the report, and --fail-on-drift."""
from __future__ import annotations

import json
import random
from pathlib import Path

from cli_helpers import tunelab, write_jsonl

from tunelab.serve.predlog import PredictionLog

WORDS = "good bad service slow quick refund staff price late friendly helpful broken".split()
OFF = ["monitor.content.enabled=false", "monitor.quality.bucket=1m"]


def text(rng) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))


def decaying_log(path: Path, n: int = 300) -> Path:
    """n classifications of inputs drawn as the reference is; the first half's feedback agrees with
    90% of the answers, the second half's with 50%; ratings fall with it."""
    rng = random.Random(3)
    with PredictionLog(path, retention_days=None) as log:
        for i in range(n):
            label = rng.choice(["pos", "neg"])
            log.log({"ts": 1_700_000_000 + i, "request_id": f"r{i}", "endpoint": "/v1/classify", "model_version": "v1",
                     "input": text(rng), "output": label, "label": label, "confidence": 0.9, "status": 200})
            if i % 3 == 0:
                right = rng.random() < (0.9 if i < n // 2 else 0.5)
                log.log_feedback({"request_id": f"r{i}", "label": label if right else ("neg" if label == "pos" else "pos"),
                                  "rating": 1 if right else -1, "annotator": "ops"})
    return path


def test_silent_decay_is_flagged_while_the_inputs_are_stable(tmp_path):
    rng = random.Random(0)
    write_jsonl(tmp_path / "prepared" / "val.jsonl",
                [{"text": text(rng), "label": rng.choice(["pos", "neg"])} for _ in range(300)])
    decaying_log(tmp_path / "predictions.db")
    proc = tunelab("monitor", "--reference", "prepared", "--window", "150", "--fail-on-drift", *OFF,
                   cwd=tmp_path, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "drift: feedback_accuracy, feedback_rating" in proc.stdout
    assert "alert: Silent decay: accuracy on feedback-labelled answers is" in proc.stdout
    report = json.loads((tmp_path / "monitor" / "report.json").read_text())
    inputs = [f for f in report["features"] if f["feature"] in ("input_chars", "input_words", "predicted_label")]
    assert inputs and not any(f["drifted"] for f in inputs)
    accuracy = next(f for f in report["features"] if f["feature"] == "feedback_accuracy")
    assert accuracy["test"] == "Fisher exact" and accuracy["current_n"] == 50 and accuracy["reference_n"] == 50
    q = report["quality"]
    assert q["window"]["labelled"] == 50 and q["earlier"]["accuracy"] > 0.8 > 0.7 > q["window"]["accuracy"]
    # 300 s of traffic from 1_700_000_000 (20 s past a whole minute) touch six 1-minute buckets
    assert len(q["over_time"]) == 6 and sum(b["labelled"] for b in q["over_time"]) == 100
    html = (tmp_path / "monitor" / "report.html").read_text()
    assert "Live quality (feedback)" in html and 'id="quality-over-time"' in html
    assert "Live quality (feedback)" in (tmp_path / "monitor" / "report.md").read_text()


def test_against_the_runs_evaluated_accuracy(tmp_path):
    rng = random.Random(0)
    write_jsonl(tmp_path / "ref.jsonl", [{"text": text(rng), "label": rng.choice(["pos", "neg"])} for _ in range(300)])
    decaying_log(tmp_path / "predictions.db")
    (tmp_path / "report.json").write_text(json.dumps({"metrics": {"accuracy": 0.92}}))
    proc = tunelab("monitor", "--reference", "ref.jsonl", "--window", "150", "monitor.eval_report=report.json",
                   *OFF, cwd=tmp_path)
    assert "against 92.0% in the report.json (accuracy)" in proc.stdout
    report = json.loads((tmp_path / "monitor" / "report.json").read_text())
    assert next(f for f in report["features"] if f["feature"] == "feedback_accuracy")["test"] == "binomial"
