"""Paired bootstrap comparison of two systems on the same examples: the difference of a metric
with a 95% interval, and a verdict that says whether the interval excludes zero."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np


def paired_bootstrap(metric: Callable, y_true, pred_a, pred_b, *, resamples: int = 1000,
                     seed: int = 0, confidence: float = 0.95) -> dict[str, float | str]:
    """metric(a) - metric(b) on the full set, and its percentile interval over resamples of
    example indices shared by both systems (pairing removes the examples' own variance)."""
    y_true, pred_a, pred_b = map(np.asarray, (y_true, pred_a, pred_b))
    rng = np.random.default_rng(seed)
    n = y_true.size
    diffs = np.empty(resamples)
    for i in range(resamples):
        idx = rng.integers(0, n, n)
        diffs[i] = metric(y_true[idx], pred_a[idx]) - metric(y_true[idx], pred_b[idx])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    difference = metric(y_true, pred_a) - metric(y_true, pred_b)
    verdict = "better" if low > 0 else "worse" if high < 0 else "no significant difference"
    return {"difference": float(difference), "ci_low": float(low), "ci_high": float(high),
            "confidence": confidence, "resamples": resamples, "verdict": verdict}


def bootstrap_mean_interval(scores, *, resamples: int = 1000, seed: int = 0,
                            confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of per-example scores over resamples of the examples."""
    scores = np.asarray(scores, dtype=float)
    rng = np.random.default_rng(seed)
    means = scores[rng.integers(0, scores.size, (resamples, scores.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)
