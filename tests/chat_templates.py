"""Chat templates for the assistant-only-loss tests, all variants of the tiny tokenizer's own
(tests/assets/tiny-chat-tokenizer/chat_template.jinja, which marks each reply and its `<|end|>`
with {% generation %}): the same template without the markers, and two that render no
consistent assistant spans."""
from __future__ import annotations

from pathlib import Path

MARKED = (Path(__file__).resolve().parent / "assets" / "tiny-chat-tokenizer" / "chat_template.jinja").read_text()
UNMARKED = MARKED.replace("{% generation %}", "").replace("{% endgeneration %}", "")

# renders reasoning (`<think>...</think>`) only in the last assistant turn and drops it from the
# earlier ones, as reasoning models' templates do: a turn renders differently once others follow
DROPS_EARLIER_REASONING = UNMARKED.replace(
    "{% if message['role'] == 'assistant' %}{{ message['content'] + '<|end|>' }}",
    "{% if message['role'] == 'assistant' %}"
    "{{ (message['content'] if loop.last else message['content'].split('</think>')[-1]) + '<|end|>' }}")

# opens the reply with a thinking tag at inference that the conversation never shows
PROMPT_UNLIKE_THE_TURN = UNMARKED.replace("{{ '<|assistant|>\n' }}{% endif %}",
                                          "{{ '<|assistant|>\n<think>' }}{% endif %}")

assert "{% generation %}" not in UNMARKED and "endgeneration" not in UNMARKED
assert DROPS_EARLIER_REASONING != UNMARKED and PROMPT_UNLIKE_THE_TURN != UNMARKED
