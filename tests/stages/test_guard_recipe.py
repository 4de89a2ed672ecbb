"""The learned guard's recipe end to end, as `make guard` runs it but at reduced size: the console
command `tunelab train examples/guard.yaml` on the repository's guard data (a seeded sample of 160
training prompts, one epoch, 64 tokens), then the guard loads the run it wrote, scores the
validation and held-out prompts, and is measured beside the rules with the same functions that
produced docs/guard.md's figures (which come from the full recipe: see test_guard_classifier.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import tunelab

from tunelab.serve.guard_classifier import GuardClassifier, guard_figures
from tunelab.serve.injection import screen

ROOT = Path(__file__).resolve().parents[2]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.slow  # a real MiniLM fine-tune, however short: about a minute on 2 cores
def test_the_guard_recipe_trains_a_classifier_the_guard_loads(tmp_path):
    run = tmp_path / "guard"
    tunelab("train", ROOT / "examples" / "guard.yaml", f"train.data={ROOT / 'data' / 'guard'}",
            "train.max_train_examples=160", "train.epochs=1", "train.max_length=64", f"train.output_dir={run}",
            cwd=tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    assert (manifest["task"], manifest["method"], manifest["labels"]) == ("classification", "full", ["attack", "benign"])
    guard = GuardClassifier.load(run)
    assert guard.max_length == 64  # the run's training length: longer prompts are scored in windows

    val, held_out = read_jsonl(ROOT / "data" / "guard" / "val.jsonl"), read_jsonl(ROOT / "data" / "guard" / "test.jsonl")
    val_p = np.array(guard.probabilities([r["text"] for r in val]))
    val_attack = np.array([r["label"] == "attack" for r in val])
    assert ((0 <= val_p) & (val_p <= 1)).all()
    assert guard.probability(val[0]["text"]) == pytest.approx(val_p[0], abs=1e-5)  # alone = in a padded batch
    # even this short run separates the classes on prompts it never saw
    assert val_p[val_attack].mean() > val_p[~val_attack].mean()
    figures = guard_figures([r["label"] == "attack" for r in held_out], [screen(r["text"]).flagged for r in held_out],
                            guard.probabilities([r["text"] for r in held_out]), 0.5)
    print(f"\nreduced recipe on held-out at threshold 0.5: {figures}")
    assert figures["both"]["recall"] >= max(figures["rules"]["recall"], figures["classifier"]["recall"])
    assert figures["rules"]["recall"] == 0.55  # docs/guard.md's held-out figure for the rules
