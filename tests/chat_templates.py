"""Chat templates for the assistant-only-loss tests, all variants of the tiny tokenizer's own
(tests/assets/tiny-chat-tokenizer/chat_template.jinja, which marks each reply and its `<|end|>`
with {% generation %}): the same template without the markers, two variants of it that still
have consistent assistant spans, and two that have none."""
from __future__ import annotations

from pathlib import Path

MARKED = (Path(__file__).resolve().parent / "assets" / "tiny-chat-tokenizer" / "chat_template.jinja").read_text()
UNMARKED = MARKED.replace("{% generation %}", "").replace("{% endgeneration %}", "")

# writes EOS after the last turn only, as Phi-3's template does
EOS_AT_THE_END = UNMARKED.replace("{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}",
                                  "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}"
                                  "{% endif %}")
# writes a header after the generation prompt, before the reply (gpt-oss's channel): the model generates it
CHANNEL_BEFORE_THE_REPLY = UNMARKED.replace("{{ message['content'] + '<|end|>' }}",
                                            "{{ '[final] ' + message['content'] + '<|end|>' }}")

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
assert len({UNMARKED, EOS_AT_THE_END, CHANNEL_BEFORE_THE_REPLY, DROPS_EARLIER_REASONING, PROMPT_UNLIKE_THE_TURN}) == 5
