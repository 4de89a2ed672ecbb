"""grade(grader, sample, item) -> GradeResult: the one entry point that scores a model answer.

A failure of any kind while grading (a missing item field, an answer that is not the JSON the
grader reads, a python grader that raises or hangs, a scoring model that is down, a formula that
divides by zero) gives a zero score with its reason and OpenAI's error kind: grading never raises
for a sample. Only a grader that is not allowed to run here (python graders off) raises, and
callers check that before they start (GraderRuntime.check_allowed).
"""
from __future__ import annotations

from typing import Any

from tunelab.graders import multi, python_grader, score_model, string_check, text_similarity
from tunelab.graders.base import GradeFailure, GradeResult
from tunelab.graders.runtime import GraderRuntime
from tunelab.graders.spec import Grader, load_grader
from tunelab.graders.templating import make_sample

SCORERS = {"string_check": string_check.grade, "text_similarity": text_similarity.grade,
           "python": python_grader.grade, "score_model": score_model.grade}
_DEFAULT_RUNTIME = GraderRuntime()


def grade(grader: "Grader | dict[str, Any] | str", sample: "str | dict[str, Any]", item: dict[str, Any] | None,
          *, runtime: GraderRuntime | None = None) -> GradeResult:
    """Score one model answer (`sample`: its text, or OpenAI's sample namespace) for one dataset
    row (`item`)."""
    grader = load_grader(grader)
    runtime = runtime or _DEFAULT_RUNTIME
    runtime.check_allowed(grader)
    return _grade(grader, sample if isinstance(sample, dict) else make_sample(sample), item, runtime)


def _grade(grader: Grader, sample: dict[str, Any], item: dict[str, Any] | None,
           runtime: GraderRuntime) -> GradeResult:
    if grader.type == "multi":
        return _grade_multi(grader, sample, item, runtime)
    try:
        return SCORERS[grader.type](grader.spec, sample, item, runtime)
    except GradeFailure as failure:
        return GradeResult(0.0, failure.reason, error=failure.kind)


def _grade_multi(grader: Grader, sample: dict[str, Any], item: dict[str, Any] | None,
                 runtime: GraderRuntime) -> GradeResult:
    results = {name: _grade(sub, sample, item, runtime) for name, sub in grader.graders.items()}
    scores = {name: result.score for name, result in results.items()}
    reasons = [f"{name}: {result.reason}" for name, result in results.items() if result.reason]
    failed = next((result.error for result in results.values() if result.grader_failed), None)
    parse_error = next((result.error for result in results.values() if result.error), None)
    try:
        value = multi.evaluate(grader.spec["calculate_output"], scores)
    except GradeFailure as failure:
        return GradeResult(0.0, "; ".join([failure.reason, *reasons]), scores, failure.kind)
    return GradeResult(value, "; ".join(reasons) or None, scores, failed or parse_error)
