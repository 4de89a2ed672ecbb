"""Content drift: has what users write about changed, even where lengths and labels have not?

A domain classifier (logistic regression on sentence embeddings of the embedded MiniLM encoder)
is trained to tell current inputs from reference inputs. Its cross-validated ROC AUC is the
measure: 0.5 means it cannot tell them apart (no drift); the closer to 1, the more the content
moved. The report also lists the current inputs farthest from any reference input (cosine
distance to the nearest reference embedding), which are usually the new topic itself.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np

PREVIEW_CHARS = 200


def content_drift(reference: list[str], current: list[str], *, encoder: str, auc_threshold: float,
                  folds: int = 5, max_reference: int = 2000, farthest: int = 10, min_samples: int = 30,
                  seed: int = 0) -> dict[str, Any]:
    """The content-drift feature of the report: AUC, verdict, and the farthest current inputs."""
    base = {"feature": "content", "kind": "domain classifier", "reference_n": len(reference),
            "current_n": len(current), "psi": None, "kl": None, "statistic": None, "p_value": None,
            "drifted": False, "test": "cross-validated ROC AUC", "threshold": auc_threshold, "farthest": []}
    if min(len(reference), len(current)) < max(min_samples, folds):
        side = "current window" if len(current) < len(reference) else "reference"
        return {**base, "reason": f"not tested: {min(len(reference), len(current))} inputs in the {side}, "
                                  f"at least {max(min_samples, folds)} are needed"}
    if len(reference) > max_reference:
        reference = random.Random(seed).sample(reference, max_reference)
    from tunelab.evaluate.baselines import embed
    from tunelab.models.load import resolve_model_path
    vectors = embed(resolve_model_path(encoder), reference + current)
    ref_vectors, cur_vectors = vectors[:len(reference)], vectors[len(reference):]
    auc = domain_auc(ref_vectors, cur_vectors, folds=folds, seed=seed)
    drifted = auc > auc_threshold
    reason = (f"{'drifted' if drifted else 'stable'}: a classifier tells current inputs from reference ones "
              f"with ROC AUC {auc:.3f} ({'above' if drifted else 'within'} {auc_threshold:g}; 0.5 = no drift)")
    return {**base, "reference_n": len(reference), "statistic": auc, "auc": auc, "drifted": drifted,
            "reason": reason, "farthest": farthest_inputs(ref_vectors, cur_vectors, current, farthest)}


def domain_auc(reference: np.ndarray, current: np.ndarray, *, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated ROC AUC of a logistic regression telling `current` rows from `reference`
    rows (stratified folds, out-of-fold probabilities, so no row is scored by a model that saw it)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    features = np.vstack([reference, current]).astype(np.float64)
    labels = np.r_[np.zeros(len(reference)), np.ones(len(current))]
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    # class_weight balanced: the reference sample is often much larger than the window
    classifier = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed)
    scores = cross_val_predict(classifier, features, labels, cv=splitter, method="predict_proba")[:, 1]
    return float(roc_auc_score(labels, scores))


def farthest_inputs(reference: np.ndarray, current: np.ndarray, texts: list[str], count: int) -> list[dict[str, Any]]:
    """The `count` current inputs whose nearest reference input is farthest (cosine distance on
    normalised embeddings), farthest first."""
    if count <= 0:
        return []
    distance = 1.0 - (current @ reference.T).max(axis=1)
    order = np.argsort(-distance, kind="stable")[:count]
    return [{"text": texts[i][:PREVIEW_CHARS], "distance": round(float(distance[i]), 4)} for i in order]
