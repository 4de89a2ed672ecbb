"""string_check: 1 when the rendered input and reference compare as the operation says, else 0.
eq / ne: equal / not equal, case-sensitive; like: the input contains the reference;
ilike: the same, ignoring case. No trimming or normalisation: what OpenAI's grader does."""
from __future__ import annotations

from typing import Any

from tunelab.graders.base import GradeResult, check_keys, spec_error
from tunelab.graders.templating import check_templates, render

FIELDS = ("type", "name", "input", "reference", "operation", "pass_threshold")
REQUIRED = ("type", "name", "input", "reference", "operation")
OPERATIONS = ("eq", "ne", "like", "ilike")


def validate(spec: dict[str, Any], where: str | None) -> None:
    name = spec["name"]
    check_keys(spec, FIELDS, REQUIRED, name, where)
    check_templates(spec, ("input", "reference"), name, where)
    if spec["operation"] not in OPERATIONS:
        raise spec_error(name, "operation", f"must be one of {', '.join(OPERATIONS)} (got {spec['operation']!r})",
                         where)


def compare(operation: str, text: str, reference: str) -> bool:
    if operation == "eq":
        return text == reference
    if operation == "ne":
        return text != reference
    if operation == "like":
        return reference in text
    return reference.casefold() in text.casefold()


def grade(spec: dict[str, Any], sample: dict[str, Any], item: dict[str, Any] | None, runtime) -> GradeResult:
    text = render(spec["input"], sample, item)
    reference = render(spec["reference"], sample, item)
    passed = compare(spec["operation"], text, reference)
    failed = {"eq": "is not equal to", "ne": "is equal to", "like": "does not contain",
              "ilike": "does not contain (ignoring case)"}
    reason = None if passed else f"{_short(text)} {failed[spec['operation']]} {_short(reference)}"
    return GradeResult(1.0 if passed else 0.0, reason)


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")
