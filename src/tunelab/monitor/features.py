"""What the monitor measures on each side: the same features from reference records (canonical
data) and from prediction-log rows, so the two can be compared value for value.

Reference records are canonical records (DESIGN.md); log rows are the prediction log's columns
(src/tunelab/serve/predlog.py). Pure functions: no I/O.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from tunelab.data.pii import PLACEHOLDERS, PiiDetector

OUTCOMES = ("ok", "blocked", "rejected", "error")


def prompt_text(record: dict[str, Any]) -> str:
    """The part of a canonical record a client would send: the text of a classification record,
    the turns before the last assistant turn of a conversation, the prompt of a preference pair."""
    if "messages" in record:
        messages = record["messages"]
        last_reply = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=len(messages))
        return messages_text(messages[:last_reply])
    if "prompt" in record:
        prompt = record["prompt"]
        return prompt if isinstance(prompt, str) else messages_text(prompt)
    return str(record.get("text", ""))


def reply_text(record: dict[str, Any]) -> str | None:
    """The answer a model is trained to give: the last assistant turn (or a preference pair's
    chosen answer); None for classification records."""
    if "messages" in record:
        replies = [m.get("content", "") for m in record["messages"] if m.get("role") == "assistant"]
        return replies[-1] if replies else None
    return record.get("chosen")


def messages_text(messages: Iterable[dict[str, Any]]) -> str:
    return "\n".join(content_text(m.get("content")) for m in messages)


def content_text(content: Any) -> str:
    """A message's content: a string, or OpenAI-style parts ([{"type": "text", "text": ...}])."""
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def logged_input_text(value: str | None) -> str:
    """A log row's input: chat endpoints store the messages as JSON, the others the plain text."""
    if not value:
        return ""
    if value.startswith("["):
        try:
            messages = json.loads(value)
        except ValueError:
            return value
        if isinstance(messages, list) and all(isinstance(m, dict) and "content" in m for m in messages):
            return messages_text(messages)
    return value


def outcome(row: dict[str, Any]) -> str:
    """ok; blocked by the guard; rejected (another 4xx: auth, size, validation); error (5xx)."""
    if row.get("blocked_reason"):
        return "blocked"
    status = row.get("status") or 200
    if status >= 500:
        return "error"
    return "rejected" if status >= 400 else "ok"


def answered(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows the model actually answered: the only ones with a meaningful output or label."""
    return [r for r in rows if outcome(r) == "ok" and r.get("output") is not None]


def has_pii(text: str, detector: PiiDetector) -> bool:
    """A text with PII: redacted (a typed placeholder) or, in data that was never redacted, found
    by the data stage's detector; so redacted and raw data measure the same thing."""
    return any(p in text for p in PLACEHOLDERS.values()) or bool(detector.find(text))


def text_features(texts: list[str], detector: PiiDetector) -> dict[str, list]:
    return {"input_chars": [len(t) for t in texts],
            "input_words": [len(t.split()) for t in texts],
            "pii": ["with PII" if has_pii(t, detector) else "without PII" for t in texts]}


def reference_features(records: list[dict[str, Any]], detector: PiiDetector) -> dict[str, list]:
    """Feature values of reference records: input lengths and PII for all; the label for
    classification; the reply length for generative data."""
    values = text_features([prompt_text(r) for r in records], detector)
    labels = [str(r["label"]) for r in records if "label" in r and "messages" not in r]
    if labels:
        values["label"] = labels
    replies = [reply_text(r) for r in records]
    if any(reply is not None for reply in replies):
        values["output_chars"] = [len(reply) for reply in replies if reply is not None]
    return values


def log_features(rows: list[dict[str, Any]], detector: PiiDetector) -> dict[str, list]:
    """Feature values of prediction-log rows. Inputs count for every request that got as far as
    having one (blocked ones too: a wave of attacks is a change in traffic; a request refused
    before its body was read, such as a bad API key, has none); labels, confidences and output
    lengths only for requests the model answered. Classification rows are the ones with a label."""
    values = text_features([logged_input_text(r["input"]) for r in rows if r.get("input") is not None], detector)
    done = answered(rows)
    classified = [r for r in done if r.get("label") is not None]
    generated = [r for r in done if r.get("label") is None]
    values["label"] = [str(r["label"]) for r in classified]
    values["confidence"] = [float(r["confidence"]) for r in classified if r.get("confidence") is not None]
    values["output_chars"] = [len(r["output"]) for r in generated]
    values["outcome"] = [outcome(r) for r in rows]
    return values
