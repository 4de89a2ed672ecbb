"""One run directory, read the same way by every stage (tunelab.train.run_dir.RunDir):

- a 5-label LoRA classifier trained from a *relative* base path is evaluated (probe and base
  baselines), served and exported, and loads with PEFT alone from another working directory
  (regressions: eval built a 2-label head before the adapter; the adapter recorded its base as
  typed, so it only loaded from the directory training ran in);
- a multi-task run (train.mix, two tasks with their own prefixes) is evaluated task by task with
  each task's prefix, and its probe is fitted on the mixture it actually trained on (regressions:
  no prefix was applied with more than one; the probe read only train.data).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml
from cli_helpers import tunelab, write_jsonl

TOKENIZER = Path(__file__).resolve().parents[1] / "assets" / "tiny-chat-tokenizer"
LABELS = ["billing", "delivery", "login", "refund", "warranty"]
CUES = {"billing": ["invoice", "charged"], "delivery": ["parcel", "courier"], "login": ["password", "locked"],
        "refund": ["money", "return"], "warranty": ["repair", "guarantee"]}
FAST = ["eval.resamples=200", "eval.latency.requests=4", "eval.latency.batch_sizes=[1]",
        "eval.robustness.max_examples=30"]


def tickets(n: int, seed: int, labels=LABELS) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = [rng.choice(CUES[label]), rng.choice(["my", "the", "order", "please", "help"]), str(i % 5)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def prepared(root: Path, name: str, labels=LABELS, seed: int = 0) -> Path:
    for split, n, offset in (("train", 200, 0), ("val", 30, 1), ("test", 60, 2)):
        write_jsonl(root / name / f"{split}.jsonl", tickets(n, seed * 10 + offset, labels))
    return root / name


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel
    root = tmp_path_factory.mktemp("run-dir")
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    prepared(root, "tickets")
    return root


@pytest.fixture(scope="module")
def lora_run(workspace) -> Path:
    # the base is named relative to the working directory, as users type it
    tunelab("train", "--model", "base", "--data", "tickets", "--method", "lora", "--task", "classification",
            "--output", "run", "--epochs", "8", "--lr", "5e-3", "train.batch_size=16", "train.max_length=32",
            "train.lora.r=4", "train.tracking.backend=none", cwd=workspace)
    return workspace / "run"


def test_a_lora_run_records_its_base_by_absolute_path(workspace, lora_run):
    adapter = json.loads((lora_run / "adapter_config.json").read_text())
    manifest = json.loads((lora_run / "manifest.json").read_text())
    assert adapter["base_model_name_or_path"] == str((workspace / "base").resolve())
    assert manifest["base_model"]["id"] == "base" and manifest["base_model"]["path"] == str((workspace / "base").resolve())


def test_peft_alone_loads_the_run_from_another_directory(lora_run, tmp_path, monkeypatch):
    from peft import AutoPeftModelForSequenceClassification
    monkeypatch.chdir(tmp_path)
    model = AutoPeftModelForSequenceClassification.from_pretrained(str(lora_run), num_labels=len(LABELS))
    assert model.base_model.model.config.num_labels == len(LABELS)


def test_five_label_lora_run_evaluates_with_both_baselines(lora_run, workspace, tmp_path):
    # run from elsewhere: the run directory alone says where its base and data are
    proc = tunelab("eval", lora_run, "--baseline", "probe", "--baseline", "base", "--out", tmp_path / "eval", *FAST,
                   cwd=tmp_path)
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["labels"] == LABELS and "vs probe" in proc.stdout and "vs base" in proc.stdout
    assert report["metrics"]["accuracy"] > 0.5, report["metrics"]  # five balanced labels: chance is 0.2
    assert set(report["baselines"]) == {"probe", "base"}


def test_five_label_lora_run_serves_and_exports(lora_run, workspace, tmp_path):
    from tunelab.serve.service import load_backend
    test = [json.loads(line) for line in (workspace / "tickets" / "test.jsonl").read_text().splitlines()]
    answers = load_backend(lora_run).classify([r["text"] for r in test])
    assert all(sorted(probabilities) == LABELS for _, probabilities in answers)
    accuracy = sum(label == r["label"] for (label, _), r in zip(answers, test)) / len(test)
    assert accuracy > 0.5, accuracy  # the adapter and its 5-label head are served, not a fresh head
    tunelab("export", lora_run, "--merge", "--out", tmp_path / "merged", cwd=tmp_path)
    from transformers import AutoModelForSequenceClassification
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged")
    assert [merged.config.id2label[i] for i in range(5)] == LABELS


def test_a_missing_base_is_named_when_serving(lora_run, tmp_path):
    import shutil
    moved = tmp_path / "run"
    shutil.copytree(lora_run, moved, ignore=shutil.ignore_patterns("checkpoints", "eval"))
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")
    (moved / "adapter_config.json").write_text(json.dumps(config))
    proc = tunelab("serve", moved, "--port", "0", check=False,
                   cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"the base model of this adapter is not at {tmp_path / 'gone'}" in proc.stderr


@pytest.fixture(scope="module")
def mixture_run(workspace) -> Path:
    # two tasks, each with its own prefix; the second task's labels are a subset, so a prefix
    # is what tells the model which task it is answering
    prepared(workspace, "support", seed=1)
    prepared(workspace, "shop", labels=["delivery", "refund"], seed=2)
    config = {"train": {"model": "base", "task": "classification", "method": "full", "output_dir": "mixrun",
                        "epochs": 4, "lr": 1e-3, "batch_size": 16, "max_length": 32,
                        "tracking": {"backend": "none"},
                        "mix": [{"data": "support", "prefix": "support: "},
                                {"data": "shop", "prefix": "shop: ", "weight": 0.5}]}}
    (workspace / "mix.yaml").write_text(yaml.safe_dump(config))
    tunelab("train", "mix.yaml", cwd=workspace)
    return workspace / "mixrun"


def test_a_mixture_is_evaluated_task_by_task_with_each_prefix(mixture_run, tmp_path):
    tunelab("eval", mixture_run, "--baseline", "probe", "--out", tmp_path / "eval", *FAST, cwd=tmp_path)
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    by_task = report["slices"]["task"]
    assert set(by_task) == {"support", "shop"}
    assert by_task["support"]["examples"] == 60 and by_task["shop"]["examples"] == 60
    assert "probe" in report["baselines"]  # fitted on the mixture the run trained on


def test_records_of_a_mixture_must_name_their_task(mixture_run, workspace, tmp_path):
    proc = tunelab("eval", mixture_run, "--data", workspace / "support", "--out", tmp_path / "eval", *FAST,
                   cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "an input must name its task" in proc.stderr


def test_the_probe_sees_the_prefixed_mixture(mixture_run):
    from tunelab.train.run_dir import RunDir
    records = RunDir(mixture_run).training_records()
    tasks = {r["meta"]["task"] for r in records}
    assert tasks == {"support", "shop"}
    assert all(r["text"].startswith(f"{r['meta']['task']}: ") for r in records)
