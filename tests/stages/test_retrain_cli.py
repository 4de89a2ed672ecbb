"""`tunelab retrain` end to end on a real shift: the live tiny classifier learnt one set of cue
words; new traffic uses cue words it never saw; newly labelled records of the new kind (a few
of them copies of old records, which must be dropped) give a candidate that the gate shows
better on the new test split and not worse on the old one, registered and promoted. Then the
refusals: a round whose candidate cannot beat the live model, and unusable input."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from cli_helpers import tunelab, write_jsonl
from label_helpers import cue_records, tiny_bert

from tunelab.serve.registry import Registry

pytestmark = pytest.mark.slow
NEW_CUES = {"negative": ["dreadful", "faulty", "rude"], "neutral": ["fine", "ordinary", "standard"],
            "positive": ["superb", "excellent", "wonderful"]}
FAST_EVAL = ["eval.resamples=200", "eval.robustness.perturbations=[]", "eval.latency.batch_sizes=[1]",
             "eval.latency.requests=4"]
TRAIN = ["train.batch_size=16", "train.max_length=32", "train.tracking.backend=none"]


def shifted_records(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(sorted(NEW_CUES))
        words = [rng.choice(NEW_CUES[label])] + rng.sample("the order was item service today really quite".split(), 3)
        words.append(f"w{rng.randint(0, 999)}")
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label, "meta": {"source": "annotation"}})
    return rows


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("retrain")
    write_jsonl(root / "old.jsonl", cue_records(400, seed=0))
    tunelab("data", "prepare", "old.jsonl", "--out", "prepared", "--quiet", cwd=root)
    tiny_bert(root / "base")
    tunelab("train", "--model", "base", "--data", "prepared", "--method", "full", "--task", "classification",
            "--output", "live", "--epochs", "10", "--lr", "1e-3", *TRAIN, cwd=root)
    Registry(root / "registry.json").register(root / "live")
    old_copies = [{**r, "meta": {}} for r in cue_records(400, seed=0)[:4]]
    write_jsonl(root / "labelled" / "classification.jsonl", shifted_records(240, seed=7) + old_copies)
    return root


def test_retrain_on_a_shift_passes_the_gate_and_is_promoted(workspace):
    proc = tunelab("retrain", "labelled/classification.jsonl", "--deploy", "promote", "retrain.train.epochs=6",
                   *FAST_EVAL, cwd=workspace, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gate passed: v2 promoted and live" in proc.stdout
    summary = json.loads((workspace / "retrain" / "summary.json").read_text())
    data = summary["data"]
    assert data["new_duplicates_of_old"] == 4 and data["new"]["test"] > 0
    assert data["replayed"] == round(0.5 * data["old_train"])
    old, new = summary["eval_old"], summary["eval_new"]
    assert old["candidate"] >= old["live"] - 0.01  # not worse by more than 1 point of macro-F1 on the old split
    assert new["candidate"] > new["live"]  # better on the shifted data
    print(f"retrain on the shift: old test macro-F1 live {old['live']:.3f} -> candidate {old['candidate']:.3f}; "
          f"new test live {new['live']:.3f} -> candidate {new['candidate']:.3f}")
    assert summary["gate"]["passed"] and Registry(workspace / "registry.json").live()["version"] == "v2"
    for part in ("candidate/config.yaml", "eval_old/report.json", "eval_new/report.json", "data/train.jsonl",
                 "prepared/manifest.json"):
        assert (workspace / "retrain" / part).is_file(), part
    written = [json.loads(line) for line in (workspace / "retrain" / "data" / "test.jsonl").read_text().splitlines()]
    assert all(any(w in r["text"] for ws in NEW_CUES.values() for w in ws) for r in written)  # only new records


def test_a_candidate_that_cannot_beat_the_live_model_is_registered_not_promoted(workspace):
    write_jsonl(workspace / "same.jsonl", [{**r, "meta": {}} for r in cue_records(200, seed=11)])
    proc = tunelab("retrain", "same.jsonl", "--live", "live", "--deploy", "promote", "--out", "round2",
                   "retrain.train.epochs=1", *FAST_EVAL, cwd=workspace, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "gate FAILED" in proc.stdout and "registered, not deployed" in proc.stdout
    registry = Registry(workspace / "registry.json").load()
    assert registry["live"] == "v2" and registry["versions"][-1]["version"] == "v3"
    assert json.loads((workspace / "round2" / "summary.json").read_text())["gate"]["passed"] is False


def test_unusable_input_stops_with_one_sentence(workspace, tmp_path):
    proc = tunelab("retrain", "--live", workspace / "live", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "no new labelled data given" in proc.stderr and "Traceback" not in proc.stderr
    proc = tunelab("retrain", workspace / "same.jsonl", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "no live model" in proc.stderr
    assert not (tmp_path / "retrain").exists()
