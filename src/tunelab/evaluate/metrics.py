"""Classification metrics as pure functions over label indices (sklearn does the arithmetic)."""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, matthews_corrcoef, precision_recall_fscore_support

HEADLINE = ("accuracy", "macro_f1", "mcc")


def accuracy(y_true, y_pred) -> float:
    return float(accuracy_score(y_true, y_pred))


def macro_f1(y_true, y_pred, n_labels: int | None = None) -> float:
    labels = list(range(n_labels)) if n_labels else None
    return float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))


def mcc(y_true, y_pred) -> float:
    return float(matthews_corrcoef(y_true, y_pred))


METRIC_FUNCTIONS = {"accuracy": accuracy, "macro_f1": macro_f1, "mcc": mcc}


def classification_metrics(y_true, y_pred, labels: list[str]) -> dict[str, Any]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    indices = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=indices, zero_division=0)
    return {
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred, len(labels)),
        "mcc": mcc(y_true, y_pred),
        "per_class": {label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for label, p, r, f, s in zip(labels, precision, recall, f1, support)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=indices).tolist(),
        "examples": int(y_true.size),
    }
