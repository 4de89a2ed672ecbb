"""Classification as `tunelab train` runs it: class-weighted cross-entropy through the Trainer's
compute_loss_func (checked against torch on fixed batches), the label names saved with the model,
and macro-F1 picking the best checkpoint."""
from __future__ import annotations

import json
import random
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from train_helpers import LABELS, classification_records, train_config, write_records

from tunelab.config import StageSettings
from tunelab.models.load import load_model, load_tokenizer
from tunelab.train import run as train_run
from tunelab.train.classify import class_weight_vector
from tunelab.train.data import TrainingData

# 6 negative, 3 neutral, 1 positive: balanced weights are far from 1
IMBALANCED = ([{"text": f"bad awful {i}", "label": "negative"} for i in range(6)]
              + [{"text": f"table chair {i}", "label": "neutral"} for i in range(3)]
              + [{"text": "good great 0", "label": "positive"}])


def classification_trainer(model_dir, tmp_path, records=IMBALANCED, **settings):
    cfg = train_config(model=model_dir, data="unused.jsonl", method="full", output_dir=tmp_path / "run", **settings)
    data = TrainingData("classification", records, [])
    labels = train_run.resolve_labels(cfg.train.labels, data)
    tokenizer, _ = train_run.prepare_tokenizer(load_tokenizer(str(model_dir)), "classification", True)
    model = load_model(str(model_dir), "classification", labels=labels)
    return train_run.build_trainer(model, tokenizer, data, "classification", labels, cfg.train,
                                   StageSettings(data="unused.jsonl", name="train"), tmp_path / "run", 0, 1)


def fixed_batch(n: int = 8, classes: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=generator) * 3
    labels = torch.tensor([i % classes for i in range(n)])
    return logits, labels


def test_balanced_weights_are_sklearns():
    from sklearn.utils.class_weight import compute_class_weight
    weights = class_weight_vector("balanced", LABELS, [0] * 6 + [1] * 3 + [2])
    expected = compute_class_weight("balanced", classes=np.arange(3), y=np.array([0] * 6 + [1] * 3 + [2]))
    assert torch.allclose(weights, torch.tensor(expected, dtype=weights.dtype))
    assert float(weights.mean()) != pytest.approx(1.0)  # not a trivial weighting


@pytest.mark.parametrize("setting, weights", [("balanced", [10 / 18, 10 / 9, 10 / 3]),
                                              ([1.0, 2.0, 0.5], [1.0, 2.0, 0.5])])
def test_weighted_loss_is_torchs_weighted_cross_entropy(setting, weights, tiny_bert_dir, tmp_path):
    trainer = classification_trainer(tiny_bert_dir, tmp_path, class_weights=json.dumps(setting))
    weight = torch.tensor(weights)
    logits, labels = fixed_batch()
    loss = trainer.compute_loss_func(SimpleNamespace(logits=logits), labels)
    per_example = -torch.log_softmax(logits, -1)[torch.arange(len(labels)), labels] * weight[labels]
    # summed over the examples, divided by their count (the normaliser gradient accumulation needs)
    assert loss == pytest.approx(float(F.cross_entropy(logits, labels, weight=weight, reduction="sum")) / len(labels))
    assert loss == pytest.approx(float(per_example.mean()))
    # with accumulation the Trainer passes the example count of the whole accumulated batch
    accumulated = trainer.compute_loss_func(SimpleNamespace(logits=logits), labels, num_items_in_batch=32)
    assert accumulated == pytest.approx(float(per_example.sum()) / 32)


def test_weighted_loss_equals_torchs_weighted_mean_on_a_batch_with_the_training_mix(tiny_bert_dir, tmp_path):
    """Balanced weights average 1 over the training labels, so on a batch with the training set's
    class mix the loss is exactly torch's cross_entropy(weight=...) with its weighted mean."""
    trainer = classification_trainer(tiny_bert_dir, tmp_path, class_weights="balanced")
    labels = torch.tensor([0] * 6 + [1] * 3 + [2])
    logits = fixed_batch(n=10, seed=1)[0]
    weight = class_weight_vector("balanced", LABELS, labels.tolist())
    loss = trainer.compute_loss_func(SimpleNamespace(logits=logits), labels)
    assert loss == pytest.approx(float(F.cross_entropy(logits, labels, weight=weight)))


def test_the_trainer_computes_its_loss_with_the_weights(tiny_bert_dir, tmp_path):
    """compute_loss_func is what the Trainer uses: its loss on a real collated batch is the
    weighted cross-entropy of the model's own logits."""
    trainer = classification_trainer(tiny_bert_dir, tmp_path, class_weights="[1.0,2.0,0.5]")
    batch = trainer.data_collator([trainer.train_dataset[i] for i in (0, 6, 7, 9)])
    model = trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    expected = F.cross_entropy(logits, batch["labels"], weight=torch.tensor([1.0, 2.0, 0.5]), reduction="sum") / 4
    assert batch["labels"].tolist() == [0, 1, 1, 2]
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    unweighted = classification_trainer(tiny_bert_dir, tmp_path / "plain")
    assert unweighted.compute_loss_func is None  # class_weights none: the model's own loss


@pytest.mark.parametrize("method", ["full", "lora"])
def test_labels_saved_with_the_model(method, tiny_bert_dir, tmp_path, monkeypatch):
    """id2label/label2id in the run's config.json (full weights), and for an adapter (which has no
    config.json) in the model card's loading snippet; both load with transformers/PEFT alone."""
    declared = ["positive", "neutral", "negative"]  # not sorted: the declared order is kept
    data = write_records(tmp_path / "cls.jsonl", classification_records())
    out = tmp_path / "run"
    train_run.run(train_config(model=tiny_bert_dir, data=data, method=method, output_dir=out, max_steps=1,
                               labels=f"[{','.join(declared)}]"))
    id2label = dict(enumerate(declared))
    if method == "full":
        config = json.loads((out / "config.json").read_text())
        assert config["id2label"] == {str(i): label for i, label in id2label.items()}
        assert config["label2id"] == {label: i for i, label in id2label.items()}
    else:
        assert not (out / "config.json").exists()
    assert json.loads((out / "manifest.json").read_text())["labels"] == declared
    snippet = re.search(r"```python\n(.*?)```", (out / "README.md").read_text(), re.S).group(1)
    namespace: dict = {}
    exec(snippet, namespace)  # the model card's own instructions
    model = namespace["model"]
    assert model.config.id2label == id2label
    assert model.config.num_labels == 3


def test_macro_f1_picks_the_best_checkpoint(tiny_bert_dir, tmp_path):
    """Evaluated every step; the best checkpoint (and the final metrics, from the best model
    loaded at the end) is the one with the highest macro-F1, not the lowest loss."""
    words = ["good great fine", "bad awful poor", "table chair door"]

    def records(n, seed):
        rng = random.Random(seed)
        rows = []
        for _ in range(n):
            k = rng.randrange(3)
            rows.append({"text": " ".join(rng.sample(words[k].split(), 2)) + f" {rng.randrange(100)}",
                         "label": LABELS[k]})
        return rows

    prepared = tmp_path / "prepared"
    prepared.mkdir()
    write_records(prepared / "train.jsonl", records(24, 1))
    write_records(prepared / "val.jsonl", records(12, 2))
    result = train_run.run(train_config(model=tiny_bert_dir, data=prepared, method="full", output_dir=tmp_path / "run",
                                        lr=0.003, max_steps=8, eval_steps=1, early_stopping_patience="null",
                                        keep_checkpoints=1))
    evals = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
             if "eval_macro_f1" in line][:8]  # one per step; the final evaluation follows
    assert [e["step"] for e in evals] == list(range(1, 9))
    f1 = [e["eval_macro_f1"] for e in evals]
    losses = [e["eval_loss"] for e in evals]
    best_f1_step = f1.index(max(f1)) + 1
    assert losses.index(min(losses)) + 1 != best_f1_step, "this run no longer tells macro-F1 from loss apart"
    assert result.stages[-1]["best_checkpoint"].endswith(f"checkpoint-{best_f1_step}")
    assert result.metrics["eval_macro_f1"] == pytest.approx(max(f1))
