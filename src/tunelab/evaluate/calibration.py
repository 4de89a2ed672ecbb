"""Calibration of a classifier's probabilities: expected calibration error over top-label
confidence, the reliability table behind it, and the Brier score (sklearn's)."""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import brier_score_loss


def _top_label(probabilities, y_true) -> tuple[np.ndarray, np.ndarray]:
    """Each example's confidence (its largest probability) and whether that label is the true one."""
    probabilities = np.asarray(probabilities, dtype=float)
    y_true = np.asarray(y_true)
    if probabilities.ndim != 2 or probabilities.shape[0] != y_true.size:
        raise ValueError(f"probabilities must be (examples, labels) for {y_true.size} examples, "
                         f"got shape {probabilities.shape}")
    if y_true.size == 0:
        raise ValueError("no examples to calibrate")
    return probabilities.max(axis=1), (probabilities.argmax(axis=1) == y_true).astype(float)


def _binned(probabilities, y_true, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bin edges and, per bin, example count, summed confidence and summed correctness.

    Bins are equal-width over [0, 1] and right-closed, (low, high], with the first bin also taking
    a confidence of exactly 0: [0, 1/bins]. A confidence on an inner edge goes to the lower bin,
    the convention of sklearn.calibration.calibration_curve(strategy="uniform")."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    confidence, correct = _top_label(probabilities, y_true)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.digitize(confidence, edges[1:-1], right=True)  # edges[i-1] < c <= edges[i] -> bin i
    counts = np.bincount(index, minlength=bins)
    return (edges, counts, np.bincount(index, weights=confidence, minlength=bins),
            np.bincount(index, weights=correct, minlength=bins))


def expected_calibration_error(probabilities, y_true, bins: int = 15) -> float:
    """ECE (0-1): sum over equal-width confidence bins of (bin examples / all examples) times
    |accuracy in bin - mean confidence in bin|, where confidence is the top label's probability and
    accuracy whether the top label is the true one. `probabilities` is (examples, labels), columns
    in label-index order; `y_true` holds label indices. Bin edges as in reliability_bins."""
    _, counts, confidence_sums, correct_sums = _binned(probabilities, y_true, bins)
    return float(np.abs(correct_sums - confidence_sums).sum() / counts.sum())


def reliability_bins(probabilities, y_true, bins: int = 15) -> list[dict[str, Any]]:
    """One row per equal-width bin, {low, high, count, confidence (mean), accuracy}; an empty bin
    has count 0 and confidence/accuracy None. Bins are (low, high], the first also takes 0."""
    edges, counts, confidence_sums, correct_sums = _binned(probabilities, y_true, bins)
    rows = []
    for i, count in enumerate(counts):
        filled = count > 0
        rows.append({"low": float(edges[i]), "high": float(edges[i + 1]), "count": int(count),
                     "confidence": float(confidence_sums[i] / count) if filled else None,
                     "accuracy": float(correct_sums[i] / count) if filled else None})
    return rows


def brier_score(probabilities, y_true) -> float:
    """Mean over examples of the summed squared difference between the probability vector and the
    one-hot true label: 0 is perfect, 2 the worst, for any number of labels (binary included, so
    it is twice the usual binary Brier score, which looks at the positive class only).
    `probabilities` is (examples, labels) in label-index order; computed by sklearn's
    brier_score_loss with scale_by_half=False."""
    probabilities = np.asarray(probabilities, dtype=float)
    if probabilities.ndim != 2:
        raise ValueError(f"probabilities must be (examples, labels), got shape {probabilities.shape}")
    return float(brier_score_loss(np.asarray(y_true), probabilities, labels=np.arange(probabilities.shape[1]),
                                  scale_by_half=False))


def calibration_report(probabilities, y_true, bins: int = 15) -> dict[str, Any]:
    """The report's calibration section: {"ece", "brier", "bins": reliability_bins(...)}."""
    return {"ece": expected_calibration_error(probabilities, y_true, bins),
            "brier": brier_score(probabilities, y_true),
            "bins": reliability_bins(probabilities, y_true, bins)}
