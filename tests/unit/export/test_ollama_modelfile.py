"""The Ollama Modelfile's template: chat templates of the tiny, ChatML and Llama 3 shapes become Go
templates that render the prompt string the tokenizer renders; templates of other shapes are
refused in one sentence; and the Go template renderer the check relies on follows Go's rules
(checked against Go's own text/template when a `go` toolchain is installed)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from chat_templates import MARKED
from tunelab.errors import TunelabError
from tunelab.export import go_template, ollama

TOKENIZER = Path(__file__).resolve().parents[2] / "assets" / "tiny-chat-tokenizer"
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'"
          " + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# Meta-Llama-3-8B-Instruct's template as published: BOS as text, headers, contents trimmed
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
          "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
          "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
          "{% endif %}")
# Llama 2: the system prompt is folded into the first user turn
LLAMA2 = ("{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}{% set messages = "
          "messages[1:] %}{% else %}{% set system = false %}{% endif %}{% for message in messages %}{% if "
          "message['role'] == 'user' %}{% if loop.first and system %}{{ bos_token + '[INST] <<SYS>>\n' + system + "
          "'\n<</SYS>>\n\n' + message['content'] + ' [/INST]' }}{% else %}{{ bos_token + '[INST] ' + "
          "message['content'] + ' [/INST]' }}{% endif %}{% else %}{{ ' ' + message['content'] + ' ' + eos_token }}"
          "{% endif %}{% endfor %}")
# a default system prompt when the conversation has none (Qwen 2.5 style)
DEFAULT_SYSTEM = ("{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}"
                  "{% endif %}" + CHATML)
CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi \"there\" {{ x }}"},
                {"role": "assistant", "content": "Hello.\nHow can I help?"}, {"role": "user", "content": "Tell me \u00e9"}]


def tokenizer_with(template: str):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    tokenizer.chat_template = template
    return tokenizer


@pytest.mark.parametrize("name, template", [("tiny", MARKED), ("chatml", CHATML), ("llama3", LLAMA3)])
def test_translatable_templates_render_the_tokenizers_prompt(name, template):
    tokenizer = tokenizer_with(template)
    translated = ollama.translate(tokenizer)

    for messages in (CONVERSATION, CONVERSATION[1:], CONVERSATION[:3]):
        expected = tokenizer.apply_chat_template(messages, tokenize=False,
                                                 add_generation_prompt=messages[-1]["role"] == "user")
        if name == "llama3":  # llama.cpp adds the BOS token the template writes as text
            assert expected.startswith("<s>") and translated.bos_from_runtime
            expected = expected[len("<s>"):]
        assert ollama.render(translated, messages) == expected
    assert ollama.check_template(translated, tokenizer, [CONVERSATION])["same_prompt_strings"] is True


def test_the_modelfile_for_the_tiny_template():
    tokenizer = tokenizer_with(MARKED)
    text = ollama.modelfile("model-f16.gguf", ollama.translate(tokenizer), tokenizer)
    lines = text.splitlines()
    assert lines[0] == "FROM ./model-f16.gguf"
    assert lines[-1] == 'PARAMETER stop "<|end|>"' and text.count("PARAMETER stop") == 1
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    assert '{{- else if eq .Role "user" }}{{ "<|user|>\\n" }}{{ .Content }}{{ "<|end|>\\n" }}' in template
    assert '{{- if and $last (ne .Role "assistant") }}{{ "<|assistant|>\\n" }}{{ end }}' in template


@pytest.mark.parametrize("template, why", [(LLAMA2, "its messages are not each a prefix"),
                                           (DEFAULT_SYSTEM, "its messages are not each a prefix"),
                                           ("{{ raise_exception('no') }}", "rendering it failed")])
def test_other_shapes_are_refused_in_one_sentence(template, why):
    with pytest.raises(TunelabError, match=f"cannot be translated to an Ollama template: {why}"):
        ollama.translate(tokenizer_with(template))


def test_a_tokenizer_without_a_chat_template_is_refused():
    with pytest.raises(TunelabError, match="has no chat template"):
        ollama.translate(tokenizer_with(None))


# the renderer

def test_trim_markers_and_string_constants_follow_go():
    assert go_template.render('a  {{- "x\\ty" -}}  \n b', {}) == "ax\tyb"
    assert go_template.render('{{ "\\"q\\" \\u00e9" }}', {}) == '"q" \u00e9'
    assert go_template.render("{{ if eq .A \"x\" \"y\" }}yes{{ else }}no{{ end }}", {"A": "y"}) == "yes"
    assert go_template.render("{{ range $i, $m := .L }}{{ len (slice $.L $i) }}{{ end }}", {"L": [1, 2, 3]}) == "321"
    assert go_template.render("{{ if and .A (not .B) }}1{{ else if .B }}2{{ end }}", {"A": "", "B": "b"}) == "2"


def test_constructs_outside_the_subset_are_errors_not_guesses():
    for source in ("{{ printf \"%s\" .A }}", "{{ with .A }}{{ end }}", "{{ if .A }}"):
        with pytest.raises(ValueError):
            go_template.render(source, {"A": "a"})


@pytest.mark.skipif(shutil.which("go") is None, reason="no Go toolchain: Go's own text/template is not at hand")
@pytest.mark.parametrize("template", [MARKED, CHATML, LLAMA3])
def test_go_itself_renders_the_translation_the_same(template, tmp_path):
    translated = ollama.translate(tokenizer_with(template))
    data = {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in CONVERSATION]}
    (tmp_path / "main.go").write_text(GO_PROGRAM)
    (tmp_path / "template.txt").write_text(translated.go)
    (tmp_path / "data.json").write_text(json.dumps(data))
    proc = subprocess.run(["go", "run", "main.go"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={"GOCACHE": str(tmp_path / "cache"), "GOPATH": str(tmp_path / "gopath"),
                               "HOME": str(tmp_path), "PATH": "/usr/bin:/bin:/usr/local/go/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == go_template.render(translated.go, data)


GO_PROGRAM = """package main

import (
\t"encoding/json"
\t"os"
\t"text/template"
)

type Message struct{ Role, Content string }

func main() {
\tsource, _ := os.ReadFile("template.txt")
\traw, _ := os.ReadFile("data.json")
\tvar data struct{ Messages []Message }
\tif err := json.Unmarshal(raw, &data); err != nil {
\t\tpanic(err)
\t}
\tt := template.Must(template.New("t").Parse(string(source)))
\tif err := t.Execute(os.Stdout, data); err != nil {
\t\tpanic(err)
\t}
}
"""
