"""Where `label select` finds its candidates (I/O at the edge): a pool file of unlabelled records
or the prediction log of a served model, read into one shape, and the records that are already
labelled (the run's training data, labelled files), by the data stage's exact key.

A candidate is a dict: "text" (what the diversity step embeds and the dedup compares), for
classification the text itself, for generative runs "messages" (the prompt turns) and "answer"
(the served answer; None until generated), "origin" (where it came from: source and line, or
the log's request_id and model_version) and "negative" (a person marked the answer bad).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunelab.data import dedup, readers
from tunelab.data.text import joined_text
from tunelab.errors import TunelabError
from tunelab.files import read_jsonl
from tunelab.monitor.features import answered, logged_input_text, messages_text
from tunelab.monitor.window import split_window
from tunelab.train.run_dir import RunDir


def prompt_key(record: dict[str, Any]) -> str:
    """The data stage's exact key of what a person labels: a classification record's text, or a
    conversation's turns before its final reply (a labelled chat and its unanswered prompt match)."""
    if "messages" in record:
        messages = record["messages"]
        if messages and messages[-1].get("role") == "assistant":
            messages = messages[:-1]
        return dedup.exact_key(joined_text({"messages": messages}))
    return dedup.exact_key(joined_text({"text": str(record.get("text", ""))}))


def labelled_keys(run: RunDir, files: list[str]) -> set[str]:
    """Exact keys of what is already labelled: the run's training records and the given files."""
    # a model directory tunelab did not train names no training data: nothing of it to leave out
    keys = {prompt_key(r) for r in run.training_records()} if run.training_sources() else set()
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise TunelabError("labelled file not found", where=name, fix="pass a JSONL of labelled records")
        try:
            keys |= {prompt_key(r) for r in read_jsonl(path)}
        except (ValueError, AttributeError) as exc:
            raise TunelabError(f"labelled file is not JSONL of records ({exc})", where=name,
                               fix="pass canonical JSONL records (text/label or messages)") from None
    return keys


def pool_candidates(spec: str, *, generative: bool, text_column: str) -> list[dict[str, Any]]:
    """Candidates from a pool file (.jsonl .json .csv .tsv .parquet): classification runs read
    `text_column`; generative runs read chat records (the turns before a final assistant reply),
    `prompt`, or `text_column` as one user turn."""
    candidates = []
    for raw in readers.read_input(spec):
        where = f"{spec} {raw.unit} {raw.line}"
        if raw.problem:
            raise TunelabError(f"the pool record cannot be read ({raw.problem.detail})", where=where,
                               fix="fix or remove that record")
        value = raw.value if isinstance(raw.value, dict) else {}
        origin = {"source": spec, "line": raw.line}
        if generative:
            messages = _prompt_messages(value, text_column)
            if messages is not None:
                candidates.append({"text": messages_text(messages), "messages": messages, "answer": None,
                                   "origin": origin, "negative": False})
                continue
        elif isinstance(value.get(text_column), str) and value[text_column].strip():
            candidates.append({"text": value[text_column], "origin": origin, "negative": False})
            continue
        keys = ", ".join(sorted(value)[:8]) or f"a {type(raw.value).__name__}"
        wanted = (f"messages, prompt or {text_column!r}" if generative else f"a {text_column!r} text field")
        raise TunelabError(f"the pool record has no {wanted} (it has {keys})", where=where,
                           fix="name the text field with --text-column (label.text_column), or pass records "
                               "with one")
    if not candidates:
        raise TunelabError("the pool holds no records", where=spec, fix="pass a file with records to choose from")
    return candidates


def _prompt_messages(value: dict[str, Any], text_column: str) -> list[dict[str, str]] | None:
    messages = value.get("messages")
    if isinstance(messages, list) and messages and all(isinstance(m, dict) for m in messages):
        if messages[-1].get("role") == "assistant":
            messages = messages[:-1]
        return [{"role": str(m.get("role")), "content": str(m.get("content", ""))} for m in messages] or None
    for key in ("prompt", text_column):
        if isinstance(value.get(key), str) and value[key].strip():
            return [{"role": "user", "content": value[key]}]
    return None


def log_candidates(path: str, *, generative: bool, window: int | str | None) -> list[dict[str, Any]]:
    """Candidates from the prediction log: the answered requests of the window (classification
    rows carry a label, generative ones do not), each with its served answer and whether a
    person marked it bad (feedback)."""
    from tunelab.serve.predlog import read_feedback, read_predictions
    rows = read_predictions(path)
    if rows and window is not None:
        rows = split_window(rows, window, where=path)[0]
    rows = [r for r in answered(rows) if (r.get("label") is None) == generative]
    if not rows:
        kind = "generated answers" if generative else "classifications"
        raise TunelabError(f"the prediction log holds no answered {kind} in the window", where=path,
                           fix="serve the run and send it traffic first, or widen label.select.window")
    bad = {f["request_id"] for f in read_feedback(path, request_ids=[r["request_id"] for r in rows])
           if is_negative(f)}
    candidates = []
    for row in rows:
        origin = {"source": "log", "request_id": row["request_id"], "model_version": row.get("model_version")}
        if generative:
            messages = logged_messages(row.get("input"))
            candidates.append({"text": messages_text(messages), "messages": messages, "answer": row["output"],
                               "origin": origin, "negative": row["request_id"] in bad})
        else:
            candidates.append({"text": logged_input_text(row.get("input")), "origin": origin,
                               "negative": row["request_id"] in bad})
    return candidates


def is_negative(feedback: dict[str, Any]) -> bool:
    """A person said the served answer was wrong: thumbs down, 1-2 stars, a correction, a
    preferred answer, or a label other than the one served."""
    rating, scale = feedback.get("rating"), feedback.get("rating_scale")
    if rating is not None and ((scale == "thumbs" and rating < 0) or (scale == "stars" and rating <= 2)):
        return True
    served = (feedback.get("prediction") or {}).get("label")
    wrong_label = feedback.get("label") is not None and served is not None and feedback["label"] != served
    return bool(feedback.get("corrected") or feedback.get("preferred") or wrong_label)


def logged_messages(value: str | None) -> list[dict[str, str]]:
    """A chat request is logged as its JSON messages, a completion as its prompt text."""
    if value and value.startswith("["):
        try:
            messages = json.loads(value)
        except ValueError:
            messages = None
        if isinstance(messages, list) and all(isinstance(m, dict) and "content" in m for m in messages):
            return [{"role": str(m.get("role", "user")), "content": str(m["content"])} for m in messages]
    return [{"role": "user", "content": value or ""}]
