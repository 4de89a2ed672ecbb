"""Label Studio's JSON formats, read and written directly (label-studio-sdk is not a dependency:
it pins an older numpy). Following Label Studio's documented task format:

- import (what we write): a JSON array of tasks, each {"id", "data": {...}}; the labelling
  interface is a separate XML config (written beside the tasks) whose `$name` variables read
  `data` keys: `<Text name="text" value="$text"/>` with `<Choices name="label" toName="text">`
  for classification; prompt and answer texts with `<Rating name="rating">` and
  `<TextArea name="corrected">` for a review of generated answers.
- export (what we read): the same tasks with "annotations": [{"id", "completed_by" (a user id,
  or an object with id/email), "was_cancelled", "result": [{"from_name", "to_name", "type",
  "value"}]}]; a choices result's value is {"choices": [label]}, a textarea's {"text": [text]},
  a rating's {"rating": n}. Cancelled annotations and tasks nobody annotated are skipped.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from tunelab.errors import TunelabError

FIX = "export the project from Label Studio as JSON (Export > JSON), or repair that entry"


def classification_config(labels: list[str]) -> str:
    choices = "\n".join(f"    <Choice value={quoteattr(label)}/>" for label in labels)
    return ('<View>\n  <Text name="text" value="$text"/>\n'
            '  <Choices name="label" toName="text" choice="single" showInLine="true">\n'
            f"{choices}\n  </Choices>\n</View>\n")


def review_config(max_rating: int = 5) -> str:
    return ('<View>\n  <Header value="Prompt"/>\n  <Text name="prompt" value="$prompt"/>\n'
            '  <Header value="Answer"/>\n  <Text name="answer" value="$answer"/>\n'
            f'  <Rating name="rating" toName="answer" maxRating="{max_rating}"/>\n'
            '  <TextArea name="corrected" toName="answer" rows="4" '
            'placeholder="The corrected answer (leave empty when the answer is right)"/>\n</View>\n')


def tasks(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tasks to import: each item's fields become the task's data."""
    return [{"id": n, "data": item} for n, item in enumerate(items, start=1)]


def read_export(path: Path) -> list[dict[str, Any]]:
    """One annotation per dict: {"data": task data, "annotator", "label", "corrected", "rating",
    "task"}; raises a TunelabError naming the task (and annotation) whose fields are missing."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TunelabError(f"the Label Studio export is not readable JSON ({exc})", where=str(path), fix=FIX) from None
    if isinstance(loaded, dict):
        loaded = [loaded]
    if not isinstance(loaded, list):
        raise TunelabError("the Label Studio export is not a list of tasks", where=str(path), fix=FIX)
    found = []
    for t, task in enumerate(loaded, start=1):
        where = f"{path} task {task.get('id', t) if isinstance(task, dict) else t}"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise TunelabError("the task has no `data` object", where=where, fix=FIX)
        annotations = task.get("annotations", task.get("completions", []))  # completions: Label Studio < 1.0
        if not isinstance(annotations, list):
            raise TunelabError("the task's `annotations` is not a list", where=where, fix=FIX)
        for a, annotation in enumerate(annotations, start=1):
            if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
                continue
            found.append(_annotation(annotation, task["data"], f"{where} annotation {a}"))
    return found


def _annotation(annotation: dict[str, Any], data: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(annotation.get("result"), list):
        raise TunelabError("the annotation has no `result` list", where=where, fix=FIX)
    annotator = annotation.get("completed_by")
    if isinstance(annotator, dict):
        annotator = annotator.get("email") or annotator.get("id")
    if annotator is None or annotator == "":
        raise TunelabError("the annotation has no `completed_by` (who annotated it)", where=where, fix=FIX)
    found = {"data": data, "annotator": str(annotator), "label": None, "corrected": None, "rating": None,
             "where": where}
    for result in annotation["result"]:
        kind = result.get("type") if isinstance(result, dict) else None
        value = result.get("value") if isinstance(result, dict) else None
        if kind is None or not isinstance(value, dict):
            raise TunelabError("a result has no `type` and `value`", where=where, fix=FIX)
        if kind == "choices":
            choices = value.get("choices")
            if not (isinstance(choices, list) and choices and isinstance(choices[0], str)):
                raise TunelabError("a choices result has no `value.choices`", where=where, fix=FIX)
            if len(choices) > 1:
                raise TunelabError(f"the annotation picks {len(choices)} labels ({', '.join(choices)})", where=where,
                                   fix="use a single-choice interface (choice=\"single\") and annotate again")
            found["label"] = choices[0]
        elif kind == "textarea":
            text = value.get("text")
            if not (isinstance(text, list) and all(isinstance(t, str) for t in text)):
                raise TunelabError("a textarea result has no `value.text` list", where=where, fix=FIX)
            found["corrected"] = "\n".join(text).strip() or None
        elif kind == "rating":
            if not isinstance(value.get("rating"), (int, float)):
                raise TunelabError("a rating result has no `value.rating` number", where=where, fix=FIX)
            found["rating"] = float(value["rating"])
    return found
