"""Grading a system's answers for evaluation: which grader an evaluation uses and how it may run,
one grade per answer, the metrics grades give (mean reward, spread, pass rate, grader failures)
and the report's reward section. Shared by the generative evaluation (chat records with a grader)
and the reward evaluation (prompt records, tunelab.evaluate.reward)."""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from tunelab.evaluate.compare import bootstrap_mean_interval
from tunelab.graders import GraderRuntime, grade, load_grader

WORST_SHOWN = 10


def grader_for(settings, run):
    """(grader, runtime) for this evaluation of `run` (a RunDir), or (None, None) when there is no
    grader. Python graders run when eval.allow_python_graders says so, or, for the run's own
    grader, when the run's training allowed them."""
    own = run.grader
    source = settings.grader or own
    if not source:
        return None, None
    rft = run.train_config.get("rft") or {}
    allow = settings.allow_python_graders or (source == own and bool(rft.get("allow_python_graders")))
    runtime = GraderRuntime(allow_python=allow, python_timeout_s=rft.get("python_grader_timeout_s", 10.0),
                            base_url=rft.get("score_model_base_url"))
    grader = load_grader(source)
    runtime.check_allowed(grader)
    return grader, runtime


def score(grader, runtime, answers: list[str], records: list[dict[str, Any]]) -> list:
    """One GradeResult per answer, each graded against its own record."""
    return [grade(grader, answer, record, runtime=runtime) for answer, record in zip(answers, records)]


def figures(grader, results) -> dict[str, Any]:
    """The metrics a system gets from its grades: mean reward, its spread, pass rate, failures."""
    scores = np.asarray([r.score for r in results], dtype=float)
    found = {"reward": float(scores.mean()), "reward_std": float(scores.std()),
             "grader_failures": sum(r.grader_failed for r in results)}
    if grader.pass_threshold is not None:
        found["pass_rate"] = float((scores >= grader.pass_threshold).mean())
    return found


def reward_section(grader, results: dict[str, list], records, tuned_answers: list[str],
                   settings) -> dict[str, Any]:
    """The report's reward part: the grader, each system's mean reward with its interval and pass
    rate, why the tuned model's answers failed (by error kind) and its worst answers with reasons."""
    systems = {}
    for name, graded in results.items():
        scores = [r.score for r in graded]
        low, high = bootstrap_mean_interval(scores, resamples=settings.resamples, seed=settings.seed,
                                            confidence=settings.confidence)
        systems[name] = {"mean": float(np.mean(scores)), "ci_low": low, "ci_high": high,
                         "pass_rate": (float(np.mean([s >= grader.pass_threshold for s in scores]))
                                       if grader.pass_threshold is not None else None),
                         "grader_failures": sum(r.grader_failed for r in graded)}
    tuned = results["tuned"]
    order = sorted(range(len(tuned)), key=lambda i: (tuned[i].score, i))[:WORST_SHOWN]
    worst = [{"example": i + 1, "score": tuned[i].score, "reason": tuned[i].reason, "answer": tuned_answers[i],
              "prompt": _last_user(records[i])} for i in order]
    return {"grader": {"name": grader.name, "type": grader.type, "pass_threshold": grader.pass_threshold},
            "confidence": settings.confidence, "systems": systems,
            "errors_by_kind": dict(Counter(r.error for r in tuned if r.error).most_common()), "worst": worst}


def _last_user(record: dict[str, Any]) -> str:
    return next((m["content"] for m in reversed(record["messages"]) if m.get("role") == "user"), "")
