"""Assistant-only loss for any chat template: which tokens of a conversation are the assistant's.

TRL's `assistant_only_loss` reads the assistant tokens from `{% generation %}` markers in the
chat template, and ships marked copies of a few popular templates; most users' own templates
have neither. For those, the spans are found by rendering, the way the model meets a reply at
inference: for each assistant turn the template renders the conversation before it with its
generation prompt, and the conversation through that turn; the difference is what the model has
to generate. It is trained from its start (the reply, and anything the template puts before it
after the prompt, such as a channel header or an empty thinking block) through the end-of-turn
token: the last special token the template writes after the reply before the next turn
(`<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`, Cohere's `<|END_RESPONSE|><|END_OF_TURN_TOKEN|>`;
for the last turn, through the end of the conversation). Whitespace after it (the newline
before the next turn) is context: the model stops at the end token and never generates it. A
turn closed by no special token is trained through its closing text, trailing whitespace left out.

The spans are character spans of the whole conversation's rendering, so the whole conversation
must hold each turn as the template renders it after its generation prompt (prefix-consistent).
A template that renders a turn differently once later turns follow (one that drops earlier
reasoning, or treats the last assistant turn apart), whose generation prompt is not how it
renders the turn, or that alters the reply, has no consistent spans: it is refused, naming the
turn and why.

The whole conversation is tokenized as transformers' `apply_chat_template` tokenizes it, and a
token is trained when it overlaps a span, the rule transformers applies to `{% generation %}`
spans: a copy of the template with markers around the same text gives the same `input_ids` and
`assistant_masks`. TRL's SFTTrainer takes such pre-tokenized rows as they are: labels from
`assistant_masks`, then its own truncation (`max_length`) and packing.
"""
from __future__ import annotations

import re
from typing import Any

from tunelab.errors import TunelabError

# the test transformers applies before building assistant masks (whitespace control allowed)
GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")

# how the assistant tokens of a run's loss were found (recorded in the run's manifest)
ALL_TOKENS = "all_tokens"                        # assistant_only_loss off: every token is trained
GENERATION_MARKERS = "generation_markers"        # the tokenizer's own template marks them
TRL_TRAINING_TEMPLATE = "trl_training_template"  # TRL's marked copy of the tokenizer's template
RENDERED_SPANS = "rendered_spans"                # found here, by rendering each turn
LOSS_MASK_WAYS = {ALL_TOKENS: "every token is trained",
                  GENERATION_MARKERS: "replies found by the template's {% generation %} markers",
                  TRL_TRAINING_TEMPLATE: "replies found by TRL's marked copy of the template",
                  RENDERED_SPANS: "replies found by rendering each assistant turn (the template has no "
                                  "{% generation %} markers)"}


class NoConsistentSpans(ValueError):
    """The template gives no assistant spans for a conversation; the message says which turn and why."""


def has_zero_weights(dataset) -> bool:
    """Whether any assistant message of the conversations is weighted 0 (not trained on), which
    only the rendered spans honour (TRL's markers train every reply)."""
    return any(m.get("weight") == 0 for messages in dataset["messages"] for m in messages if m["role"] == "assistant")


def has_generation_markers(template: str | None) -> bool:
    return bool(template and GENERATION_MARKER.search(template))


def known_training_template(tokenizer) -> str | None:
    """TRL's copy of this tokenizer's chat template with {% generation %} markers, when TRL knows
    the template; it renders the same text, so the run saves it for serving unchanged."""
    from trl.chat_template_utils import get_training_chat_template
    try:
        return get_training_chat_template(tokenizer)
    except ValueError:  # a template TRL does not know
        return None
    except Exception:  # noqa: BLE001 (TRL first probes the template with a tool call, which some raise on)
        return None


def loss_mask_source(tokenizer) -> str:
    """How assistant-only loss finds the assistant tokens with this tokenizer's chat template."""
    if has_generation_markers(tokenizer.chat_template):
        return GENERATION_MARKERS
    return TRL_TRAINING_TEMPLATE if known_training_template(tokenizer) else RENDERED_SPANS


def assistant_char_spans(tokenizer, messages: list[dict[str, Any]]) -> tuple[str, list[tuple[int, int]]]:
    """(the conversation as rendered, [(start, end) in that text of what the model generates for
    each assistant turn, through its end-of-turn token]). Raises NoConsistentSpans."""
    full = _render(tokenizer, messages, len(messages), False)
    special = _special_tokens_pattern(tokenizer)
    spans = []
    for turn, index in enumerate((i for i, m in enumerate(messages) if m["role"] == "assistant"), start=1):
        prompt = _render(tokenizer, messages, index, True, turn)
        through = full if index == len(messages) - 1 else _render(tokenizer, messages, index + 1, False, turn)
        if not through.startswith(prompt):
            raise NoConsistentSpans(f"the template renders assistant turn {turn} otherwise than after its own "
                                    "generation prompt, so the model would be trained on a context it never sees "
                                    "at inference")
        reply = messages[index]["content"]
        found = through.find(reply, len(prompt))
        if found < 0 and reply.strip():  # templates that trim replies (Llama 3, Gemma)
            reply = reply.strip()
            found = through.find(reply, len(prompt))
        if found < 0:
            raise NoConsistentSpans(f"the template does not render the reply of assistant turn {turn} verbatim")
        # the whole conversation must hold this turn as rendered through its reply; what the template
        # writes after the reply counts up to where the next turn begins (the end of the conversation
        # for the last turn)
        same = _common_prefix_length(through, full)
        reply_end = found + len(reply)
        if same < reply_end:
            raise NoConsistentSpans(f"the template renders the conversation through assistant turn {turn} "
                                    "differently once later turns follow (it may drop earlier reasoning or render "
                                    "the last assistant turn apart), so that reply has no span in the whole "
                                    "conversation")
        closing = through[reply_end:same]
        ends = [m.end() for m in special.finditer(closing)] if special else []
        spans.append((len(prompt), reply_end + (ends[-1] if ends else len(closing.rstrip()))))
    return full, spans


def tokenize_with_spans(tokenizer, messages: list[dict[str, Any]]) -> dict[str, list[int]]:
    """{"input_ids", "assistant_masks"}: the conversation tokenized as apply_chat_template does,
    1 for each token that overlaps an assistant span, except the spans of assistant messages
    with `"weight": 0` (OpenAI's chat format: shown as context, not trained on). Raises
    NoConsistentSpans."""
    text, spans = assistant_char_spans(tokenizer, messages)
    weights = [m.get("weight") for m in messages if m["role"] == "assistant"]
    spans = [span for span, weight in zip(spans, weights) if weight != 0]
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:  # slow (Python) tokenizers give no character offsets
        raise NoConsistentSpans("the tokenizer gives no character offsets (it is not a fast tokenizer), so "
                                "spans of text cannot be mapped to tokens") from None
    mask, span = [], 0
    for token_start, token_end in encoded["offset_mapping"]:
        while span < len(spans) and token_start >= spans[span][1]:
            span += 1
        mask.append(int(span < len(spans) and token_end > spans[span][0]))
    return {"input_ids": list(encoded["input_ids"]), "assistant_masks": mask}


def tokenized_conversations(tokenizer, dataset):
    """A `datasets.Dataset` of conversations ("messages") as pre-tokenized rows (input_ids,
    assistant_masks), the form TRL's SFTTrainer trains on as it is. Raises NoConsistentSpans."""
    import datasets
    return datasets.Dataset.from_list([tokenize_with_spans(tokenizer, messages) for messages in dataset["messages"]])


def check_conversations(tokenizer, records: list[dict[str, Any]], *, where: str, split: str = "training") -> None:
    """Refuse, naming the first one, a record whose assistant spans the template does not give."""
    for number, record in enumerate(records, start=1):
        try:
            assistant_char_spans(tokenizer, record["messages"])
        except NoConsistentSpans as exc:
            raise TunelabError(f"assistant-only loss cannot find the assistant tokens of {split} record {number}: "
                               f"{exc}", where=where,
                               fix="use a chat template that renders every earlier turn the same whatever follows "
                                   "(or mark each reply and its end token with {% generation %}...{% endgeneration "
                                   "%}), or set train.assistant_only_loss=false") from None


def _render(tokenizer, messages, upto: int, generation_prompt: bool, turn: int | None = None) -> str:
    try:
        return tokenizer.apply_chat_template(messages[:upto], tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as exc:  # jinja raises many types; a template that cannot render a prefix has no spans
        what = f"the conversation up to assistant turn {turn}" if turn else "the whole conversation"
        raise NoConsistentSpans(f"the template fails to render {what} "
                                f"({str(exc).strip() or type(exc).__name__})") from None


def _common_prefix_length(a: str, b: str) -> int:
    if b.startswith(a):  # the usual case, at C speed
        return len(a)
    length = min(len(a), len(b))
    return next((i for i in range(length) if a[i] != b[i]), length)


def _special_tokens_pattern(tokenizer) -> re.Pattern | None:
    """Any of the tokenizer's special tokens (an end-of-turn token is one), longest first."""
    tokens = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special and t.content.strip()}
    tokens |= {t for t in [tokenizer.eos_token] if t}
    if not tokens:
        return None
    return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))
