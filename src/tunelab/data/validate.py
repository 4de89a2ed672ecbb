"""Validation of canonical records: each check returns the first problem, with its reason code.

Reason codes are stable (they key report.json's rejects_by_reason):
wrong_type, missing_field, empty_content, unknown_role, roles_out_of_order, no_final_assistant,
no_final_user, identical_pair, unknown_label, control_characters, too_long, bad_weight, nothing_to_train.
"""
from __future__ import annotations

import re
from typing import Any

from tunelab.data.records import Problem
from tunelab.data.text import char_length, text_fields

ROLES = ("system", "user", "assistant")
# C0 and C1 control characters other than tab, newline and carriage return
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def validate_record(record: dict[str, Any], kind: str, *, labels: set[str] | None = None,
                    max_chars: int = 100_000) -> Problem | None:
    """The first problem that makes the record unusable, or None. (Token limits need a tokenizer
    and are checked by the caller, which counts tokens once for both the limit and the report.)"""
    structural = {"generative": _check_messages_record, "preference": _check_preference,
                  "classification": _check_classification, "prompt": _check_prompt_record}[kind]
    problem = structural(record) or _check_texts(record)
    if problem:
        return problem
    if kind == "classification" and labels is not None and record["label"] not in labels:
        return Problem("unknown_label", f"label {record['label']!r} is not in the declared set "
                       f"{sorted(labels)} (data.labels)")
    length = char_length(record)
    if length > max_chars:
        return Problem("too_long", f"{length:,} characters, over the limit of {max_chars:,} (data.max_chars)")
    return None


def _check_texts(record: dict[str, Any]) -> Problem | None:
    for name, value in text_fields(record):
        if not isinstance(value, str):
            return Problem("wrong_type", f"{name} must be a string, got {type(value).__name__}")
        if not value.strip():
            return Problem("empty_content", f"{name} is empty")
        bad = CONTROL.search(value)
        if bad:
            return Problem("control_characters", f"{name} contains control character "
                           f"U+{ord(bad.group()):04X} at position {bad.start() + 1}")
    return None


def _check_messages(messages: Any, *, must_end_with_assistant: bool) -> Problem | None:
    if not isinstance(messages, list):
        return Problem("wrong_type", f"messages must be a list, got {type(messages).__name__}")
    if not messages:
        return Problem("empty_content", "messages is an empty list")
    previous = None
    for i, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            return Problem("wrong_type", f"message {i} must be an object, got {type(message).__name__}")
        if "role" not in message or "content" not in message:
            return Problem("missing_field", f"message {i} lacks 'role' or 'content'")
        role = message["role"]
        if role not in ROLES:
            return Problem("unknown_role", f"message {i} has role {role!r}; expected one of {', '.join(ROLES)}")
        expected = _expected_roles(previous)
        if role not in expected:
            return Problem("roles_out_of_order", f"message {i} is {role!r} after "
                           f"{previous or 'the start'!r}; expected {' or '.join(map(repr, expected))}")
        if "weight" in message and (isinstance(message["weight"], bool) or message["weight"] not in (0, 1)):
            return Problem("bad_weight", f"message {i} has weight {message['weight']!r}; a weight is 0 (not trained on) "
                           "or 1 (trained on)")
        previous = role
    if must_end_with_assistant and previous != "assistant":
        return Problem("no_final_assistant", f"the conversation ends with {previous!r}, not 'assistant'")
    if must_end_with_assistant and all(m.get("weight") == 0 for m in messages if m["role"] == "assistant"):
        return Problem("nothing_to_train", "every assistant message has weight 0, so nothing in it is trained on")
    return None


def _expected_roles(previous: str | None) -> tuple[str, ...]:
    # system may open a conversation; after that user and assistant alternate, user first
    return {None: ("system", "user"), "system": ("user",), "user": ("assistant",),
            "assistant": ("user",)}[previous]


def _check_messages_record(record: dict[str, Any]) -> Problem | None:
    return _check_messages(record["messages"], must_end_with_assistant=True)


def _check_prompt_record(record: dict[str, Any]) -> Problem | None:
    """A prompt for reinforcement fine-tuning: a conversation the model is to continue, so it ends
    with the user's turn. Its other fields are the grader's business."""
    problem = _check_messages(record["messages"], must_end_with_assistant=False)
    if problem is None and record["messages"][-1]["role"] != "user":
        return Problem("no_final_user", f"the conversation ends with {record['messages'][-1]['role']!r}, not "
                       "'user': a prompt ends with the turn the model answers")
    return problem


def _check_preference(record: dict[str, Any]) -> Problem | None:
    prompt = record["prompt"]
    if isinstance(prompt, list):
        problem = _check_messages(prompt, must_end_with_assistant=False)
        if problem:
            return problem
        if prompt[-1]["role"] != "user":
            return Problem("roles_out_of_order", "the prompt must end with a 'user' message")
    elif not isinstance(prompt, str):
        return Problem("wrong_type", f"prompt must be a string or a list of messages, got {type(prompt).__name__}")
    problem = _check_texts(record)
    if problem:
        return problem
    if record["chosen"].strip() == record["rejected"].strip():
        return Problem("identical_pair", "chosen and rejected are the same text")
    return None


def _check_classification(record: dict[str, Any]) -> Problem | None:
    if not record["label"]:
        return Problem("empty_content", "label is empty")
    return None
