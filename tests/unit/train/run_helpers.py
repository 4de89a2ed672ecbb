"""Helpers for tiny `tunelab train` runs: data written as `tunelab data prepare` writes it, a config
that takes seconds on 2 CPU cores, and the weights a model or a saved directory holds."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from tunelab.config import validate_config


def write_prepared(directory: Path, train: list[dict], val: list[dict] | None = None) -> Path:
    """A prepared directory (train.jsonl, and val.jsonl when given)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("val", val)):
        if rows is not None:
            (directory / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return directory


def chat(user: str, assistant: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def train_config(model: Path, output: Path, **train):
    """A validated RunConfig for a tiny run: no tracker, small batches, every step logged."""
    settings = {"model": str(model), "output_dir": str(output), "tracking": {"backend": "none"},
                "batch_size": 4, "logging_steps": 1, "epochs": 1, "warmup": 0, "scheduler": "constant",
                "early_stopping_patience": None, "max_length": 64, **train}
    return validate_config({"train": settings}, "test")


def metrics_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def weights_in(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    state = {}
    for file in sorted(Path(directory).glob("*.safetensors")):
        state.update(load_file(str(file)))
    return state


def base_weights(model) -> dict[str, torch.Tensor]:
    """The weights a model computes with, named as in a plain model: a PEFT model's base layers
    (its LoRA weights left out) or a plain model's state dict."""
    from peft import PeftModel
    if not isinstance(model, PeftModel):
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
    state = {}
    for name, value in model.state_dict().items():
        if "lora_" in name:
            continue
        state[name.removeprefix("base_model.model.").replace(".base_layer", "")] = value.detach().clone()
    return state


def adapter_weights(model) -> dict[str, torch.Tensor] | None:
    """A PEFT model's trainable adapter weights, named as in adapter_model.safetensors."""
    from peft import PeftModel, get_peft_model_state_dict
    if not isinstance(model, PeftModel):
        return None
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def assert_same_weights(actual: dict, expected: dict) -> None:
    shared = expected.keys() & actual.keys()
    assert shared and len(shared) >= len(expected) - 1  # a tied LM head may be stored once
    for name in shared:
        assert torch.equal(actual[name], expected[name]), name
