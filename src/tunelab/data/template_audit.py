"""Chat-template audit: does the user's tokenizer render their conversations so that training
learns what they think it learns?

For a sample of conversations it checks that the template renders, that the rendered text
survives tokenize/decode unchanged, that every message's content appears verbatim, that every
assistant turn is followed by the end-of-turn token, and that assistant-only loss trains each
reply with its end-of-turn token: where the template marks assistant spans with
{% generation %} (what TRL's assistant_only_loss uses for the loss mask), that the end-of-turn
token lies inside that span, since a model that is never trained on it never learns to stop;
where it has no markers (and TRL has no marked copy of it), that `tunelab train` finds the spans
by rendering each turn (tunelab.train.assistant_spans), and that each decodes to the reply plus
the end token.
"""
from __future__ import annotations

from typing import Any

from tunelab.train.assistant_spans import (GENERATION_MARKERS, RENDERED_SPANS, NoConsistentSpans,
                                           has_generation_markers, loss_mask_source, tokenize_with_spans)

MAX_EXAMPLES = 5


def make_token_counter(tokenizer, kind: str):
    """record -> number of tokens the model will see for it."""
    can_render = bool(getattr(tokenizer, "chat_template", None))

    def count(record: dict[str, Any]) -> int:
        if kind in ("generative", "prompt"):
            if can_render:
                try:
                    return len(tokenizer.apply_chat_template(record["messages"], tokenize=True, return_dict=True)["input_ids"])
                except Exception:  # a template that fails on this record is reported by the audit
                    pass
            text = "\n".join(str(m.get("content", "")) for m in record["messages"])
        elif kind == "preference":
            prompt = record["prompt"]
            prompt_text = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
            text = f"{prompt_text}\n{max(record['chosen'], record['rejected'], key=len)}"
        else:
            text = record["text"]
        return len(tokenizer(text, add_special_tokens=True)["input_ids"])

    return count


def audit_chat_template(tokenizer, conversations: list[list[dict[str, str]]], *,
                        end_token: str | None = None, name: str = "") -> dict[str, Any]:
    end_token = end_token or tokenizer.eos_token
    template = getattr(tokenizer, "chat_template", None) or ""
    has_markers = has_generation_markers(template)
    report: dict[str, Any] = {
        "tokenizer": name, "has_template": bool(template), "has_generation_markers": has_markers,
        # how `tunelab train` finds the assistant tokens: the template's markers, TRL's marked copy of
        # it, or spans found by rendering each turn (assistant_spans)
        "loss_mask": loss_mask_source(tokenizer) if template else None,
        "end_token": end_token, "checked": 0, "render_failures": 0, "roundtrip_failures": 0,
        "content_missing": 0, "end_token_missing": 0, "end_token_outside_mask": 0,
        "inconsistent_spans": 0, "spans_missing_reply_or_end": 0,
        "problems": [], "examples": [],
    }
    if not template:
        report["problems"].append("the tokenizer has no chat template, so chat data cannot be rendered; "
                                  "give a tokenizer with one or set tokenizer.chat_template")
        report["ok"] = False
        return report
    end_id = tokenizer.convert_tokens_to_ids(end_token) if end_token else None
    for index, messages in enumerate(conversations):
        report["checked"] += 1
        for problem in _conversation_problems(tokenizer, messages, end_token, end_id, report):
            if len(report["examples"]) < MAX_EXAMPLES:
                report["examples"].append({"conversation": index, "problem": problem})
    _summarise(report)
    return report


def _conversation_problems(tokenizer, messages, end_token, end_id, counts) -> list[str]:
    try:
        rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception as exc:  # jinja raises many types; each is a finding, not a crash
        counts["render_failures"] += 1
        return [f"the template failed to render: {exc}"]
    problems = []
    ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    if tokenizer.decode(ids) != rendered:
        counts["roundtrip_failures"] += 1
        problems.append("tokenize then decode changes the rendered text")
    cursor = 0
    for message in messages:
        found = rendered.find(message["content"], cursor)
        if found < 0:
            counts["content_missing"] += 1
            problems.append(f"the {message['role']} content does not appear verbatim in the rendered text")
            continue
        cursor = found + len(message["content"])
        if message["role"] == "assistant" and end_token and not rendered[cursor:].lstrip(" ").startswith(end_token):
            counts["end_token_missing"] += 1
            problems.append(f"an assistant turn is not followed by the end token {end_token!r}")
    if counts["loss_mask"] == GENERATION_MARKERS and end_id is not None:
        outside = _end_tokens_outside_mask(tokenizer, messages, end_id)
        if outside:
            counts["end_token_outside_mask"] += outside
            problems.append(f"the end token {end_token!r} falls outside the assistant loss mask "
                            f"({outside} turn{'s' if outside > 1 else ''})")
    if counts["loss_mask"] == RENDERED_SPANS:
        # a span cannot be the reply plus its end token when either is already missing: said once, above
        problems += _rendered_span_problems(tokenizer, messages, end_token, counts, check_text=not problems)
    return problems


def _rendered_span_problems(tokenizer, messages, end_token, counts, check_text: bool) -> list[str]:
    """The spans `tunelab train` would find by rendering: consistent, and each holding the reply and
    ending with the end token (text the template writes before the reply is generated, so trained)."""
    try:
        encoded = tokenize_with_spans(tokenizer, messages)
    except NoConsistentSpans as exc:
        counts["inconsistent_spans"] += 1
        return [f"no consistent assistant spans: {exc}"]
    if not check_text:
        return []

    def words(text: str) -> str:  # whitespace aside: a first token may carry the newline before the reply
        return "".join(text.split())

    spans = [words(tokenizer.decode(run)) for run in _masked_runs(encoded["input_ids"], encoded["assistant_masks"])]
    replies = [words(m["content"]) for m in messages if m["role"] == "assistant"]
    wrong = abs(len(spans) - len(replies)) + sum(
        reply not in span or not span.endswith(words(end_token or "")) for span, reply in zip(spans, replies))
    if not wrong:
        return []
    counts["spans_missing_reply_or_end"] += wrong
    return [f"{wrong} assistant span{'s' if wrong > 1 else ''} found by rendering "
            f"{'do' if wrong > 1 else 'does'} not hold the reply and end with the end token {end_token!r}"]


def _masked_runs(ids: list[int], mask: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for i, (token, bit) in enumerate(zip(ids, mask)):
        if bit and (i == 0 or not mask[i - 1]):
            runs.append([])
        if bit:
            runs[-1].append(token)
    return runs


def _end_tokens_outside_mask(tokenizer, messages, end_id: int) -> int:
    """Assistant spans (runs of mask=1) whose end token sits just after the span, not inside it."""
    encoded = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
    ids, mask = encoded["input_ids"], encoded["assistant_masks"]
    outside = 0
    for i in range(len(ids)):
        run_ends_here = mask[i] == 1 and (i + 1 == len(ids) or mask[i + 1] == 0)
        if run_ends_here and ids[i] != end_id:
            after = i + 1  # skip whitespace between the span and the end token
            while after < len(ids) and not tokenizer.decode([ids[after]]).strip():
                after += 1
            if after < len(ids) and ids[after] == end_id:  # a missing end token is end_token_missing
                outside += 1
    return outside


def _summarise(report: dict[str, Any]) -> None:
    sentences = {
        "render_failures": "conversations the template failed to render",
        "roundtrip_failures": "rendered conversations that tokenize/decode does not reproduce",
        "content_missing": "messages whose content the template alters or drops",
        "end_token_missing": f"assistant turns not followed by the end token {report['end_token']!r} "
                             "(the model would not learn to stop)",
        "end_token_outside_mask": f"assistant turns whose end token {report['end_token']!r} is outside the "
                                  "{% generation %} span, so it gets no loss (the model would not learn to stop); "
                                  "move it inside {% endgeneration %}",
        "inconsistent_spans": "conversations whose assistant spans the template does not render consistently "
                              "(a turn rendered differently once later turns follow, or otherwise than its "
                              "generation prompt), so `tunelab train` refuses assistant-only loss on them; use a "
                              "prefix-consistent template, mark each reply and its end token with "
                              "{% generation %}...{% endgeneration %}, or set train.assistant_only_loss=false",
        "spans_missing_reply_or_end": f"assistant spans found by rendering that do not hold the reply and end with "
                                   f"the end token {report['end_token']!r}",
    }
    for key, sentence in sentences.items():
        if report[key]:
            report["problems"].append(f"{report[key]} {sentence}")
    report["ok"] = not report["problems"]
