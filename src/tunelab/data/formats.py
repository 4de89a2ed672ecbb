"""Input formats and their conversion to the canonical records of DESIGN.md.

generative:     {"messages": [{"role", "content"}, ...]}
classification: {"text", "label"}
preference:     {"prompt": messages-or-str, "chosen": str, "rejected": str}; OpenAI's DPO file
                ({"input": {"messages"}, "preferred_output": [assistant message],
                "non_preferred_output": [assistant message]}) becomes one too
prompt:         {"messages": [..., {"role": "user", ...}], ...extra fields}: a conversation up to the
                user's turn, for reinforcement fine-tuning; other top-level fields (a reference
                answer, say) are kept as they are for the grader (`{{ item.answer }}`)
Every record may carry "meta"; a user-supplied meta mapping is kept.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from tunelab.data.records import RecordProblem

KIND_OF_FORMAT = {
    "chat": "generative",
    "sharegpt": "generative",
    "alpaca": "generative",
    "prompt_completion": "generative",
    "preference": "preference",
    "openai_preference": "preference",
    "classification": "classification",
    "prompts": "prompt",
}
SHAREGPT_ROLES = {
    "system": "system", "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bot": "assistant", "model": "assistant",
}
DETECTION_SAMPLE = 200


def format_of(value: Any, text_column: str = "text", label_column: str = "label") -> str | None:
    """The format one record looks like, by its keys; None when it looks like none."""
    if not isinstance(value, dict):
        return None
    keys = value.keys()
    if "messages" in keys:
        return "prompts" if _ends_with_user(value["messages"]) else "chat"
    if "conversations" in keys:
        return "sharegpt"
    if {"prompt", "chosen", "rejected"} <= keys:
        return "preference"
    if {"input", "preferred_output", "non_preferred_output"} <= keys:
        return "openai_preference"
    if {"instruction", "output"} <= keys:
        return "alpaca"
    if {"prompt", "completion"} <= keys:
        return "prompt_completion"
    if {text_column, label_column} <= keys:
        return "classification"
    return None


def detect_format(values: Iterable[Any], text_column: str = "text", label_column: str = "label") -> str | None:
    """The format most of the first records of a file look like."""
    votes = Counter()
    for value in values:
        fmt = format_of(value, text_column, label_column)
        if fmt:
            votes[fmt] += 1
        if sum(votes.values()) >= DETECTION_SAMPLE:
            break
    return votes.most_common(1)[0][0] if votes else None


def to_canonical(value: Any, fmt: str, text_column: str = "text", label_column: str = "label",
                 group_column: str | None = None) -> dict[str, Any]:
    """Convert one parsed record; raises RecordProblem when it does not fit `fmt`."""
    if not isinstance(value, dict):
        raise RecordProblem("not_an_object", f"expected a JSON object, got {type(value).__name__}")
    converter = _CONVERTERS[fmt]
    record = converter(value, text_column, label_column) if fmt == "classification" else converter(value)
    meta = dict(value["meta"]) if isinstance(value.get("meta"), dict) else {}
    if group_column and value.get(group_column) not in (None, ""):
        meta["group"] = str(value[group_column])
    if meta:
        record["meta"] = meta
    return record


def _require(value: dict, *keys: str) -> None:
    missing = [k for k in keys if k not in value or value[k] is None]
    if missing:
        raise RecordProblem("missing_field", f"missing field{'s' if len(missing) > 1 else ''} "
                            f"{', '.join(repr(k) for k in missing)}")


def _string(value: dict, key: str) -> str:
    if not isinstance(value[key], str):
        raise RecordProblem("wrong_type", f"field '{key}' must be a string, got {type(value[key]).__name__}")
    return value[key]


def _chat(value: dict) -> dict:
    _require(value, "messages")
    return {"messages": value["messages"]}


def _ends_with_user(messages: Any) -> bool:
    return isinstance(messages, list) and bool(messages) and isinstance(messages[-1], dict) \
        and messages[-1].get("role") == "user"


def _prompts(value: dict) -> dict:
    _require(value, "messages")
    return {"messages": value["messages"], **{k: v for k, v in value.items() if k not in ("messages", "meta")}}


def _sharegpt(value: dict) -> dict:
    _require(value, "conversations")
    turns = value["conversations"]
    if not isinstance(turns, list):
        raise RecordProblem("wrong_type", f"field 'conversations' must be a list, got {type(turns).__name__}")
    messages = []
    if isinstance(value.get("system"), str) and value["system"].strip():
        messages.append({"role": "system", "content": value["system"]})
    for i, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise RecordProblem("wrong_type", f"conversation turn {i} must be an object with 'from' and 'value'")
        role = SHAREGPT_ROLES.get(str(turn["from"]).lower())
        if role is None:
            raise RecordProblem("wrong_type", f"conversation turn {i} has unknown speaker {turn['from']!r}")
        messages.append({"role": role, "content": turn["value"]})
    return {"messages": messages}


def _alpaca(value: dict) -> dict:
    _require(value, "instruction", "output")
    prompt = _string(value, "instruction")
    extra = value.get("input")
    if extra not in (None, ""):
        if not isinstance(extra, str):
            raise RecordProblem("wrong_type", f"field 'input' must be a string, got {type(extra).__name__}")
        prompt = f"{prompt}\n\n{extra}"
    messages = []
    if isinstance(value.get("system"), str) and value["system"].strip():
        messages.append({"role": "system", "content": value["system"]})
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": value["output"]}]
    return {"messages": messages}


def _prompt_completion(value: dict) -> dict:
    _require(value, "prompt", "completion")
    prompt = value["prompt"]
    completion = _assistant_text(value, "completion")
    if isinstance(prompt, list):
        return {"messages": [*prompt, {"role": "assistant", "content": completion}]}
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]}


def _preference(value: dict) -> dict:
    _require(value, "prompt", "chosen", "rejected")
    return {"prompt": value["prompt"], "chosen": _assistant_text(value, "chosen"),
            "rejected": _assistant_text(value, "rejected")}


def _openai_preference(value: dict) -> dict:
    """OpenAI's DPO line: the conversation so far in input.messages, each answer a list holding
    one assistant message."""
    _require(value, "input", "preferred_output", "non_preferred_output")
    source = value["input"]
    if not isinstance(source, dict) or "messages" not in source:
        raise RecordProblem("wrong_type", "field 'input' must be an object with 'messages'")
    answers = {}
    for key in ("preferred_output", "non_preferred_output"):
        answer = value[key]
        if not (isinstance(answer, list) and len(answer) == 1 and isinstance(answer[0], dict)
                and answer[0].get("role") == "assistant" and "content" in answer[0]):
            raise RecordProblem("wrong_type", f"field '{key}' must be a list holding one assistant message")
        answers[key] = answer[0]["content"]
    return {"prompt": source["messages"], "chosen": answers["preferred_output"],
            "rejected": answers["non_preferred_output"]}


def _assistant_text(value: dict, key: str) -> Any:
    """TRL's conversational form gives a list holding one assistant message: take its content."""
    field = value[key]
    if isinstance(field, list) and len(field) == 1 and isinstance(field[0], dict) and "content" in field[0]:
        return field[0]["content"]
    return field


def _classification(value: dict, text_column: str, label_column: str) -> dict:
    _require(value, text_column, label_column)
    label = value[label_column]
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        raise RecordProblem("wrong_type", f"label '{label_column}' must be a string or integer, "
                            f"got {type(label).__name__}")
    return {"text": value[text_column], "label": str(label).strip()}


_CONVERTERS = {
    "chat": _chat, "sharegpt": _sharegpt, "alpaca": _alpaca, "prompt_completion": _prompt_completion,
    "preference": _preference, "openai_preference": _openai_preference, "classification": _classification, "prompts": _prompts,
}
