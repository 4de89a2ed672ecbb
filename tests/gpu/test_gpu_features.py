"""GPU-only features of `tunelab train`, on a tiny Llama: bf16 mixed precision, QLoRA (4-bit base
weights through bitsandbytes) and Liger kernels. Skipped, with the reason shown, where there is
no CUDA GPU (`pytest -ra` lists them), and per test where its package is missing; the CPU side
(each one refused before weights load) is tests/unit/train/test_hardware_checks.py.

Run them on a GPU machine with `pip install -e '.[gpu,dev]' && pytest tests/gpu -ra`."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tunelab.config import load_config
from tunelab.train import run as run_module

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

ASSETS = Path(__file__).resolve().parents[1] / "assets"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A seeded 2-block Llama (hidden 64: a multiple of the 4-bit quantisation block) with the
    tests' tiny chat tokenizer."""
    from transformers import AutoTokenizer

    from tiny_models import build_tiny_llama
    tokenizer = AutoTokenizer.from_pretrained(ASSETS / "tiny-chat-tokenizer")
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-gpu"), tokenizer, hidden=64, intermediate=128,
                            layers=2, heads=4, max_positions=128, tied=False)


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "chat.jsonl"
    records = [{"messages": [{"role": "user", "content": f"what is {i} plus one"},
                             {"role": "assistant", "content": f"it is {i + 1}"}]} for i in range(32)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def trained(monkeypatch):
    """Runs `tunelab train` in-process; returns (losses per step, the trainer after training)."""
    monkeypatch.setattr(run_module, "preflight_memory", lambda *a, **k: None)  # kB-sized model
    seen = {}
    train_stage = run_module.train_stage

    def recording(trainer, resume):
        seen["trainer"] = trainer
        return train_stage(trainer, resume)

    monkeypatch.setattr(run_module, "train_stage", recording)

    def train(model: Path, data: Path, out: Path, **settings):
        base = {"model": model, "data": data, "output_dir": out, "max_steps": 6, "batch_size": 8, "max_length": 64,
                "lr": 1e-3, "warmup": 0, "scheduler": "constant", "logging_steps": 1, "seed": 0,
                "early_stopping_patience": "null", "tracking.backend": "none", "lora.r": 4, "lora.alpha": 8}
        cfg = load_config(None, [f"train.{k}={v}" for k, v in {**base, **settings}.items()])
        run_module.run(cfg)
        rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if "loss" in r], seen["trainer"]

    return train


def test_bf16_trains_close_to_fp32(tiny_model, chat_data, tmp_path, trained):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    fp32, fp32_trainer = trained(tiny_model, chat_data, tmp_path / "fp32", method="full", bf16="false")
    bf16, bf16_trainer = trained(tiny_model, chat_data, tmp_path / "bf16", method="full", bf16="true")
    assert bf16_trainer.args.bf16 and not fp32_trainer.args.bf16
    assert all(math.isfinite(loss) for loss in bf16) and bf16[-1] < bf16[0]
    assert bf16 == pytest.approx(fp32, rel=5e-2)  # bf16 keeps 8 bits of mantissa: close, not equal


def test_qlora_trains_an_adapter_on_4bit_weights(tiny_model, chat_data, tmp_path, trained):
    pytest.importorskip("bitsandbytes")
    losses, trainer = trained(tiny_model, chat_data, tmp_path / "qlora", method="qlora")
    quantized = [name for name, module in trainer.model.named_modules() if type(module).__name__ == "Linear4bit"]
    assert quantized, "the base weights were not loaded in 4 bits"
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0]
    run_dir = tmp_path / "qlora"
    assert (run_dir / "adapter_config.json").is_file() and (run_dir / "adapter_model.safetensors").is_file()
    from safetensors.torch import load_file
    adapter = load_file(run_dir / "adapter_model.safetensors")
    lora_b = [t for name, t in adapter.items() if "lora_B" in name]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b)  # LoRA B starts at zero: it trained
    from peft import AutoPeftModelForCausalLM
    AutoPeftModelForCausalLM.from_pretrained(run_dir)  # PEFT alone loads it onto the base


def test_liger_kernels_train_the_same_curve(tiny_model, chat_data, tmp_path, trained):
    pytest.importorskip("liger_kernel")
    plain, _ = trained(tiny_model, chat_data, tmp_path / "plain", method="full", bf16="false", liger="false")
    liger, trainer = trained(tiny_model, chat_data, tmp_path / "liger", method="full", bf16="false", liger="true")
    patched = [name for name, module in trainer.model.named_modules()
               if getattr(getattr(module, "forward", None), "__func__", None) is not None
               and module.forward.__func__.__module__.startswith("liger_kernel")]
    assert patched, "no module runs a Liger kernel"
    assert liger == pytest.approx(plain, rel=1e-3)  # fused kernels, same mathematics
