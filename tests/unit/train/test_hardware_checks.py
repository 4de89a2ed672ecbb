"""GPU-only features on a machine without a GPU: QLoRA, Liger kernels and bf16 are refused in one
sentence before any weights load, and gradient checkpointing, which needs no GPU, trains the
same model as training without it. (tests/gpu/ runs the GPU side where there is one.)

CUDA is hidden in these tests, so they check the CPU path on any machine."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from train_helpers import train_config

from tunelab.errors import TunelabError
from tunelab.train import run as run_module


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def no_weights(monkeypatch):
    """Any attempt to load weights fails the test: the refusal must come first."""
    monkeypatch.setattr(run_module, "load_model", lambda *a, **k: pytest.fail("weights were loaded"))


def one_sentence(message: str) -> bool:
    return "\n" not in message and message.endswith(".") and message.count(". ") == 0


@pytest.mark.parametrize("setting,expected", [
    ({"method": "qlora"}, "method qlora needs a CUDA GPU (4-bit weights through bitsandbytes); use method lora"),
    ({"liger": True}, "train.liger needs a GPU (Liger kernels are Triton kernels); set train.liger=false on CPU"),
    ({"bf16": True}, "train.bf16 is on but this machine has no GPU with bf16 support; set train.bf16=auto"),
])
def test_gpu_only_settings_fail_before_weights_load(setting, expected, cpu_only, no_weights, tiny_llama_dir,
                                                     chat_jsonl, tmp_path):
    cfg = train_config(model=tiny_llama_dir, data=chat_jsonl, output_dir=tmp_path / "run", **setting)
    with pytest.raises(TunelabError) as error:
        run_module.run(cfg)
    assert expected in str(error.value)
    assert one_sentence(str(error.value))
    assert not (tmp_path / "run").exists()  # nothing written either


@pytest.mark.slow  # starts a process of its own (seconds)
def test_qlora_on_cpu_from_the_command_line_is_one_line_and_exit_code_2(tiny_llama_dir, chat_jsonl, tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "tunelab.cli", "train", "--model", str(tiny_llama_dir),
                           "--data", str(chat_jsonl), "--method", "qlora", "--output", str(tmp_path / "run"),
                           "train.tracking.backend=none"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == ["error: method qlora needs a CUDA GPU (4-bit weights through bitsandbytes); "
                     "use method lora on this machine."]
    assert "Traceback" not in done.stderr


@pytest.mark.slow  # trains for seconds, or starts processes
def test_gradient_checkpointing_trains_the_same_model_on_cpu(cpu_only, tiny_llama_dir, chat_jsonl, tmp_path,
                                                             monkeypatch):
    """Checkpointing recomputes activations in backward instead of keeping them: the same
    numbers, in the same order, so the same losses and weights (no dropout in the model)."""
    checkpointing = []
    train_stage = run_module.train_stage

    def recording(trainer, resume):
        outcome = train_stage(trainer, resume)
        checkpointing.append(trainer.model.is_activation_checkpointing)  # switched on by the Trainer in train()
        return outcome

    monkeypatch.setattr(run_module, "train_stage", recording)
    runs = {}
    for enabled in (False, True):
        out = tmp_path / f"gc-{enabled}"
        run_module.run(train_config(model=tiny_llama_dir, data=chat_jsonl, output_dir=out, method="full", lr=1e-3,
                                    max_steps=4, gradient_checkpointing=enabled))
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        runs[enabled] = [r["loss"] for r in rows if "loss" in r]
    assert checkpointing == [False, True]
    assert len(runs[True]) == 4 and runs[True][-1] < runs[True][0]
    assert runs[True] == pytest.approx(runs[False], rel=1e-5)
