"""`tunelab models compare`: the live version against its shadow or canary, from the prediction log.

  agreement  (shadow) the share of requests both answered on which the shadow's answer equals the
             live one (the label, or the answer text); a canary answers other requests, so it has
             none.
  quality    on the requests whose feedback carries the truth (a label, or a corrected answer):
             a shadow is paired with the live answer to the same request, and
             tunelab.evaluate.compare.paired_bootstrap gives the difference with its 95% interval
             (macro-F1 for classifiers, exact match for generators); a canary's requests are not
             the live ones, so each side gets its own interval
             (tunelab.evaluate.compare.bootstrap_mean_interval of per-request correctness).
  ratings    the mean feedback rating of each side, where ratings arrived.
  latency    p50/p99 of each side's latency_ms: the live and canary rows time the whole request;
             a shadow row times its copy from queueing to answer (it has no client to wait).
  recommendation  promote (better, significantly), stop (worse, significantly), keep (no
             significant difference: collect more feedback) or wait (too few labelled rows).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tunelab.errors import TunelabError

MIN_LABELLED = 30  # fewer feedback-labelled requests than this: no recommendation from quality


def compare(log: str | Path, live: str, candidate: str, *, since_ts: float | None = None,
            resamples: int = 1000, min_labelled: int = MIN_LABELLED) -> dict[str, Any]:
    """The comparison of `candidate` (a shadow or canary version) with `live`, as JSON-ready data."""
    from tunelab.serve.predlog import read_feedback, read_predictions
    rows = [r for r in read_predictions(log, since_ts=since_ts, include_shadow=True)
            if r["outcome"] == "answered" and r["model_version"] in (live, candidate)]
    live_rows = [r for r in rows if r["model_version"] == live and r["role"] in (None, "live")]
    candidate_rows = [r for r in rows if r["model_version"] == candidate and r["role"] in ("shadow", "canary")]
    if not candidate_rows:
        raise TunelabError(f"the prediction log holds no shadow or canary answers of {candidate}", where=str(log),
                           fix=f"turn it on with `tunelab models shadow {candidate}` (or canary), send traffic, "
                               "then compare")
    role = "shadow" if any(r["role"] == "shadow" for r in candidate_rows) else "canary"
    classifier = any(r["label"] is not None for r in live_rows + candidate_rows)
    answer = (lambda r: r["label"]) if classifier else (lambda r: r["output"])
    result = {"log": str(log), "role": role, "task": "classification" if classifier else "generative",
              "live": side(live, live_rows), "candidate": side(candidate, candidate_rows)}
    shadow_of = {r["request_id"]: r for r in candidate_rows} if role == "shadow" else {}
    pairs = [(r, shadow_of[r["request_id"]]) for r in live_rows if r["request_id"] in shadow_of]
    result["agreement"] = ({"pairs": len(pairs), "rate": float(np.mean([answer(a) == answer(b) for a, b in pairs]))}
                           if pairs else None)
    feedback = read_feedback(log, since_ts=since_ts)
    result["quality"] = (paired_quality(feedback, shadow_of, classifier, resamples) if role == "shadow"
                         else canary_quality(feedback, live, candidate, classifier, resamples))
    result["ratings"] = ratings(feedback, live, candidate, shadow_of, resamples)
    result["recommendation"] = recommend(result, candidate, min_labelled)
    return result


def side(version: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [r["latency_ms"] for r in rows if r["latency_ms"] is not None]
    return {"version": version, "requests": len(rows),
            "latency_ms": {"p50": float(np.percentile(latencies, 50)) if latencies else None,
                           "p99": float(np.percentile(latencies, 99)) if latencies else None}}


def truth(item: dict[str, Any], classifier: bool) -> str | None:
    return item["label"] if classifier else item["corrected"]


def latest_truths(feedback: list[dict[str, Any]], classifier: bool) -> dict[str, tuple[str, dict]]:
    """request id -> (the truth its latest feedback gave, the prediction it is about)."""
    found = {}
    for item in feedback:  # oldest first: a later correction replaces an earlier one
        if truth(item, classifier) is not None and item["prediction"] is not None:
            found[item["request_id"]] = (truth(item, classifier), item["prediction"])
    return found


def scorer(classifier: bool):
    """(metric over arrays for the paired bootstrap, its name, per-request correctness)."""
    from tunelab.evaluate.metrics import exact_match_scores, macro_f1
    if classifier:
        return macro_f1, "macro_f1", lambda y, p: np.asarray(y) == np.asarray(p)

    def exact_match(y, p) -> float:
        return float(exact_match_scores(list(p), list(y)).mean())
    return exact_match, "exact_match", lambda y, p: exact_match_scores(list(p), list(y)).astype(bool)


def paired_quality(feedback, shadow_of, classifier: bool, resamples: int) -> dict[str, Any] | None:
    from tunelab.evaluate.compare import paired_bootstrap
    labelled = [(y, live, shadow_of[rid]) for rid, (y, live) in latest_truths(feedback, classifier).items()
                if rid in shadow_of]
    if not labelled:
        return None
    metric, name, _ = scorer(classifier)
    key = "label" if classifier else "output"
    y = [t for t, _, _ in labelled]
    live_answers = [str(r[key]) for _, r, _ in labelled]
    shadow_answers = [str(r[key]) for _, _, r in labelled]
    comparison = paired_bootstrap(metric, y, shadow_answers, live_answers, resamples=resamples)
    return {"labelled": len(labelled), "metric": name, "paired": True,
            "live": metric(np.asarray(y), np.asarray(live_answers)),
            "candidate": metric(np.asarray(y), np.asarray(shadow_answers)), "comparison": comparison}


def canary_quality(feedback, live: str, candidate: str, classifier: bool, resamples: int) -> dict[str, Any] | None:
    from tunelab.evaluate.compare import bootstrap_mean_interval
    _, _, correct = scorer(classifier)
    key = "label" if classifier else "output"
    sides = {}
    for version in (live, candidate):
        items = [(y, str(p[key])) for y, p in latest_truths(feedback, classifier).values()
                 if p["model_version"] == version]
        if items:
            hits = correct([y for y, _ in items], [p for _, p in items]).astype(float)
            low, high = bootstrap_mean_interval(hits, resamples=resamples)
            sides[version] = {"labelled": len(items), "accuracy": float(hits.mean()), "ci_low": low, "ci_high": high}
    if candidate not in sides or live not in sides:
        return None
    a, b = sides[candidate], sides[live]
    verdict = "better" if a["ci_low"] > b["ci_high"] else "worse" if a["ci_high"] < b["ci_low"] else \
        "no significant difference"
    return {"labelled": min(a["labelled"], b["labelled"]), "metric": "accuracy", "paired": False,
            "live": b["accuracy"], "candidate": a["accuracy"], "intervals": {"live": b, "candidate": a},
            "comparison": {"difference": a["accuracy"] - b["accuracy"], "verdict": verdict}}


def ratings(feedback, live: str, candidate: str, shadow_of: dict, resamples: int) -> dict[str, Any] | None:
    """Mean rating of each side (a shadow answer is never rated: its client never saw it)."""
    from tunelab.evaluate.compare import bootstrap_mean_interval
    found = {}
    for version in (live, candidate):
        values = [f["rating"] for f in feedback if f["rating"] is not None and f["prediction"] is not None
                  and f["prediction"]["model_version"] == version]
        if values:
            low, high = bootstrap_mean_interval(values, resamples=resamples)
            found[version] = {"rated": len(values), "mean": float(np.mean(values)), "ci_low": low, "ci_high": high}
    return found or None


def recommend(result: dict[str, Any], candidate: str, min_labelled: int) -> dict[str, str]:
    quality = result["quality"]
    labelled = quality["labelled"] if quality else 0
    if labelled < min_labelled:
        return {"action": "wait", "reason": f"only {labelled} requests answered by both carry feedback with the truth; "
                                            f"{min_labelled} are needed to judge {candidate}"}
    verdict, difference = quality["comparison"]["verdict"], quality["comparison"]["difference"]
    said = f"{quality['metric']} {quality['candidate']:.3f} vs live {quality['live']:.3f} ({difference:+.3f}) on {labelled}"
    if verdict == "better":
        return {"action": "promote", "reason": f"{candidate} is better: {said} feedback-labelled requests; "
                                               f"`tunelab models promote {candidate}`"}
    if verdict == "worse":
        return {"action": "stop", "reason": f"{candidate} is worse: {said} feedback-labelled requests; "
                                            f"`tunelab models {result['role']} --off`"}
    return {"action": "keep", "reason": f"no significant difference yet: {said} feedback-labelled requests; keep "
                                        f"{candidate} as the {result['role']} and collect more feedback"}
