"""`tunelab grade`: one grader over a file of items and a file of model answers, line by line, to
see what a grader rewards (and why it gives 0) before training with it.

Items are the records the grader reads as `item` (a prompt JSONL, or a prepared directory's
test.jsonl). Answers are one per item, in the same order: JSON strings, or objects holding the
answer as "output_text", "model_sample" (OpenAI's name), "prediction" (`tunelab eval`'s
predictions.jsonl) or "completion", or chat records whose last message is the answer.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.errors import TunelabError
from tunelab.files import read_jsonl, write_jsonl
from tunelab.graders.base import MODEL_OUTPUT_ERRORS
from tunelab.graders.grade import grade
from tunelab.graders.runtime import GraderRuntime
from tunelab.graders.spec import Grader

ANSWER_KEYS = ("output_text", "model_sample", "prediction", "completion")


@dataclass
class GradeReport:
    rows: list[dict[str, Any]]
    mean: float
    std: float
    pass_rate: float | None
    failures: int

    def worst(self, count: int) -> list[dict[str, Any]]:
        return sorted(self.rows, key=lambda row: (row["score"], row["index"]))[:count]


def read_items(path: str) -> list[dict[str, Any]]:
    file = Path(path) / "test.jsonl" if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise TunelabError("item data not found", where=str(file), fix="give a JSONL file or a prepared directory")
    items = _read(file, "items")
    bad = next((i for i, item in enumerate(items, start=1) if not isinstance(item, dict)), None)
    if bad:
        raise TunelabError(f"item {bad} is not a JSON object", where=str(file), fix="give one record per line")
    return items


def read_answers(path: str) -> list[str]:
    answers = []
    for number, row in enumerate(_read(Path(path), "answers"), start=1):
        answer = _answer_of(row)
        if answer is None:
            raise TunelabError(f"line {number} holds no answer", where=path,
                               fix=f"write a JSON string, or an object with one of {', '.join(ANSWER_KEYS)}, or a "
                                   "chat record ending with the answer")
        answers.append(answer)
    return answers


def _answer_of(row: Any) -> str | None:
    if isinstance(row, str):
        return row
    if not isinstance(row, dict):
        return None
    for key in ANSWER_KEYS:
        if isinstance(row.get(key), str):
            return row[key]
    messages = row.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict) \
            and messages[-1].get("role") == "assistant":
        return messages[-1].get("content")
    return None


def _read(path: Path, what: str) -> list[Any]:
    if not path.is_file():
        raise TunelabError(f"{what} file not found", where=str(path), fix="check the path")
    try:
        return read_jsonl(path)
    except ValueError as exc:
        raise TunelabError(f"the {what} file is not JSONL ({exc})", where=str(path),
                           fix="write one JSON value per line") from None


def grade_all(grader: Grader, items: list[dict[str, Any]], answers: list[str], *, runtime: GraderRuntime,
              where: str) -> GradeReport:
    if len(items) != len(answers):
        raise TunelabError(f"{len(items)} items but {len(answers)} answers", where=where,
                           fix="give one answer per item, in the same order")
    rows = []
    for index, (item, answer) in enumerate(zip(items, answers), start=1):
        result = grade(grader, answer, item, runtime=runtime)
        rows.append({"index": index, "score": result.score, "reason": result.reason, "error": result.error,
                     "sub_scores": result.sub_scores, "output_text": answer, "item": item})
    scores = np.asarray([row["score"] for row in rows], dtype=float)
    threshold = grader.pass_threshold
    return GradeReport(rows, float(scores.mean()) if rows else 0.0, float(scores.std()) if rows else 0.0,
                       float((scores >= threshold).mean()) if threshold is not None and rows else None,
                       sum(1 for row in rows if row["error"] and row["error"] not in MODEL_OUTPUT_ERRORS))


def write_results(path: Path, report: GradeReport) -> None:
    write_jsonl(path, report.rows)
