"""Fixtures and helpers for the method, masking, config-error and classification tests of
`tunelab train`: a 2-block Llama (hidden 32, untied head) for SFT and a 2-block BERT encoder
(hidden 32, no head) for classification, both built from configs with the tests' tiny chat
tokenizer and saved with save_pretrained (seeded, offline, kilobytes); tiny chat and
classification records; the RunConfig of a run of a few steps.

Its fixtures reach the tests of this directory through its conftest.py; test modules import the
plain helpers they use by name (`from train_helpers import train_config`).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tunelab.config import load_config

ASSETS = Path(__file__).resolve().parents[2] / "assets"
LABELS = ["negative", "neutral", "positive"]


def copy_model(src: Path, dst: Path, *, weights: bool = True, chat_template: str | None = None) -> Path:
    """A copy of a model directory; without weights (structure and tokenizer only: loading the
    model from it fails), or with another chat template ("" removes it)."""
    shutil.copytree(src, dst)
    if not weights:
        for file in dst.glob("*.safetensors"):
            file.unlink()
    if chat_template is not None:
        (dst / "chat_template.jinja").unlink()
        if chat_template:
            (dst / "chat_template.jinja").write_text(chat_template)
    return dst


def chat_records(n: int = 8) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"what is {i} plus one"},
                          {"role": "assistant", "content": f"it is {i + 1}"}]} for i in range(n)]


def classification_records(n: int = 12, labels=LABELS) -> list[dict]:
    words = ["quick brown fox", "lazy dog sleeps", "the refund policy"]
    return [{"text": f"{words[i % len(labels) % 3]} {i}", "label": labels[i % len(labels)]} for i in range(n)]


def write_records(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def train_config(**train):
    """A RunConfig for a tiny run: a few steps, no warm-up, no tracker; `train` overrides any key."""
    settings = {"max_steps": 3, "batch_size": 4, "max_length": 64, "warmup": 0, "logging_steps": 1,
                "tracking.backend": "none", "lora.r": 4, "lora.alpha": 8, "seed": 0, **train}
    return load_config(None, [f"train.{key}={value}" for key, value in settings.items()])


@pytest.fixture(autouse=True)
def no_memory_preflight(monkeypatch):
    """The pre-flight memory estimate is tested with its own module; these runs train models of a
    few kB whatever the machine, and must not depend on its free memory."""
    monkeypatch.setattr("tunelab.train.run.preflight_memory", lambda *args, **kwargs: None)


def _tokenizer():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(ASSETS / "tiny-chat-tokenizer")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    from tiny_models import build_tiny_llama
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-untied"), _tokenizer(), hidden=32, intermediate=64,
                            layers=2, heads=2, max_positions=128, tied=False)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """An encoder without a classification head, like the embedded MiniLM: the head is new."""
    import torch
    from transformers import BertConfig, BertModel
    tokenizer = _tokenizer()
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-bert")
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture
def chat_jsonl(tmp_path) -> Path:
    return write_records(tmp_path / "chat.jsonl", chat_records())


@pytest.fixture
def cls_jsonl(tmp_path) -> Path:
    return write_records(tmp_path / "cls.jsonl", classification_records())
