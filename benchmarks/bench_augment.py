"""Claim under test: "few examples are enough with augmentation". A learning curve on the embedded
sentiment corpus (example:sentiment, 3 labels) with the embedded MiniLM encoder (default): at 64,
256 and 1,000 labelled training examples, a full fine-tune on the examples alone against the
same examples plus `tunelab data augment`'s rule-based variants (default edits, 2 variants per
record), 3 seeds each (each seed draws its own labelled sample, used by both arms).

Every arm is scored on one fixed, seeded sample of 1,000 examples of the prepared test split.
Reported per cell: mean macro-F1 over the seeds with a 95% interval from a bootstrap over the
test examples (the seed-mean recomputed on each resample), the seeds' min-max, and the paired
difference augmented - plain with its own 95% interval (same resamples, same seeds).

Recipe, chosen to be honest for small data on 2 CPU cores: full fine-tune, lr 5e-5, batch 16,
max length 64, warm-up 10%, no validation split (none is spared at 64 examples), epochs 6 / 3 / 1
over the augmented set at 64 / 256 / 1,000 examples; the plain arm trains for the same number of
optimizer steps (more epochs over its originals), so that a difference is the variants' doing, not
that of longer training. Run with OMP_NUM_THREADS=1 on a shared machine (two torch threads that
compete with other work make each step several times slower).

Run: python benchmarks/bench_augment.py [--sizes 64 256 1000] [--seeds 0 1 2] [--out DIR]
Writes DIR/results.json (default benchmarks/out/augment) and prints the table.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

EPOCHS = {64: 6, 256: 3, 1000: 1}
TEST_SAMPLE = 1000
RESAMPLES = 1000


def prepared_corpus(out: Path) -> Path:
    from tunelab.config import load_config
    from tunelab.data import prepare
    target = out / "prepared"
    if not (target / "manifest.json").is_file():
        cfg = load_config(ROOT / "examples" / "sentiment.yaml").data
        prepare.run(cfg.model_copy(update={"inputs": ["example:sentiment"], "out_dir": str(target)}), show_progress=False)
    return target


def write_split(directory: Path, train: list[dict]) -> Path:
    from tunelab.files import write_jsonl
    directory.mkdir(parents=True, exist_ok=True)
    write_jsonl(directory / "train.jsonl", train)
    return directory


def augmented(plain: Path, out: Path) -> tuple[Path, dict]:
    from tunelab.config import load_config
    from tunelab.data import augment
    result = augment.run(load_config(None, ["data.augment.variants=2"]).data, plain, out, show_progress=False)
    return out, result.report


def train_and_predict(data_dir: Path, run_dir: Path, epochs: float, seed: int, test_texts: list[str],
                      labels: list[str]) -> tuple[np.ndarray, float]:
    from tunelab.evaluate.predict import classify, load_classifier
    from tunelab.train.run_dir import RunDir
    if not (run_dir / "manifest.json").is_file():  # a finished run directory is reused: the bench resumes
        _train(data_dir, run_dir, epochs, seed, labels)
    model, tokenizer = load_classifier(str(run_dir))
    predicted, _ = classify(model, tokenizer, test_texts, max_length=64)
    return np.asarray(predicted), float(RunDir.open(run_dir).training_seconds or 0)


def _train(data_dir: Path, run_dir: Path, epochs: float, seed: int, labels: list[str]) -> None:
    from tunelab.config import load_config
    from tunelab.train import run as train_run
    cfg = load_config(None, [f"train.data={data_dir / 'train.jsonl'}", f"train.output_dir={run_dir}",
                             "train.model=default", "train.method=full", "train.lr=5e-5", "train.batch_size=16",
                             "train.max_length=64", "train.warmup=0.1", f"train.epochs={epochs}",
                             f"train.seed={seed}", "train.tracking.backend=none", "train.save_steps=1000000",
                             f"train.labels=[{','.join(labels)}]", "train.logging_steps=50"])
    train_run.run(cfg)


def summary(y_true: np.ndarray, plain: list[np.ndarray], augm: list[np.ndarray], n_labels: int,
            rng: np.random.Generator) -> dict:
    from tunelab.evaluate.metrics import macro_f1

    def seed_mean(preds: list[np.ndarray], idx: np.ndarray) -> float:
        return float(np.mean([macro_f1(y_true[idx], p[idx], n_labels) for p in preds]))

    everything = np.arange(len(y_true))
    boot = {"plain": [], "augmented": [], "difference": []}
    for _ in range(RESAMPLES):
        idx = rng.integers(0, len(y_true), len(y_true))
        a, b = seed_mean(plain, idx), seed_mean(augm, idx)
        boot["plain"].append(a)
        boot["augmented"].append(b)
        boot["difference"].append(b - a)
    result = {}
    for name, preds in (("plain", plain), ("augmented", augm)):
        per_seed = [macro_f1(y_true, p, n_labels) for p in preds]
        low, high = np.percentile(boot[name], [2.5, 97.5])
        result[name] = {"macro_f1": seed_mean(preds, everything), "ci95": [float(low), float(high)],
                        "per_seed": [round(float(f), 4) for f in per_seed]}
    low, high = np.percentile(boot["difference"], [2.5, 97.5])
    result["difference"] = {"macro_f1": result["augmented"]["macro_f1"] - result["plain"]["macro_f1"],
                            "ci95": [float(low), float(high)]}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "augment")
    args = parser.parse_args()
    from tunelab.files import read_jsonl, write_json
    from tunelab.progress import quiet_library_output
    quiet_library_output()
    import datasets
    datasets.disable_progress_bars()

    started = time.time()
    corpus = prepared_corpus(args.out)
    pool, test = read_jsonl(corpus / "train.jsonl"), read_jsonl(corpus / "test.jsonl")
    labels = sorted({r["label"] for r in pool})
    test = random.Random(0).sample(test, min(TEST_SAMPLE, len(test)))
    test_texts = [r["text"] for r in test]
    y_true = np.array([labels.index(r["label"]) for r in test])
    results = {"test_examples": len(test), "labels": labels, "epochs": EPOCHS, "cells": {}}
    predictions: dict[int, dict[str, list[np.ndarray]]] = {n: {"plain": [], "augmented": []} for n in args.sizes}
    runs: dict[int, list[dict]] = {n: [] for n in args.sizes}
    for seed in args.seeds:  # seed by seed, so that an interrupted run still has whole learning curves
        for size in args.sizes:
            cell = args.out / f"n{size}-seed{seed}"
            sample = random.Random(1000 + seed).sample(pool, size)
            plain_dir = write_split(cell / "plain", sample)
            aug_dir, report = augmented(plain_dir, cell / "augmented")
            augmented_size = report["splits"]["train"]
            for arm, data_dir in (("plain", plain_dir), ("augmented", aug_dir)):
                # the same optimizer steps in both arms: the plain arm repeats its originals for as
                # long as the augmented arm trains, so a gain is the variants', not extra steps'
                epochs = EPOCHS.get(size, 1) * (augmented_size / size if arm == "plain" else 1)
                predicted, seconds = train_and_predict(data_dir, cell / f"run-{arm}", epochs, seed,
                                                       test_texts, labels)
                predictions[size][arm].append(predicted)
                runs[size].append({"seed": seed, "arm": arm, "train_examples": size if arm == "plain" else
                                   augmented_size, "epochs": round(epochs, 2), "train_seconds": round(seconds, 1)})
                print(f"n={size} seed={seed} {arm}: macro-F1 {_f1(y_true, predicted, len(labels)):.3f} "
                      f"({runs[size][-1]['train_examples']} examples, {epochs:.1f} epochs, {seconds:.0f} s)",
                      flush=True)
            results["cells"][str(size)] = {**summary(y_true, predictions[size]["plain"], predictions[size]["augmented"],
                                                     len(labels), np.random.default_rng(size)), "runs": runs[size]}
            write_json(args.out / "results.json", results)  # after every cell: partial results survive
    results["wall_seconds"] = round(time.time() - started)
    write_json(args.out / "results.json", results)
    print_table(results)


def _f1(y_true, predicted, n_labels) -> float:
    from tunelab.evaluate.metrics import macro_f1
    return macro_f1(y_true, predicted, n_labels)


def print_table(results: dict) -> None:
    print(f"\nmacro-F1 on {results['test_examples']} test examples, mean over seeds [95% bootstrap interval] "
          f"(seeds min-max); wall {results['wall_seconds']} s")
    print("| labelled examples | seeds | plain (same steps) | augmented (2 rule variants each) | augmented - plain |")
    print("|---:|---:|---|---|---|")
    for size, cell in results["cells"].items():
        def fmt(arm):
            c = cell[arm]
            return (f"{c['macro_f1']:.3f} [{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}] "
                    f"({min(c['per_seed']):.3f}-{max(c['per_seed']):.3f})")
        d = cell["difference"]
        print(f"| {int(size):,} | {len(cell['plain']['per_seed'])} | {fmt('plain')} | {fmt('augmented')} | {d['macro_f1']:+.3f} "
              f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] |")


if __name__ == "__main__":
    main()
