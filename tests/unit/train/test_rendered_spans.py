"""Assistant-only loss with a chat template that has no {% generation %} markers: the assistant
spans found by rendering each turn (tunelab.train.assistant_spans) give the labels TRL computes
from a hand-marked copy of the same template, token for token (single- and multi-turn, truncated
and packed), and the same training losses; a template without consistent spans is refused
before any weights load, in one sentence naming the record, the turn and why."""
from __future__ import annotations

import json

import pytest
import torch
from chat_templates import (CHANNEL_BEFORE_THE_REPLY, DROPS_EARLIER_REASONING, EOS_AT_THE_END, MARKED,
                            PROMPT_UNLIKE_THE_TURN, UNMARKED)
from train_helpers import copy_model, train_config, write_records

from tunelab.config import StageSettings
from tunelab.errors import TunelabError
from tunelab.models.load import load_model, load_tokenizer
from tunelab.train import run as train_run
from tunelab.train.data import TrainingData

SINGLE_TURN = [{"role": "user", "content": "What is 12 plus 1?"},
               {"role": "assistant", "content": "13, the refund policy says so."}]
MULTI_TURN = [{"role": "system", "content": "You answer in one line."},
              {"role": "user", "content": "Reverse the words: alpha beta"},
              {"role": "assistant", "content": "beta alpha"},
              {"role": "user", "content": "Translate to upper case: hello world"},
              {"role": "assistant", "content": "HELLO WORLD"},
              {"role": "user", "content": "And the first word only?"},
              {"role": "assistant", "content": " HELLO "}]  # spaces kept: the template renders it verbatim
CONVERSATIONS = [SINGLE_TURN, MULTI_TURN, [{"role": "system", "content": "Be brief."}, *SINGLE_TURN]]


def prepared(model_dir, tmp_path, template: str, **settings):
    """(how the loss mask was found, the training rows TRL prepared, the first collated batch)."""
    cfg = train_config(model=model_dir, data="unused.jsonl", method="full", output_dir=tmp_path / "run", **settings)
    tokenizer = load_tokenizer(str(model_dir))
    tokenizer.chat_template = template
    tokenizer, loss_mask = train_run.prepare_tokenizer(tokenizer, "sft", cfg.train.assistant_only_loss)
    data = TrainingData("generative", [{"messages": m} for m in CONVERSATIONS], [])
    trainer = train_run.build_trainer(load_model(str(model_dir), "sft"), tokenizer, data, "sft", None, cfg.train,
                                      StageSettings(data="unused.jsonl", name="train"), tmp_path / "run", 0, 1)
    prepared_rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    rows = [{"input_ids": row["input_ids"], "labels": row["labels"]} for row in prepared_rows]
    return loss_mask, rows, trainer.data_collator(prepared_rows)


def labelled_text(tokenizer, row) -> list[str]:
    """The labelled runs of a row, decoded."""
    runs, current = [], []
    for token, label in zip(row["input_ids"], row["labels"]):
        if label != -100:
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    return runs + ([tokenizer.decode(current)] if current else [])


@pytest.mark.parametrize("settings", [{"max_length": 128}, {"max_length": 24}, {"packing": "true", "max_length": 96}],
                         ids=["whole", "truncated", "packed"])
def test_rendered_spans_label_exactly_what_the_hand_marked_template_labels(tiny_llama_dir, tmp_path, settings):
    marked_way, marked_rows, marked_batch = prepared(tiny_llama_dir, tmp_path / "marked", MARKED, **settings)
    plain_way, plain_rows, plain_batch = prepared(tiny_llama_dir, tmp_path / "plain", UNMARKED, **settings)
    assert (marked_way, plain_way) == ("generation_markers", "rendered_spans")
    assert plain_rows == marked_rows  # input_ids and labels, token for token
    assert marked_batch.keys() == plain_batch.keys()
    for key, value in marked_batch.items():  # padding-free packed batches also carry ints (max lengths)
        assert torch.equal(plain_batch[key], value) if torch.is_tensor(value) else plain_batch[key] == value, key
    if settings["max_length"] == 128:  # whole conversations: every reply and its end token is labelled, nothing else
        tokenizer = load_tokenizer(str(tiny_llama_dir))
        assert [labelled_text(tokenizer, row) for row in plain_rows] == [
            [m["content"] + "<|end|>" for m in c if m["role"] == "assistant"] for c in CONVERSATIONS]


def test_truncation_and_packing_cut_the_rows(tiny_llama_dir, tmp_path):
    """The truncated and packed cases above are not the whole rows in disguise."""
    _, whole, _ = prepared(tiny_llama_dir, tmp_path / "whole", UNMARKED, max_length=128)
    _, truncated, _ = prepared(tiny_llama_dir, tmp_path / "truncated", UNMARKED, max_length=24)
    _, packed, _ = prepared(tiny_llama_dir, tmp_path / "packed", UNMARKED, packing="true", max_length=96)
    assert max(len(r["input_ids"]) for r in whole) > 24 >= max(len(r["input_ids"]) for r in truncated)
    assert len(packed) < len(whole) and sum(map(len, (r["labels"] for r in packed))) == sum(
        len(r["labels"]) for r in whole)


def losses(run_dir) -> tuple[list[float], list[float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r], [r["eval_loss"] for r in rows if "eval_loss" in r]


@pytest.mark.slow  # trains, interrupts and resumes, or starts processes (seconds)
def test_training_on_rendered_spans_gives_the_hand_marked_templates_losses(tiny_llama_dir, tmp_path):
    data = write_records(tmp_path / "chat.jsonl", [{"messages": m} for m in CONVERSATIONS * 3])
    held_out = write_records(tmp_path / "val.jsonl", [{"messages": MULTI_TURN}])
    runs = {}
    for name, template in (("marked", MARKED), ("plain", UNMARKED)):
        model_dir = copy_model(tiny_llama_dir, tmp_path / f"model-{name}", chat_template=template)
        train_run.run(train_config(model=model_dir, data=data, eval_data=held_out, output_dir=tmp_path / name,
                                   method="full", max_steps=3, eval_steps=3))
        runs[name] = tmp_path / name
    (marked_loss, marked_eval), (plain_loss, plain_eval) = losses(runs["marked"]), losses(runs["plain"])
    assert len(marked_loss) == 3 and len(marked_eval) >= 1
    assert plain_loss == pytest.approx(marked_loss, rel=1e-5)
    assert plain_eval == pytest.approx(marked_eval, rel=1e-5)
    manifests = {name: json.loads((run / "manifest.json").read_text()) for name, run in runs.items()}
    assert manifests["marked"]["loss_mask"] == "generation_markers"
    assert manifests["plain"]["loss_mask"] == "rendered_spans"
    assert (runs["plain"] / "chat_template.jinja").read_text() == UNMARKED  # saved for serving unchanged


REASONING = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "<think>add</think>4"},
             {"role": "user", "content": "and 3+3?"}, {"role": "assistant", "content": "<think>add</think>6"}]


@pytest.mark.parametrize("template, why", [
    (DROPS_EARLIER_REASONING, "renders the conversation through assistant turn 1 differently once later turns "
                              "follow"),
    (PROMPT_UNLIKE_THE_TURN, "renders assistant turn 1 otherwise than after its own generation prompt")],
    ids=["drops-earlier-reasoning", "generation-prompt-unlike-the-turn"])
def test_a_template_without_consistent_spans_is_refused_before_loading_weights(tiny_llama_dir, tmp_path,
                                                                               monkeypatch, template, why):
    model_dir = copy_model(tiny_llama_dir, tmp_path / "model", chat_template=template)
    data = write_records(tmp_path / "chat.jsonl", [{"messages": SINGLE_TURN}, {"messages": REASONING}])

    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded before the assistant spans were checked")

    monkeypatch.setattr(train_run, "load_model", no_weights)
    with pytest.raises(TunelabError) as caught:
        train_run.run(train_config(model=model_dir, data=data, output_dir=tmp_path / "run"))
    message = str(caught.value)
    record = 1 if template is PROMPT_UNLIKE_THE_TURN else 2  # only the reasoning record renders differently later
    assert message.startswith(f"{data}: assistant-only loss cannot find the assistant tokens of training record "
                              f"{record}: the template {why}")
    assert "train.assistant_only_loss=false" in message
    assert "\n" not in message and message.endswith(".")  # one sentence
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("family", ["llama3", "cohere", "cohere2"])
def test_rendered_spans_equal_trls_own_marked_copies_of_real_templates(family, tiny_tokenizer_path):
    """TRL ships hand-marked copies of these families' templates (Cohere 2 ends a turn with two
    special tokens); the spans found by rendering the stock template mask the same tokens."""
    import re

    import trl.chat_template_utils as trl_templates
    from transformers import AutoTokenizer

    from tunelab.train.assistant_spans import tokenize_with_spans
    stock = getattr(trl_templates, f"{family}_chat_template")
    marked = getattr(trl_templates, f"{family}_training_chat_template")
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_path)
    tokenizer.add_special_tokens({"additional_special_tokens": sorted(set(re.findall(r"<\|[A-Za-z_]+\|>", stock)))})
    tokenizer.chat_template = stock
    for conversation in (SINGLE_TURN, MULTI_TURN):
        expected = tokenizer.apply_chat_template(conversation, chat_template=marked, tokenize=True, return_dict=True,
                                                 return_assistant_tokens_mask=True)
        found = tokenize_with_spans(tokenizer, conversation)
        assert found["input_ids"] == expected["input_ids"]
        assert found["assistant_masks"] == expected["assistant_masks"] and 1 in found["assistant_masks"]



@pytest.mark.parametrize("template, trained", [
    (UNMARKED, ["beta alpha<|end|>", "HELLO WORLD<|end|>", " HELLO <|end|>"]),
    # Phi-3 writes EOS after the last turn only: the last turn is trained through it
    (EOS_AT_THE_END, ["beta alpha<|end|>", "HELLO WORLD<|end|>", " HELLO <|end|>\n<|end|>"]),
    # what the template writes after the generation prompt, before the reply, the model generates too
    (CHANNEL_BEFORE_THE_REPLY, ["[final] beta alpha<|end|>", "[final] HELLO WORLD<|end|>", "[final]  HELLO <|end|>"]),
], ids=["plain", "eos-at-the-end", "channel-before-the-reply"])
def test_what_is_trained_is_what_the_model_generates_after_the_prompt_through_its_end_token(
        template, trained, tiny_tokenizer_path):
    from transformers import AutoTokenizer

    from tunelab.train.assistant_spans import assistant_char_spans
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_path)
    tokenizer.chat_template = template
    text, spans = assistant_char_spans(tokenizer, MULTI_TURN)
    assert text == tokenizer.apply_chat_template(MULTI_TURN, tokenize=False)
    assert [text[start:end] for start, end in spans] == trained
