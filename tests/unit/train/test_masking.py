"""Assistant-only loss as tunelab configures TRL: the labels cover each assistant reply and its
end-of-turn token, and nothing of the system or user turns or the role headers; a template TRL
knows gets its marked copy (templates without markers: test_rendered_spans.py)."""
from __future__ import annotations

import json
import re
from pathlib import Path

from chat_templates import UNMARKED
from train_helpers import copy_model, train_config

from tunelab.config import StageSettings
from tunelab.models.load import load_model, load_tokenizer
from tunelab.train import run as train_run
from tunelab.train.data import TrainingData

CONVERSATIONS = [
    [{"role": "system", "content": "You answer in one line."},
     {"role": "user", "content": "Reverse the words: alpha beta"},
     {"role": "assistant", "content": "beta alpha"},
     {"role": "user", "content": "Translate to upper case: hello world"},
     {"role": "assistant", "content": "HELLO WORLD"}],
    [{"role": "user", "content": "What is 12 plus 1?"},
     {"role": "assistant", "content": "13, the refund policy says so."}],
]


def collated_batch(model_dir: Path, tmp_path: Path, conversations=CONVERSATIONS, **settings):
    """The first training batch exactly as the trainer tunelab builds would see it."""
    cfg = train_config(model=model_dir, data="unused.jsonl", method="full", output_dir=tmp_path / "run", **settings)
    tc = cfg.train
    tokenizer, _ = train_run.prepare_tokenizer(load_tokenizer(str(model_dir)), "sft", tc.assistant_only_loss)
    data = TrainingData("generative", [{"messages": m} for m in conversations], [])
    trainer = train_run.build_trainer(load_model(str(model_dir), "sft"), tokenizer, data, "sft", None, tc,
                                      StageSettings(data="unused.jsonl", name="train"), tmp_path / "run", 0, 1)
    rows = [trainer.train_dataset[i] for i in range(len(conversations))]
    return tokenizer, trainer.data_collator(rows)


def labelled_runs(input_ids, labels) -> list[list[int]]:
    """The maximal runs of consecutive positions whose label is not -100, as token ids."""
    runs, current = [], []
    for token, label in zip(input_ids, labels):
        if label != -100:
            assert label == token, "labels must be the input ids themselves (the model shifts them)"
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def test_labels_are_exactly_the_assistant_replies_and_their_end_token(tiny_llama_dir, tmp_path):
    tokenizer, batch = collated_batch(tiny_llama_dir, tmp_path)
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    assert end == tokenizer.eos_token_id
    for row, messages in enumerate(CONVERSATIONS):
        ids = batch["input_ids"][row].tolist()
        labels = batch["labels"][row].tolist()
        runs = labelled_runs(ids, labels)
        replies = [m["content"] for m in messages if m["role"] == "assistant"]
        assert [tokenizer.decode(run) for run in runs] == [reply + "<|end|>" for reply in replies]
        assert all(run[-1] == end for run in runs), "each labelled span ends with the end-of-turn token"
        # nothing else: the rendered conversation minus the labelled spans is every other turn,
        # and every role header, whole
        rendered = tokenizer.apply_chat_template(messages, tokenize=False)
        unlabelled = tokenizer.decode([t for t, label in zip(ids, labels) if label == -100
                                       and t != tokenizer.pad_token_id])
        assert unlabelled == re.sub("|".join(re.escape(r + "<|end|>") for r in replies), "", rendered)
        for message in messages:
            if message["role"] != "assistant":
                assert message["content"] in unlabelled
        assert unlabelled.count("<|assistant|>") == len(replies)


def test_an_assistant_message_weighted_0_is_context_not_trained_on(tiny_llama_dir, tmp_path):
    """OpenAI's chat format: `"weight": 0` keeps a reply in the context and out of the loss, even
    with a template whose {% generation %} markers would label every reply."""
    weighted = [[{**m, "weight": 0} if i == 2 else m for i, m in enumerate(CONVERSATIONS[0])], CONVERSATIONS[1]]
    tokenizer, batch = collated_batch(tiny_llama_dir, tmp_path, conversations=weighted)
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    assert [tokenizer.decode(run) for run in labelled_runs(ids, labels)] == ["HELLO WORLD<|end|>"]
    assert "beta alpha" in tokenizer.decode(ids), "the reply weighted 0 is still in the context"
    second = labelled_runs(batch["input_ids"][1].tolist(), batch["labels"][1].tolist())
    assert [tokenizer.decode(run) for run in second] == ["13, the refund policy says so.<|end|>"]


def test_without_assistant_only_loss_every_token_is_labelled(tiny_llama_dir, tmp_path):
    tokenizer, batch = collated_batch(tiny_llama_dir, tmp_path, assistant_only_loss="false")
    for row in range(len(CONVERSATIONS)):
        real = batch["attention_mask"][row].bool()
        labels = batch["labels"][row]
        assert (labels[real] == batch["input_ids"][row][real]).all()
        assert (labels[~real] == -100).all()


def test_template_without_generation_markers_trains_without_assistant_only_loss(tiny_llama_dir, chat_jsonl,
                                                                                tmp_path):
    model_dir = copy_model(tiny_llama_dir, tmp_path / "model", chat_template=UNMARKED)
    result = train_run.run(train_config(model=model_dir, data=chat_jsonl, output_dir=tmp_path / "run",
                                        method="full", assistant_only_loss="false", max_steps=1))
    assert result.stages[-1]["steps"] == 1
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["loss_mask"] == "all_tokens"


def test_a_known_template_without_markers_gets_trls_marked_copy(tiny_llama_dir):
    """Qwen2.5-Instruct's stock template has no {% generation %} markers; TRL ships a marked copy
    that renders the same text, so assistant-only loss works on it without user action."""
    from trl.chat_template_utils import qwen2_5_chat_template, qwen2_5_training_chat_template

    from tunelab.models.load import load_tokenizer
    tokenizer = load_tokenizer(str(tiny_llama_dir))
    tokenizer.chat_template = qwen2_5_chat_template
    plain = tokenizer.apply_chat_template(CONVERSATIONS[0], tokenize=False)
    prepared, loss_mask = train_run.prepare_tokenizer(tokenizer, "sft", True)
    assert loss_mask == "trl_training_template"
    assert prepared.chat_template == qwen2_5_training_chat_template
    assert prepared.apply_chat_template(CONVERSATIONS[0], tokenize=False) == plain
