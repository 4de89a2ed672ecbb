"""What every grader shares: the result of grading one sample, the failure that turns into a zero
reward with its reason, and the one-sentence validation error naming the field at fault.

Error kinds are OpenAI's (the `metadata.errors` flags of POST /v1/fine_tuning/alpha/graders/run),
so a jobs API can report them unchanged.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from tunelab.errors import TunelabError

ERROR_KINDS = (
    "formula_parse_error", "invalid_variable_error", "model_grader_parse_error", "model_grader_refusal_error",
    "model_grader_server_error", "other_error", "python_grader_runtime_error", "python_grader_server_error",
    "sample_parse_error", "truncated_observation_error", "unresponsive_reward_error",
)
# the model's own output is at fault (it is not the JSON the grader reads): an ordinary zero reward,
# not a failure of the grader
MODEL_OUTPUT_ERRORS = frozenset({"sample_parse_error"})


@dataclass
class GradeResult:
    """score: the reward; reason: why it is what it is, when that is not obvious (always set when
    error is); sub_scores: each named sub-grader's score (multi graders); error: OpenAI's error kind."""
    score: float
    reason: str | None = None
    sub_scores: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def grader_failed(self) -> bool:
        """The grader itself could not grade (not merely a wrong or malformed answer)."""
        return self.error is not None and self.error not in MODEL_OUTPUT_ERRORS


class GradeFailure(Exception):
    """Raised inside a grader when a sample cannot be graded; becomes a zero reward with its reason."""

    def __init__(self, kind: str, reason: str):
        assert kind in ERROR_KINDS, kind
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class GraderSpecError(TunelabError):
    """An invalid grader definition, as one sentence naming the grader and the field."""


def spec_error(grader: str, field_name: str | None, problem: str, where: str | None, fix: str | None = None):
    subject = f"grader '{grader}'" + (f" field '{field_name}'" if field_name else "")
    return GraderSpecError(f"{subject} {problem}", where=where, fix=fix or "correct the grader JSON")


def check_keys(spec: dict[str, Any], allowed: tuple[str, ...], required: tuple[str, ...], name: str,
               where: str | None) -> None:
    for key in spec:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'" if close else f"the fields of a {spec.get('type')} grader are " \
                                                             f"{', '.join(allowed)}"
            raise spec_error(name, key, "is not a field tunelab (or OpenAI) knows", where, fix=hint)
    for key in required:
        if key not in spec:
            raise spec_error(name, key, "is missing", where, fix=f"add it (a {spec.get('type')} grader needs "
                                                                 f"{', '.join(required)})")


def require_text(spec: dict[str, Any], key: str, name: str, where: str | None) -> str:
    value = spec[key]
    if not isinstance(value, str):
        raise spec_error(name, key, f"must be a string (got {type(value).__name__})", where)
    return value


def require_number(spec: dict[str, Any], key: str, name: str, where: str | None) -> float:
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise spec_error(name, key, f"must be a number (got {value!r})", where)
    return float(value)
