"""Per-group checks of a classifier: true-positive rate of each label within each group (meta.group)
and the equal-opportunity difference, the largest TPR gap between groups, flagged above a limit."""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from tunelab.evaluate.metrics import headline_metrics, indices_by_value


def group_fairness(y_true, y_pred, groups, labels: list[str], *, max_gap: float = 0.03,
                   min_group_size: int = 10) -> dict[str, Any]:
    """TPR (recall, one label against the rest) per label within each group, and per label the
    equal-opportunity difference: max minus min TPR over the groups that have at least
    `min_group_size` examples and at least one example of that label. A label with fewer than two
    such groups has no difference and is left out of "equal_opportunity_difference".

    y_true/y_pred hold label indices into `labels`; groups holds one value per example (keys are
    str(value), see indices_by_value). Returns {"metric": "tpr", "groups": {g: {"examples",
    "tpr": {label: float | None (no example of the label in g)}, accuracy, macro_f1, mcc}},
    "equal_opportunity_difference": {label: float}, "max_gap": the largest of those (0.0 when
    none), "threshold": max_gap argument, "flagged": any difference above it, "flagged_labels",
    "compared_groups": groups large enough to count}. Every label is checked, so for two labels
    this covers both TPR and TNR gaps (equalized odds); for two labels the result also names
    "positive_label" (labels[1]) and its gap alone, "positive_class_gap" (None if not comparable),
    which is fairlearn's equal_opportunity_difference."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    indices = list(range(len(labels)))
    report_groups: dict[str, dict[str, Any]] = {}
    comparable: dict[str, dict[str, float]] = {label: {} for label in labels}
    compared_groups = []
    for group, idx in indices_by_value(groups).items():
        truth, predicted = y_true[idx], y_pred[idx]
        _, recall, _, support = precision_recall_fscore_support(truth, predicted, labels=indices, zero_division=0)
        tpr = {label: float(r) if s > 0 else None for label, r, s in zip(labels, recall, support)}
        report_groups[group] = {"examples": int(idx.size), "tpr": tpr, **headline_metrics(truth, predicted)}
        if idx.size >= min_group_size:
            compared_groups.append(group)
            for label, rate in tpr.items():
                if rate is not None:
                    comparable[label][group] = rate
    differences = {label: float(max(rates.values()) - min(rates.values()))
                   for label, rates in comparable.items() if len(rates) >= 2}
    flagged_labels = [label for label, gap in differences.items() if gap > max_gap]
    report = {"metric": "tpr", "groups": report_groups, "equal_opportunity_difference": differences,
              "max_gap": max(differences.values(), default=0.0), "threshold": max_gap,
              "flagged": bool(flagged_labels), "flagged_labels": flagged_labels, "compared_groups": compared_groups}
    if len(labels) == 2:
        report["positive_label"] = labels[1]
        report["positive_class_gap"] = differences.get(labels[1])
    return report
