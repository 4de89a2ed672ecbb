"""The text fields of canonical records: one place that knows where a record keeps its text."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


def text_fields(record: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(name, value) for every free-text field, e.g. ("message 2", "..."), ("text", "...")."""
    if "messages" in record:
        for i, message in enumerate(record["messages"], start=1):
            yield f"message {i}", message.get("content") if isinstance(message, dict) else None
        return
    if "chosen" in record:
        prompt = record["prompt"]
        if isinstance(prompt, list):
            for i, message in enumerate(prompt, start=1):
                yield f"prompt message {i}", message.get("content") if isinstance(message, dict) else None
        else:
            yield "prompt", prompt
        yield "chosen", record["chosen"]
        yield "rejected", record["rejected"]
        return
    yield "text", record.get("text")


def map_text_fields(record: dict[str, Any], fn: Callable[[str], str]) -> None:
    """Apply fn to every free-text string of the record, in place."""
    def message_list(messages: list) -> None:
        for message in messages:
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                message["content"] = fn(message["content"])

    if "messages" in record:
        message_list(record["messages"])
        for key, value in record.items():  # a prompt record's own fields (its reference answer, say)
            if key not in ("messages", "meta") and isinstance(value, str):
                record[key] = fn(value)
        return
    keys = ("chosen", "rejected") if "chosen" in record else ("text",)
    if "chosen" in record:
        if isinstance(record["prompt"], list):
            message_list(record["prompt"])
        elif isinstance(record["prompt"], str):
            record["prompt"] = fn(record["prompt"])
    for key in keys:
        if isinstance(record.get(key), str):
            record[key] = fn(record[key])


def joined_text(record: dict[str, Any]) -> str:
    """All text of a record with its structure marked, for hashing and near-duplicate search."""
    return "\n".join(f"{name}: {value}" if "message" in name else str(value)
                     for name, value in _structured(record))


def _structured(record: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    if "messages" in record:
        for message in record["messages"]:
            yield f"message {message.get('role')}", message.get("content")
        return
    yield from text_fields(record)


def char_length(record: dict[str, Any]) -> int:
    return sum(len(v) for _, v in text_fields(record) if isinstance(v, str))
