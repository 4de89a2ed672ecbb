"""Agreement between annotators, and what several annotations of one item come to. Pure functions.

- Cohen's kappa (two annotators, the items both labelled): sklearn's cohen_kappa_score.
- Fleiss' kappa (any number of annotators per item): Fleiss (1971), in the form that allows a
  different number of raters per item (each item weighs by its own pairs of raters):
    P_i = (sum_j n_ij^2 - n_i) / (n_i (n_i - 1)),  P_bar = mean of P_i,
    p_j = sum_i n_ij / sum_i n_i,                   P_e = sum_j p_j^2,
    kappa = (P_bar - P_e) / (1 - P_e).
  With the same number of raters on every item this is Fleiss' original statistic (checked
  against the worked example of his paper's form: 10 items, 14 raters, 5 categories, 0.210).
- Several annotations of an item resolve to a label only when they agree; otherwise the item is a
  conflict, listed with every annotator's answer, never settled by a guess (majority or not).
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np


def fleiss_kappa(counts) -> float:
    """counts[i][j]: how many raters put item i in category j (every item rated at least twice)."""
    n_ij = np.asarray(counts, dtype=np.float64)
    if n_ij.ndim != 2 or len(n_ij) == 0:
        raise ValueError("counts must be a non-empty items x categories table")
    n_i = n_ij.sum(axis=1)
    if (n_i < 2).any():
        raise ValueError("every item needs at least two ratings")
    p_i = ((n_ij ** 2).sum(axis=1) - n_i) / (n_i * (n_i - 1))
    p_j = n_ij.sum(axis=0) / n_i.sum()
    expected = float((p_j ** 2).sum())
    if expected == 1.0:  # every rating in one category: agreement is perfect and chance explains it all
        return 1.0
    return (float(p_i.mean()) - expected) / (1.0 - expected)


def cohen_kappa(first: list[Hashable], second: list[Hashable]) -> float:
    from sklearn.metrics import cohen_kappa_score
    if len(set(first) | set(second)) == 1:
        return 1.0  # both said the same single thing every time (sklearn returns nan here)
    return float(cohen_kappa_score([str(v) for v in first], [str(v) for v in second]))


def agreement(annotations: Mapping[Hashable, Mapping[str, Hashable]]) -> dict[str, Any] | None:
    """Agreement over the items that more than one annotator answered: {"measure": "cohen" |
    "fleiss", "kappa", "items", "annotators", "percent_agreement"}; None when no item has two.
    Cohen's kappa when exactly two annotators answered all of those items, Fleiss' otherwise."""
    shared = {item: by for item, by in annotations.items() if len(by) >= 2}
    if not shared:
        return None
    annotators = sorted({a for by in shared.values() for a in by})
    unanimous = sum(len(set(by.values())) == 1 for by in shared.values()) / len(shared)
    result = {"items": len(shared), "annotators": annotators, "percent_agreement": round(unanimous, 4)}
    if len(annotators) == 2:
        first, second = annotators
        kappa = cohen_kappa([by[first] for by in shared.values()], [by[second] for by in shared.values()])
        return {"measure": "cohen", "kappa": round(kappa, 4), **result}
    categories = sorted({str(v) for by in shared.values() for v in by.values()})
    counts = [[sum(str(v) == c for v in by.values()) for c in categories] for by in shared.values()]
    return {"measure": "fleiss", "kappa": round(fleiss_kappa(counts), 4), **result}


def resolve(annotations: Mapping[Hashable, Mapping[str, Hashable]]):
    """(agreed: item -> the one answer, conflicts: item -> {annotator: answer}) over every item."""
    agreed, conflicts = {}, {}
    for item, by in annotations.items():
        answers = set(by.values())
        if len(answers) == 1:
            agreed[item] = next(iter(answers))
        elif answers:
            conflicts[item] = dict(by)
    return agreed, conflicts
