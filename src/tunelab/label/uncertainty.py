"""Which records are worth labelling: uncertainty scores and the diversity step. Pure functions
over numpy arrays, tested against hand-computed values.

Uncertainty (higher = more worth a label):
- entropy: -sum p log p of the predicted class probabilities (nats);
- margin: 1 - (top probability - second probability), so a near tie scores close to 1;
- least_confidence: 1 - top probability;
- generative: -(mean token log-probability of the model's own answer), plus a weight when a
  person already said the answer was bad.

Diversity: the most uncertain records are often near copies of one another (the same confusing
phrasing, many times). The batch is picked from the `candidates` most uncertain ones by k-center
greedy on normalised sentence embeddings: each pick is the candidate farthest from everything
picked so far (and from the already-labelled data, when given), so the batch spreads over the
embedding space instead of stacking on one cluster (Sener & Savarese, 2018).
"""
from __future__ import annotations

import numpy as np

STRATEGIES = ("entropy", "margin", "least_confidence")


def entropy(probabilities: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1)


def margin(probabilities: np.ndarray) -> np.ndarray:
    p = np.sort(np.asarray(probabilities, dtype=np.float64), axis=1)
    second = p[:, -2] if p.shape[1] > 1 else np.zeros(len(p))
    return 1.0 - (p[:, -1] - second)


def least_confidence(probabilities: np.ndarray) -> np.ndarray:
    return 1.0 - np.asarray(probabilities, dtype=np.float64).max(axis=1)


def classifier_uncertainty(probabilities: np.ndarray, strategy: str) -> np.ndarray:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
    return {"entropy": entropy, "margin": margin, "least_confidence": least_confidence}[strategy](probabilities)


def generative_uncertainty(mean_logprobs: np.ndarray, negative_feedback: np.ndarray, weight: float) -> np.ndarray:
    """-(mean token log-probability of the answer) + weight for each answer a person marked bad."""
    return -np.asarray(mean_logprobs, dtype=np.float64) + weight * np.asarray(negative_feedback, dtype=np.float64)


def most_uncertain(scores: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` highest scores, highest first (ties: the earlier record first)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return order[:count]


def k_center_greedy(embeddings: np.ndarray, k: int, *, labelled: np.ndarray | None = None,
                    first: int = 0) -> list[int]:
    """k indices of `embeddings` (rows, L2-normalised) chosen one at a time as the row farthest
    (cosine distance) from every row chosen so far and from `labelled`. Without labelled rows the
    first pick is `first` (the caller passes its most uncertain candidate)."""
    x = np.asarray(embeddings, dtype=np.float64)
    if k <= 0 or len(x) == 0:
        return []
    k = min(k, len(x))
    if labelled is not None and len(labelled):
        nearest = 1.0 - (x @ np.asarray(labelled, dtype=np.float64).T).max(axis=1)
        chosen: list[int] = []
    else:
        chosen = [first]
        nearest = 1.0 - x @ x[first]
    while len(chosen) < k:
        nearest[chosen] = -np.inf  # never picked twice
        pick = int(np.argmax(nearest))
        chosen.append(pick)
        nearest = np.minimum(nearest, 1.0 - x @ x[pick])
    return chosen
