"""Chat-template audit on the tiny tokenizer: a good template passes, with or without generation
markers (spans found by rendering); templates that drop the end token from the loss mask, never
emit it, render no consistent assistant spans or drop content are caught."""
import pytest
from chat_templates import (CHANNEL_BEFORE_THE_REPLY, DROPS_EARLIER_REASONING, EOS_AT_THE_END,
                            PROMPT_UNLIKE_THE_TURN, UNMARKED)
from transformers import AutoTokenizer

from tunelab.data import template_audit
from tunelab.data.template_audit import MAX_EXAMPLES, audit_chat_template, make_token_counter

GOOD_SPAN = "{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}"

CONVERSATIONS = [
    [{"role": "system", "content": "Be brief."},
     {"role": "user", "content": "Reverse the words: alpha beta"},
     {"role": "assistant", "content": "beta alpha"}],
    [{"role": "user", "content": "hello world"},
     {"role": "assistant", "content": "hi"},
     {"role": "user", "content": "how are you today?"},
     {"role": "assistant", "content": "fine"}],
]
ASSISTANT_TURNS = 3
COUNTS = ("render_failures", "roundtrip_failures", "content_missing", "end_token_missing",
          "end_token_outside_mask", "inconsistent_spans", "spans_missing_reply_or_end")


@pytest.fixture
def tokenizer(tiny_tokenizer_path):
    return AutoTokenizer.from_pretrained(tiny_tokenizer_path)


def with_span(tokenizer, replacement: str):
    """The tokenizer with its assistant generation block replaced (in memory only)."""
    assert GOOD_SPAN in tokenizer.chat_template
    tokenizer.chat_template = tokenizer.chat_template.replace(GOOD_SPAN, replacement)
    return tokenizer


def test_good_template_passes(tokenizer):
    report = audit_chat_template(tokenizer, CONVERSATIONS, name="tiny")
    assert report["ok"] is True
    assert report["tokenizer"] == "tiny"
    assert report["has_template"] and report["has_generation_markers"]
    assert report["loss_mask"] == "generation_markers"
    assert report["end_token"] == "<|end|>"
    assert report["checked"] == len(CONVERSATIONS)
    assert {k: report[k] for k in COUNTS} == dict.fromkeys(COUNTS, 0)
    assert report["problems"] == [] and report["examples"] == []


def test_end_token_after_endgeneration_is_outside_the_mask(tokenizer):
    with_span(tokenizer, "{% generation %}{{ message['content'] }}{% endgeneration %}{{ '<|end|>' }}")
    report = audit_chat_template(tokenizer, CONVERSATIONS)
    assert report["end_token_outside_mask"] == ASSISTANT_TURNS
    assert report["end_token_missing"] == 0  # the token is there, just not trained on
    assert report["ok"] is False
    assert len(report["problems"]) == 1
    problem = report["problems"][0]
    assert problem.startswith(f"{ASSISTANT_TURNS} assistant turns whose end token '<|end|>' is outside")
    assert "{% endgeneration %}" in problem
    assert report["examples"] == [
        {"conversation": 0, "problem": "the end token '<|end|>' falls outside the assistant loss mask (1 turn)"},
        {"conversation": 1, "problem": "the end token '<|end|>' falls outside the assistant loss mask (2 turns)"},
    ]


def test_end_token_outside_mask_after_whitespace_is_caught(tokenizer):
    with_span(tokenizer, "{% generation %}{{ message['content'] }}{% endgeneration %}{{ ' <|end|>' }}")
    report = audit_chat_template(tokenizer, CONVERSATIONS)
    assert report["end_token_outside_mask"] == ASSISTANT_TURNS
    assert report["end_token_missing"] == 0
    assert report["ok"] is False


def test_template_without_end_token_after_assistant(tokenizer):
    with_span(tokenizer, "{% generation %}{{ message['content'] }}{% endgeneration %}")
    report = audit_chat_template(tokenizer, CONVERSATIONS)
    assert report["end_token_missing"] == ASSISTANT_TURNS
    assert report["end_token_outside_mask"] == 0  # nothing to move inside the span
    assert report["ok"] is False
    assert report["problems"] == [
        f"{ASSISTANT_TURNS} assistant turns not followed by the end token '<|end|>' "
        "(the model would not learn to stop)"]


@pytest.mark.parametrize("template", [UNMARKED, EOS_AT_THE_END, CHANNEL_BEFORE_THE_REPLY],
                         ids=["unmarked", "eos-at-the-end", "channel-before-the-reply"])
def test_template_without_generation_markers_is_trainable_by_rendered_spans(tokenizer, template):
    tokenizer.chat_template = template
    report = audit_chat_template(tokenizer, CONVERSATIONS)
    assert report["has_generation_markers"] is False
    assert report["loss_mask"] == "rendered_spans"
    assert {k: report[k] for k in COUNTS} == dict.fromkeys(COUNTS, 0)
    assert report["ok"] is True and report["problems"] == []


REASONING = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "<think>add</think>4"},
             {"role": "user", "content": "and 3+3?"}, {"role": "assistant", "content": "<think>add</think>6"}]


def test_template_that_drops_earlier_reasoning_has_no_consistent_spans(tokenizer):
    tokenizer.chat_template = DROPS_EARLIER_REASONING
    report = audit_chat_template(tokenizer, [REASONING, REASONING[:2], CONVERSATIONS[1]])
    # only the conversation whose earlier reply carries reasoning renders it differently later on
    assert report["inconsistent_spans"] == 1 and report["content_missing"] == 1
    assert report["ok"] is False
    assert any(p.startswith("1 conversations whose assistant spans the template does not render consistently")
               and "train.assistant_only_loss=false" in p for p in report["problems"])
    assert {"conversation": 0, "problem": "no consistent assistant spans: the template renders the conversation "
            "through assistant turn 1 differently once later turns follow (it may drop earlier reasoning or render "
            "the last assistant turn apart), so that reply has no span in the whole conversation"} in report["examples"]


def test_template_whose_generation_prompt_is_not_the_turn_is_flagged(tokenizer):
    tokenizer.chat_template = PROMPT_UNLIKE_THE_TURN
    report = audit_chat_template(tokenizer, CONVERSATIONS)
    assert report["inconsistent_spans"] == len(CONVERSATIONS) and report["ok"] is False
    assert "otherwise than after its own generation prompt" in report["examples"][0]["problem"]


def test_rendered_spans_that_are_not_reply_and_end_token_are_caught(tokenizer, monkeypatch):
    """The audit decodes each span: a mask one token short is found (the check itself can fail)."""
    tokenizer.chat_template = UNMARKED
    real = template_audit.tokenize_with_spans

    def one_short(tok, messages):
        encoded = real(tok, messages)
        mask = encoded["assistant_masks"]
        last = max(i for i, bit in enumerate(mask) if bit)
        return {**encoded, "assistant_masks": mask[:last] + [0] + mask[last + 1:]}

    monkeypatch.setattr(template_audit, "tokenize_with_spans", one_short)
    report = audit_chat_template(tokenizer, CONVERSATIONS)
    assert report["spans_missing_reply_or_end"] == len(CONVERSATIONS) and report["ok"] is False
    assert report["problems"] == [f"{len(CONVERSATIONS)} assistant spans found by rendering that do not hold the "
                                  "reply and end with the end token '<|end|>'"]


def test_a_template_trl_knows_uses_its_marked_copy(tokenizer):
    from trl.chat_template_utils import qwen2_5_chat_template
    tokenizer.chat_template = qwen2_5_chat_template
    report = audit_chat_template(tokenizer, CONVERSATIONS, end_token="<|end|>")
    assert report["loss_mask"] == "trl_training_template"
    assert report["inconsistent_spans"] == 0 and report["spans_missing_reply_or_end"] == 0


def test_generation_markers_with_whitespace_control_are_recognised(tokenizer):
    with_span(tokenizer, "{%- generation -%}{{ message['content'] + '<|end|>' }}{%- endgeneration -%}")
    report = audit_chat_template(tokenizer, CONVERSATIONS)
    assert report["has_generation_markers"] is True
    assert report["ok"] is True


def test_tokenizer_without_template(tokenizer):
    tokenizer.chat_template = None
    report = audit_chat_template(tokenizer, CONVERSATIONS)
    assert report["has_template"] is False
    assert report["has_generation_markers"] is False
    assert report["checked"] == 0
    assert report["ok"] is False
    assert len(report["problems"]) == 1 and "no chat template" in report["problems"][0]


def test_template_that_drops_content(tokenizer):
    with_span(tokenizer, "{% generation %}{{ message['content'][:3] + '<|end|>' }}{% endgeneration %}")
    conversations = [[{"role": "user", "content": "hello world"},
                      {"role": "assistant", "content": "beta alpha"}]]
    report = audit_chat_template(tokenizer, conversations)
    assert report["content_missing"] == 1
    assert report["ok"] is False
    assert report["problems"] == ["1 messages whose content the template alters or drops"]
    assert report["examples"] == [
        {"conversation": 0, "problem": "the assistant content does not appear verbatim in the rendered text"}]


def test_template_that_fails_to_render(tokenizer):
    tokenizer.chat_template = "{{ raise_exception('no system role') }}"
    report = audit_chat_template(tokenizer, CONVERSATIONS)
    assert report["render_failures"] == len(CONVERSATIONS)
    assert report["ok"] is False
    assert all(e["problem"].startswith("the template failed to render") for e in report["examples"])


def test_examples_are_capped(tokenizer):
    with_span(tokenizer, "{% generation %}{{ message['content'] }}{% endgeneration %}")
    report = audit_chat_template(tokenizer, CONVERSATIONS * 5)
    assert report["end_token_missing"] == ASSISTANT_TURNS * 5
    assert len(report["examples"]) == MAX_EXAMPLES


def test_custom_end_token(tokenizer):
    report = audit_chat_template(tokenizer, CONVERSATIONS, end_token="<|assistant|>")
    assert report["end_token"] == "<|assistant|>"
    assert report["end_token_missing"] == ASSISTANT_TURNS
    assert report["ok"] is False


# --- token counting -------------------------------------------------------------------------

def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=True)["input_ids"]


def test_token_counter_generative_uses_the_chat_template(tokenizer):
    messages = [{"role": "user", "content": "hello world"}, {"role": "assistant", "content": "hi"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered == "<|user|>\nhello world<|end|>\n<|assistant|>\nhi<|end|>\n"
    expected = len(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    assert expected == 13
    assert make_token_counter(tokenizer, "generative")({"messages": messages}) == expected


def test_token_counter_generative_without_template_counts_the_contents(tokenizer):
    tokenizer.chat_template = None
    messages = [{"role": "user", "content": "hello world"}, {"role": "assistant", "content": "hi"}]
    count = make_token_counter(tokenizer, "generative")({"messages": messages})
    assert count == len(ids(tokenizer, "hello world\nhi")) == 6


def test_token_counter_classification(tokenizer):
    count = make_token_counter(tokenizer, "classification")
    assert count({"text": "hello world", "label": "greeting"}) == len(ids(tokenizer, "hello world")) == 3
    assert count({"text": "", "label": "empty"}) == 0


def test_token_counter_preference_counts_prompt_and_longer_answer(tokenizer):
    count = make_token_counter(tokenizer, "preference")
    record = {"prompt": "hello", "chosen": "a b c", "rejected": "a"}
    assert count(record) == len(ids(tokenizer, "hello\na b c")) == 6
    chat_prompt = {"prompt": [{"role": "user", "content": "hello world"}], "chosen": "x",
                   "rejected": "longer one"}
    assert count(chat_prompt) == len(ids(tokenizer, "hello world\nlonger one")) == 10
