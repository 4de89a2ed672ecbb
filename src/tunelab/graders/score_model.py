"""score_model: a language model reads the rendered input messages and answers with a score,
through any OpenAI-compatible chat completions endpoint (OpenAI, vLLM, a `tunelab serve` server).

The endpoint is the runtime's base_url (train.rft.score_model_base_url, `--base-url`), else the
openai client's default (OPENAI_BASE_URL, else api.openai.com), with OPENAI_API_KEY. The score is
read from the reply: a JSON object's "result" (OpenAI's structured form) or "score", else the
first number in the text; it is clamped to `range` (default [0, 1]). A reply with no number is a
zero with the reply as the reason (model_grader_parse_error); a failed request, a zero with the
server's error (model_grader_server_error).
"""
from __future__ import annotations

import json
import re
from typing import Any

from tunelab.graders.base import GradeFailure, GradeResult, check_keys, require_number, require_text, spec_error
from tunelab.graders.templating import check_template, render

FIELDS = ("type", "name", "input", "model", "range", "sampling_params", "pass_threshold")
REQUIRED = ("type", "name", "input", "model")
ROLES = ("system", "user", "assistant", "developer")
TEXT_PARTS = ("input_text", "output_text")
SAMPLING = {"temperature": "temperature", "top_p": "top_p", "seed": "seed",
            "max_completions_tokens": "max_completion_tokens", "reasoning_effort": "reasoning_effort"}
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def validate(spec: dict[str, Any], where: str | None) -> None:
    name = spec["name"]
    check_keys(spec, FIELDS, REQUIRED, name, where)
    require_text(spec, "model", name, where)
    messages = spec["input"]
    if not isinstance(messages, list) or not messages:
        raise spec_error(name, "input", "must be a non-empty list of messages ({role, content})", where)
    for number, message in enumerate(messages, start=1):
        if not isinstance(message, dict) or message.get("role") not in ROLES or "content" not in message:
            raise spec_error(name, "input", f"message {number} must have a role ({', '.join(ROLES)}) and content",
                             where)
        for text in _texts(message["content"], name, number, where):
            problem = check_template(text)
            if problem:
                raise spec_error(name, "input", f"message {number} has a bad template: {problem}", where)
    if "range" in spec:
        bounds = spec["range"]
        if (not isinstance(bounds, list) or len(bounds) != 2 or not all(_is_number(b) for b in bounds)
                or bounds[0] >= bounds[1]):
            raise spec_error(name, "range", f"must be two increasing numbers [low, high] (got {bounds!r})", where)
    params = spec.get("sampling_params", {})
    unknown = [k for k in params if k not in SAMPLING] if isinstance(params, dict) else ["(not a mapping)"]
    if unknown:
        raise spec_error(name, "sampling_params", f"has unknown setting {unknown[0]!r}", where,
                         fix=f"use {', '.join(SAMPLING)}")
    if "pass_threshold" in spec:
        require_number(spec, "pass_threshold", name, where)


def _texts(content: Any, name: str, number: int, where: str | None) -> list[str]:
    if isinstance(content, str):
        return [content]
    parts = content if isinstance(content, list) else [content]
    texts = []
    for part in parts:
        if not (isinstance(part, dict) and part.get("type") in TEXT_PARTS and isinstance(part.get("text"), str)):
            raise spec_error(name, "input", f"message {number} content must be text (a string, or input_text / "
                             "output_text parts); tunelab's score_model grader takes no images or audio", where)
        texts.append(part["text"])
    return texts


def messages_for(spec: dict[str, Any], sample: dict[str, Any], item: dict[str, Any] | None) -> list[dict[str, str]]:
    """The chat messages sent to the scoring model, templates rendered (developer becomes system,
    which every chat template knows)."""
    return [{"role": "system" if m["role"] == "developer" else m["role"],
             "content": "\n".join(render(t, sample, item) for t in _texts(m["content"], "", 0, None))}
            for m in spec["input"]]


def parse_score(reply: str) -> float | None:
    try:
        parsed = json.loads(reply)
    except json.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        value = parsed.get("result", parsed.get("score"))
        if _is_number(value):
            return float(value)
    if _is_number(parsed):
        return float(parsed)
    match = NUMBER.search(reply)
    return float(match.group()) if match else None


def grade(spec: dict[str, Any], sample: dict[str, Any], item: dict[str, Any] | None, runtime) -> GradeResult:
    messages = messages_for(spec, sample, item)
    params = {SAMPLING[k]: v for k, v in (spec.get("sampling_params") or {}).items() if v is not None}
    try:
        response = runtime.openai_client().chat.completions.create(model=spec["model"], messages=messages, **params)
    except Exception as exc:  # noqa: BLE001 (connection, HTTP status, timeout: the request failed)
        raise GradeFailure("model_grader_server_error", f"the scoring model's request failed "
                                                        f"({type(exc).__name__}: {str(exc)[:200]})") from None
    runtime.count_tokens(spec["model"], getattr(response, "usage", None))
    choice = response.choices[0].message
    if getattr(choice, "refusal", None):
        raise GradeFailure("model_grader_refusal_error", f"the scoring model refused: {choice.refusal[:200]}")
    reply = choice.content or ""
    score = parse_score(reply)
    if score is None:
        raise GradeFailure("model_grader_parse_error", f"the scoring model's reply has no score: {reply[:200]!r}")
    low, high = spec.get("range", [0, 1])
    clamped = min(max(score, float(low)), float(high))
    reason = None if clamped == score else f"the scoring model said {score:g}, outside the range [{low}, {high}]"
    return GradeResult(clamped, reason)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
