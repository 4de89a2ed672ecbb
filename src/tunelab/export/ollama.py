"""The Ollama Modelfile of a GGUF export: the run's chat template in Ollama's Go template syntax,
and its stop tokens.

The Jinja chat template is not parsed: it is rendered, with marker contents, for a few short
conversations, and read off as "each message is PREFIX(role) + content + SUFFIX(role), a reply
is opened with GENERATION_PROMPT, and the whole starts with HEAD". That shape covers the
templates of the tests' tiny tokenizer, ChatML and Llama 3 (whose HEAD is the BOS token, left to
llama.cpp). A template of another shape (a system prompt folded into the first user turn, a
default system prompt, content rewritten) is refused, and the translation is kept only when the
Go template, rendered, gives the tokenizer's prompt string on every check conversation.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from tunelab.errors import TunelabError
from tunelab.export import go_template

ROLES = ("system", "user", "assistant")
_MARK = "\u2063{}\u2063"  # invisible separator around a number: text no template adds or strips
# Contents with what breaks naive templating: quotes, braces, newlines, non-ASCII (kept free of
# leading/trailing whitespace, which Llama 3's template trims and Ollama does not)
CHECK_CONVERSATIONS = [
    [("user", "Hello!")],
    [("system", "You are terse."), ("user", "What is 2 + 2?")],
    [("user", "Say \"hi\" in {{ braces }}"), ("assistant", "hi {{ }} \"ok\""), ("user", "Again,\nplease.")],
    [("system", "Answer in French."), ("user", "Good morning"), ("assistant", "Bonjour"),
     ("user", "And good night? \u00e9\u00e8 \u2014 \U0001F600")],
    [("user", "One"), ("assistant", "Two")],
    [("system", "S"), ("user", "Q"), ("assistant", "A\n\nwith a blank line")],
]


@dataclass
class Template:
    """A chat template read off as parts, and its Go translation."""
    head: str
    prefix: dict[str, str]
    suffix: dict[str, str]
    generation_prompt: str
    bos_from_runtime: bool  # HEAD is the BOS token: llama.cpp adds it, the Go template leaves it out
    go: str = field(init=False)

    def __post_init__(self):
        self.go = _go_template(self)


def translate(tokenizer) -> Template:
    """The tokenizer's chat template as a Go template; a one-sentence error when it has none or
    is not of the prefix/content/suffix shape."""
    if not getattr(tokenizer, "chat_template", None):
        raise TunelabError("the run's tokenizer has no chat template, so there is nothing to put in the Ollama "
                           "Modelfile", fix="train with a chat template (train.chat_template) or add one to the "
                                            "tokenizer before exporting")
    m = [_MARK.format(i) for i in range(4)]
    try:
        user = _split(_render(tokenizer, [("user", m[1])]), m[1:2])
        with_reply = _render(tokenizer, [("user", m[1])], generation=True)
        pair = _split(_render(tokenizer, [("user", m[1]), ("assistant", m[2])]), m[1:3])
        turn = _split(_render(tokenizer, [("user", m[1]), ("assistant", m[2]), ("user", m[3])]), m[1:4])
        system = _split(_render(tokenizer, [("system", m[0]), ("user", m[1])]), m[0:2])
    except Exception as exc:  # a template may raise anything (jinja2 errors, raise_exception(...))
        raise _untranslatable(f"rendering it failed ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})")
    plain = "".join((user[0], m[1], user[1]))
    if not with_reply.startswith(plain):
        raise _untranslatable("the generation prompt does not follow the conversation")
    user_suffix = user[1]
    assistant_prefix = _strip_start(pair[1], user_suffix)
    assistant_suffix = pair[2]
    user_prefix = _strip_start(turn[2], assistant_suffix)
    head = _strip_end(user[0], user_prefix)
    system_prefix = _strip_start(system[0], head)
    system_suffix = _strip_end(system[1], user_prefix)
    if None in (assistant_prefix, user_prefix, head, system_prefix, system_suffix):
        raise _untranslatable("its messages are not each a prefix, the content and a suffix")
    bos = tokenizer.bos_token or ""
    template = Template(head=head, prefix={"system": system_prefix, "user": user_prefix, "assistant": assistant_prefix},
                        suffix={"system": system_suffix, "user": user_suffix, "assistant": assistant_suffix},
                        generation_prompt=with_reply[len(plain):], bos_from_runtime=bool(head) and head == bos)
    mismatch = _first_mismatch(template, tokenizer, CHECK_CONVERSATIONS)
    if mismatch:
        raise _untranslatable(f"the translation renders {mismatch[0]!r} where the chat template renders "
                              f"{mismatch[1]!r}")
    return template


def check_template(template: Template, tokenizer, conversations: list[list[dict]] = ()) -> dict:
    """Render the Go template and the chat template on the check conversations (and any given);
    raise when a prompt string differs."""
    extra = [[(m["role"], m["content"]) for m in c] for c in conversations]
    mismatch = _first_mismatch(template, tokenizer, CHECK_CONVERSATIONS + extra)
    if mismatch:
        raise TunelabError(f"the Modelfile's template renders {mismatch[0]!r} where the chat template renders "
                           f"{mismatch[1]!r}, so nothing was written", fix="report this as a bug")
    return {"conversations": len(CHECK_CONVERSATIONS) + len(extra), "same_prompt_strings": True,
            "bos_from_runtime": template.bos_from_runtime}


def modelfile(gguf_name: str, template: Template, tokenizer, stop_tokens: list[str] = ()) -> str:
    """FROM the GGUF file beside it, the TEMPLATE, and a PARAMETER stop line per stop token."""
    stops = list(dict.fromkeys([*stop_tokens, *_stops(template, tokenizer)]))
    for stop in stops:
        if '"' in stop or "\n" in stop:
            raise TunelabError(f"the stop token {stop!r} cannot be written on a Modelfile PARAMETER line",
                               fix="export without a Modelfile is not supported yet; report this as a bug")
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{template.go}"""']
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    return "\n".join(lines) + "\n"


def render(template: Template, messages: list[dict]) -> str:
    """What Ollama builds from this template for `messages`."""
    return go_template.render(template.go, {"Messages": [{"Role": m["role"], "Content": m["content"]}
                                                          for m in messages], "System": ""})


def _stops(template: Template, tokenizer) -> list[str]:
    """The end-of-sequence token, and the special token that closes an assistant turn."""
    stops = [tokenizer.eos_token] if tokenizer.eos_token else []
    specials = set(tokenizer.all_special_tokens) | {t.content for t in tokenizer.added_tokens_decoder.values()
                                                    if t.special}
    closing = template.suffix["assistant"].strip()
    if closing in specials:
        stops.append(closing)
    return stops


def _go_template(template: Template) -> str:
    def text(value: str) -> str:  # a Go string constant: template whitespace never touches it
        return "{{ " + json.dumps(value, ensure_ascii=False) + " }}" if value else ""

    lines = [text("" if template.bos_from_runtime else template.head),
             "{{- range $i, $_ := .Messages }}",
             "{{- $last := eq (len (slice $.Messages $i)) 1 }}"]
    for n, role in enumerate(ROLES):
        keyword = "if" if n == 0 else "else if"
        lines.append(f'{{{{- {keyword} eq .Role "{role}" }}}}'
                     f'{text(template.prefix[role])}{{{{ .Content }}}}{text(template.suffix[role])}')
    lines += ["{{- end }}",
              f'{{{{- if and $last (ne .Role "assistant") }}}}{text(template.generation_prompt)}{{{{ end }}}}',
              "{{- end }}"]
    return "\n".join(line for line in lines if line)


def _render(tokenizer, turns, generation: bool = False) -> str:
    return tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in turns], tokenize=False,
                                         add_generation_prompt=generation)


def _split(rendered: str, marks: list[str]) -> list[str]:
    """The text before, between and after the marks (each must occur exactly once)."""
    parts, rest = [], rendered
    for mark in marks:
        if rest.count(mark) != 1:
            raise ValueError("a message's content does not appear exactly once as written")
        before, rest = rest.split(mark)
        parts.append(before)
    return parts + [rest]


def _strip_start(text: str, prefix: str) -> str | None:
    return text[len(prefix):] if text.startswith(prefix) else None


def _strip_end(text: str, suffix: str) -> str | None:
    if not suffix:
        return text
    return text[:-len(suffix)] if text.endswith(suffix) else None


def _expected(template: Template, tokenizer, messages: list[dict]) -> str:
    rendered = tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=messages[-1]["role"] != "assistant")
    # llama.cpp adds the BOS token the chat template writes as text
    return rendered[len(template.head):] if template.bos_from_runtime else rendered


def _first_mismatch(template: Template, tokenizer, conversations) -> tuple[str, str] | None:
    for turns in conversations:
        messages = [{"role": r, "content": c} for r, c in turns]
        expected, got = _expected(template, tokenizer, messages), render(template, messages)
        if got != expected:
            return got, expected
    return None


def _untranslatable(why: str) -> TunelabError:
    return TunelabError(f"the run's chat template cannot be translated to an Ollama template: {why}",
                        where="chat_template",
                        fix="export with a template of the ChatML, Llama 3 or tunelab style, or write the "
                            "Modelfile's TEMPLATE by hand from the GGUF file's tokenizer.chat_template")
