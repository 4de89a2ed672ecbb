"""The shapes that flow through data preparation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Problem:
    """Why a record cannot be used: a stable reason code and a human detail."""
    reason: str
    detail: str


class RecordProblem(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.problem = Problem(reason, detail)


@dataclass
class RawRecord:
    """One record as read from a file, before it is understood."""
    source: str
    line: int
    unit: str  # "line", "row" or "item": what `line` counts in this source
    value: Any = None
    raw: str | None = None  # the undecoded text when the record could not be parsed
    problem: Problem | None = None

    @property
    def location(self) -> str:
        return f"{self.source} {self.unit} {self.line}"


def reject_row(raw: RawRecord, problem: Problem, record: Any = None) -> dict[str, Any]:
    """The rejects.jsonl row: enough to find, understand and fix the record, and the record itself."""
    row: dict[str, Any] = {
        "source": raw.source,
        "line": raw.line,
        "location": f"{raw.unit} {raw.line}",
        "reason": problem.reason,
        "detail": problem.detail,
    }
    if raw.raw is not None and raw.value is None:
        row["raw"] = raw.raw
    else:
        row["record"] = raw.value if record is None else record
    return row
