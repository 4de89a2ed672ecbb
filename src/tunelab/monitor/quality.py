"""Live quality from feedback: where people told us the right label or rated an answer, how good
were the served answers, over time, and has quality decayed although the inputs did not drift?

Pure functions over read_feedback() rows (feedback joined with its prediction):
- correct: a classification answer whose feedback label equals the served label (the latest
  labelled feedback of a request counts, once);
- rating: thumbs as 1 (up) / 0 (down), stars as (stars - 1) / 4, so both read as a share of
  their scale (1 = best);
- over time: per bucket of the prediction's time, accuracy, macro-F1 (sklearn, over the labels
  seen in the bucket) and mean rating;
- decay: accuracy in the current window against the run's evaluated accuracy (exact binomial
  test) or else against feedback on earlier traffic (Fisher's exact test); mean rating against
  earlier traffic (Welch's t-test); each must fall by `min_drop` and be significant.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from tunelab.monitor import drift


def rating_share(feedback: dict[str, Any]) -> float | None:
    rating, scale = feedback.get("rating"), feedback.get("rating_scale")
    if rating is None:
        return None
    return (1.0 if rating > 0 else 0.0) if scale == "thumbs" else (float(rating) - 1.0) / 4.0


def judged(feedback: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One judgement per request: {"request_id", "ts" (of the prediction), "served", "label",
    "correct", "rating"}; the latest labelled feedback and the latest rating of each request."""
    by_request: dict[str, dict[str, Any]] = {}
    for row in feedback:
        prediction = row.get("prediction")
        if prediction is None:
            continue
        item = by_request.setdefault(row["request_id"], {"request_id": row["request_id"], "ts": prediction["ts"],
                                                         "served": prediction.get("label"), "label": None,
                                                         "correct": None, "rating": None})
        if row.get("label") is not None and item["served"] is not None:
            item["label"], item["correct"] = row["label"], row["label"] == item["served"]
        if rating_share(row) is not None:
            item["rating"] = rating_share(row)
    return sorted(by_request.values(), key=lambda item: item["ts"])


def summary(items: list[dict[str, Any]]) -> dict[str, Any]:
    from sklearn.metrics import f1_score
    labelled = [i for i in items if i["correct"] is not None]
    rated = [i["rating"] for i in items if i["rating"] is not None]
    return {"labelled": len(labelled), "accuracy": sum(i["correct"] for i in labelled) / len(labelled) if labelled
            else None,
            "macro_f1": float(f1_score([i["label"] for i in labelled], [i["served"] for i in labelled],
                                       average="macro", zero_division=0)) if labelled else None,
            "rated": len(rated), "mean_rating": sum(rated) / len(rated) if rated else None}


def over_time(items: list[dict[str, Any]], bucket_s: float) -> list[dict[str, Any]]:
    """The summary per time bucket of the predictions' time, oldest first."""
    buckets: dict[float, list] = defaultdict(list)
    for item in items:
        buckets[item["ts"] // bucket_s * bucket_s].append(item)
    return [{"start_ts": start, **summary(members)} for start, members in sorted(buckets.items())]


def decay_features(current: list[dict[str, Any]], earlier: list[dict[str, Any]],
                   evaluated_accuracy: tuple[float, str] | None, *, min_drop: float, p_value: float,
                   min_samples: int) -> list[dict[str, Any]]:
    """The feedback_accuracy and feedback_rating features of the drift report (only those the
    feedback can speak to: no labels, no accuracy feature)."""
    features = []
    now = [i["correct"] for i in current if i["correct"] is not None]
    before = [i["correct"] for i in earlier if i["correct"] is not None]
    if now or before:
        if evaluated_accuracy is not None:
            value, source = evaluated_accuracy
            feature = drift.rate_below("feedback_accuracy", sum(now), len(now), reference_rate=value,
                                       min_drop=min_drop, p_value=p_value, min_samples=min_samples)
        else:
            source = "feedback on earlier traffic"
            feature = drift.proportion_drop("feedback_accuracy", (sum(before), len(before)), (sum(now), len(now)),
                                            min_drop=min_drop, p_value=p_value, min_samples=min_samples)
        features.append(feature | {"reference_source": source})
    now_r = [i["rating"] for i in current if i["rating"] is not None]
    before_r = [i["rating"] for i in earlier if i["rating"] is not None]
    if now_r or before_r:
        feature = drift.mean_drop(before_r, now_r, min_drop=min_drop, p_value=p_value, min_samples=min_samples,
                                  feature="feedback_rating")
        features.append(feature | {"reference_source": "feedback on earlier traffic"})
    return features
