"""Fixtures for tiny `tunelab train` runs: a tiny Llama built from the test tokenizer, and a spy on
the stages a run trains (helpers are in run_helpers.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from run_helpers import adapter_weights, base_weights
# the fixtures of train_helpers, for every test in this directory without importing them by name
from train_helpers import chat_jsonl, cls_jsonl, no_memory_preflight, tiny_bert_dir, tiny_llama_dir  # noqa: F401

# One intra-op thread: on 2 shared cores, OpenMP threads of tiny matmuls spin against each other
# and against other processes, making a few-second run take a minute.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A seeded 2-layer, hidden-32 LlamaForCausalLM with the tiny chat tokenizer, saved as a normal
    Hugging Face directory."""
    from transformers import AutoTokenizer

    from tiny_models import build_tiny_llama
    tokenizer = AutoTokenizer.from_pretrained(Path(__file__).parents[2] / "assets" / "tiny-chat-tokenizer")
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), tokenizer, hidden=32, intermediate=64, layers=2,
                            heads=4, max_positions=256)


@pytest.fixture
def spy_stages(monkeypatch):
    """Records, for each stage trained, the trainer and the model's weights as training starts."""
    from tunelab.train import run as run_module
    seen = []
    original = run_module.train_stage

    def recording(trainer, resume):
        seen.append({"trainer": trainer, "resume": resume, "initial": base_weights(trainer.model),
                     "reference": base_weights(trainer.ref_model) if getattr(trainer, "ref_model", None) else None,
                     "adapter": adapter_weights(trainer.model),
                     "lr": trainer.args.learning_rate, "epochs": trainer.args.num_train_epochs})
        return original(trainer, resume)

    monkeypatch.setattr(run_module, "train_stage", recording)
    return seen
