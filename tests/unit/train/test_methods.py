"""Each training method changes the weights it trains, and only those.

`tunelab train` runs a few high-learning-rate steps on a tiny model; the parameters are
snapshotted right after the method is applied (the model the trainer receives), then compared
with the trained model and with what the run directory loads back as: every trainable tensor
changed, every frozen tensor bit-identical, and the saved run (full weights, or a PEFT adapter
directory on the untouched base) equal to the trained model.
"""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from train_helpers import LABELS, train_config

from tunelab.config import LoraSettings
from tunelab.models import adapters
from tunelab.train.run import run

@pytest.fixture
def captured(monkeypatch):
    """The model run() trains, its parameters as they were before training, and which train."""
    seen: dict = {}
    apply_method = adapters.apply_method

    def recording(model, method, **kwargs):
        model = apply_method(model, method, **kwargs)
        seen["model"] = model
        seen["before"] = {n: p.detach().clone() for n, p in model.named_parameters()}
        seen["trainable"] = {n for n, p in model.named_parameters() if p.requires_grad}
        return model

    monkeypatch.setattr(adapters, "apply_method", recording)
    return seen


def expected_trainable(name: str, method: str, task: str) -> bool:
    """Which parameters a method trains, from their names alone (2 blocks, freeze_last_n=1)."""
    if method == "full":
        return True
    if method in ("lora", "dora"):
        adapter = ".lora_A." in name or ".lora_B." in name or (method == "dora" and "lora_magnitude_vector" in name)
        # the classification head is new, so PEFT trains a full copy of it (modules_to_save)
        return adapter or (task == "classification" and "classifier.modules_to_save." in name)
    if task == "sft":  # freeze: the last block and the final norm after it
        return name.startswith("model.layers.1.") or name == "model.norm.weight"
    return name.startswith(("bert.encoder.layer.1.", "bert.pooler.", "classifier."))


def lora_parameter_count(base: nn.Module, r: int, dora: bool) -> int:
    """r * (in + out) for every linear layer but the heads (train.lora.target_modules all-linear),
    plus a magnitude per output feature for DoRA: counted on the plain model, without PEFT."""
    total = 0
    for name, module in base.named_modules():
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] not in adapters.HEAD_NAMES:
            total += r * (module.in_features + module.out_features) + (module.out_features if dora else 0)
    return total


def base_model(model_dir, task):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    if task == "classification":
        return AutoModelForSequenceClassification.from_pretrained(
            model_dir, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
            label2id={label: i for i, label in enumerate(LABELS)})
    return AutoModelForCausalLM.from_pretrained(model_dir)


@pytest.mark.parametrize("task", ["sft", "classification"])
@pytest.mark.parametrize("method", ["full", "lora", "dora", "freeze"])
def test_method_trains_its_weights_and_only_those(method, task, captured, tiny_llama_dir, tiny_bert_dir, chat_jsonl,
                                                  cls_jsonl, tmp_path):
    model_dir, data = (tiny_llama_dir, chat_jsonl) if task == "sft" else (tiny_bert_dir, cls_jsonl)
    out = tmp_path / "run"
    result = run(train_config(model=model_dir, data=data, method=method, output_dir=out, lr=0.01, freeze_last_n=1))

    trained = dict(captured["model"].named_parameters())
    before, trainable = captured["before"], captured["trainable"]
    assert trainable == {n for n in before if expected_trainable(n, method, task)}
    assert trainable, "the method trains nothing"
    unchanged = sorted(n for n in trainable if torch.equal(trained[n].detach(), before[n]))
    assert unchanged == [], f"trainable tensors that did not change: {unchanged}"
    moved = sorted(n for n in before if n not in trainable and not torch.equal(trained[n].detach(), before[n]))
    assert moved == [], f"frozen tensors that changed: {moved}"

    # the run directory holds exactly the trained model
    if method in ("lora", "dora"):
        from peft import PeftModel
        assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
        loaded = dict(PeftModel.from_pretrained(base_model(model_dir, task), out).named_parameters())
        assert loaded.keys() == before.keys()
        for name, tensor in loaded.items():
            if name in trainable:
                assert torch.equal(tensor, trained[name].detach()), name
            elif ".original_module." not in name:  # (the base's fresh head, which the adapter replaces)
                assert torch.equal(tensor, before[name]), f"base weight {name} differs from the base model"
    else:
        loaded = dict(base_model(out, task).named_parameters())
        assert loaded.keys() == before.keys()
        for name, tensor in loaded.items():
            assert torch.equal(tensor, trained[name].detach()), name

    # the trainable count apply_method reports, and the run records, is the expected one
    fresh = base_model(model_dir, task)
    if method == "full":
        expected = sum(p.numel() for p in fresh.parameters())
    elif method == "freeze":
        expected = sum(p.numel() for n, p in fresh.named_parameters() if expected_trainable(n, method, task))
    else:
        head = sum(p.numel() for p in fresh.classifier.parameters()) if task == "classification" else 0
        expected = lora_parameter_count(fresh, r=4, dora=method == "dora") + head
    assert adapters.count_trainable(captured["model"])[0] == expected
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parameters"]["trainable"] == expected
    assert manifest["parameters"]["total"] == adapters.count_trainable(captured["model"])[1]
    assert result.stages[-1]["steps"] == 3


def test_lora_targets_named_modules_only(tiny_llama_dir):
    """An explicit target list adapts those layers in every block, nothing else."""
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    shapes = {n: (m.in_features, m.out_features) for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    base_total = sum(p.numel() for p in model.parameters())
    lora = LoraSettings(r=2, alpha=4, target_modules=["q_proj", "v_proj"])
    peft_model = adapters.apply_method(model, "lora", task="sft", lora=lora)
    adapted = {n.removeprefix("base_model.model.").split(".lora_A.")[0]
               for n, _ in peft_model.named_parameters() if ".lora_A." in n}
    assert adapted == {f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")}
    expected = sum(2 * (i + o) for n, (i, o) in shapes.items() if n.endswith(("q_proj", "v_proj")))
    assert adapters.count_trainable(peft_model) == (expected, base_total + expected)


def test_all_linear_leaves_the_heads_out(tiny_llama_dir, tiny_bert_dir):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    llama = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    assert adapters.lora_targets(llama, "all-linear", "sft") == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    bert = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=3)
    assert adapters.lora_targets(bert, "all-linear", "classification") == ["dense", "key", "query", "value"]


def test_freeze_counts_the_last_blocks_norm_and_head(tiny_llama_dir, tiny_bert_dir):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    llama = adapters.apply_method(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), "freeze", task="sft",
                                  freeze_last_n=2)
    blocks = sum(p.numel() for p in llama.model.layers.parameters())
    assert adapters.count_trainable(llama)[0] == blocks + llama.model.norm.weight.numel()
    bert = adapters.apply_method(AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=3),
                                 "freeze", task="classification", freeze_last_n=1)
    expected = sum(p.numel() for m in (bert.bert.encoder.layer[1], bert.bert.pooler, bert.classifier)
                   for p in m.parameters())
    assert adapters.count_trainable(bert)[0] == expected
