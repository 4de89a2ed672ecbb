"""`tunelab export RUN --format onnx [--int8]` on tiny BERT classifiers trained here: the file is
kept only after it answers as the PyTorch model on the run's test split (figures in the
manifest), an adapter run is merged first, the graph takes any batch and length, int8 really
quantises the weights, a failed check writes nothing, and `tunelab eval` scores the export as a
run with the run it came from as a baseline."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from tunelab.config import load_config, validate_config
from tunelab.errors import TunelabError
from tunelab.export import onnx as onnx_export
from tunelab.export.onnx_runtime import OnnxClassifier
from tunelab.train.run import run as train

ASSETS = Path(__file__).resolve().parents[2] / "assets"
CUES = {"negative": ["awful", "broken", "refund"], "neutral": ["okay", "arrived", "average"],
        "positive": ["great", "lovely", "perfect"]}
LABELS = sorted(CUES)


def records(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = rng.choice(LABELS)
        words = [rng.choice(CUES[label]), rng.choice(["the", "order", "was", "item", "service", "today"]),
                 str(i % 7)] + ["and"] * rng.randint(0, 6)  # lengths vary: padding is exercised
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_split(directory: Path, name: str, rows: list[dict]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module", autouse=True)
def no_memory_preflight():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("tunelab.train.run.preflight_memory", lambda *args, **kwargs: None)
        yield


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A tiny BERT encoder (no head, like MiniLM) and a prepared directory with a test split."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel
    root = tmp_path_factory.mktemp("onnx-export")
    tokenizer = AutoTokenizer.from_pretrained(ASSETS / "tiny-chat-tokenizer")
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    for name, n, seed in (("train", 160, 0), ("val", 20, 1), ("test", 90, 2)):
        write_split(root / "data", name, records(n, seed))
    return root


def train_run(workspace: Path, name: str, method: str) -> Path:
    settings = {"model": str(workspace / "base"), "data": str(workspace / "data"), "output_dir": str(workspace / name),
                "method": method, "epochs": 8, "lr": 2e-3, "batch_size": 16, "max_length": 32, "warmup": 0,
                "logging_steps": 5, "tracking": {"backend": "none"}, "early_stopping_patience": None, "seed": 0}
    if method == "lora":
        settings["lora"] = {"r": 4, "alpha": 8}
    train(validate_config({"train": settings}, "test"))
    return workspace / name


@pytest.fixture(scope="module")
def full_run(workspace) -> Path:
    return train_run(workspace, "run", "full")


@pytest.fixture(scope="module")
def fp32_export(full_run, tmp_path_factory) -> tuple[Path, onnx_export.OnnxExportResult]:
    out = tmp_path_factory.mktemp("exports") / "fp32"
    return out, onnx_export.run(full_run, out_dir=out)


def pytorch_predictions(run: Path, texts: list[str]):
    from tunelab.evaluate.predict import classify, load_classifier
    model, tokenizer = load_classifier(str(run))
    return classify(model, tokenizer, texts, max_length=32)


@pytest.mark.slow  # starts a process of its own (seconds)
def test_the_float32_export_answers_as_the_run_and_says_so_in_its_manifest(full_run, fp32_export, workspace):
    out, result = fp32_export
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"model.onnx", "tokenizer.json", "README.md"} <= {p.name for p in out.iterdir()}
    assert (manifest["stage"], manifest["format"], manifest["int8"], manifest["model_file"]) == (
        "export", "onnx", False, "model.onnx")
    assert manifest["source_run"] == str(full_run.resolve())
    assert (manifest["labels"], manifest["max_length"], manifest["task"]) == (LABELS, 32, "classification")
    checks = manifest["checks"]
    assert checks["passed"] and checks["examples"] == 90 and checks["data"].endswith("data")
    assert checks["label_agreement"] == 1.0 and checks["max_abs_logit_diff"] <= 1e-4
    assert checks["accuracy"]["onnx"] == checks["accuracy"]["pytorch"] > 0.5  # the cues were learnt (chance 1/3)
    assert manifest["outputs"]["model.onnx"]["sha256"] and result.checks == checks

    texts = [r["text"] for r in records(40, seed=7)]
    exported = OnnxClassifier.load(out)
    assert (exported.labels, exported.max_length) == (LABELS, 32)
    predicted, probabilities = exported.predict(texts, batch_size=8)
    expected, expected_probabilities = pytorch_predictions(full_run, texts)
    assert (predicted == expected).all()
    np.testing.assert_allclose(probabilities, expected_probabilities, atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    # any batch size and length: one text alone, and a text longer than max_length (truncated)
    alone = exported.predict(texts[:1])[1]
    np.testing.assert_allclose(alone, probabilities[:1], atol=1e-5)
    long_text = " ".join(["great"] * 200)
    np.testing.assert_allclose(exported.predict([long_text])[1], pytorch_predictions(full_run, [long_text])[1],
                               atol=1e-5)


@pytest.mark.slow
def test_int8_quantises_the_weights_and_is_held_to_its_thresholds(full_run, tmp_path, monkeypatch):
    import onnx
    monkeypatch.setattr(onnx_export, "INT8_MIN_AGREEMENT", 0.0)  # a 32-wide model's int8 figures are not the point
    monkeypatch.setattr(onnx_export, "INT8_MAX_ACCURACY_DROP", 1.0)
    result = onnx_export.run(full_run, int8=True, out_dir=tmp_path / "int8")
    manifest = json.loads((tmp_path / "int8" / "manifest.json").read_text())
    assert manifest["int8"] is True and manifest["checks"]["thresholds"] == {"min_label_agreement": 0.0,
                                                                              "max_accuracy_drop": 1.0}
    operators = {node.op_type for node in onnx.load(str(tmp_path / "int8" / "model.onnx")).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= operators
    assert "int8 ONNX classifier saved" in result.message

    monkeypatch.setattr(onnx_export, "INT8_MIN_AGREEMENT", 1.01)  # unreachable: the check must refuse
    with pytest.raises(TunelabError, match=r"int8 model agrees .* so nothing was written"):
        onnx_export.run(full_run, int8=True, out_dir=tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8"]  # no partial directory left beside it


@pytest.mark.slow  # starts a process of its own (seconds)
def test_a_failed_float32_check_writes_nothing_and_keeps_an_earlier_export(full_run, fp32_export):
    out, _ = fp32_export
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(TunelabError, match=r"logits differ .* \(tolerance 1e-12\) .* so nothing was written"):
        onnx_export.run(full_run, out_dir=out, tolerance=1e-12)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
def test_an_adapter_run_is_merged_and_checked_before_it_is_exported(workspace, tmp_path):
    adapter = train_run(workspace, "lora-run", "lora")
    result = onnx_export.run(adapter, out_dir=tmp_path / "onnx")
    manifest = json.loads((tmp_path / "onnx" / "manifest.json").read_text())
    assert manifest["merge_check"]["max_abs_logit_diff"] <= manifest["merge_check"]["tolerance"]
    assert manifest["checks"]["passed"] and manifest["checks"]["label_agreement"] == 1.0
    texts = [r["text"] for r in records(20, seed=9)]
    np.testing.assert_allclose(OnnxClassifier.load(tmp_path / "onnx").predict(texts)[1],
                               pytorch_predictions(adapter, texts)[1], atol=1e-5)
    assert result.out_dir == tmp_path / "onnx"


def test_bad_runs_are_refused_in_one_sentence_before_anything_is_written(full_run, workspace, tmp_path):
    import shutil
    from tiny_models import build_tiny_llama
    from transformers import AutoTokenizer
    llama = build_tiny_llama(tmp_path / "llama", AutoTokenizer.from_pretrained(ASSETS / "tiny-chat-tokenizer"),
                             hidden=32, layers=1)
    with pytest.raises(TunelabError, match="ONNX export covers classifiers, and this run is a sft"):
        onnx_export.run(llama, out_dir=tmp_path / "llama-onnx")
    broken = shutil.copytree(full_run, tmp_path / "broken")
    (broken / "model.safetensors").unlink()
    with pytest.raises(TunelabError, match=r"lacks model weights \(model.safetensors\)"):
        onnx_export.run(broken)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    with pytest.raises(TunelabError, match="not an earlier ONNX export"):
        onnx_export.run(full_run, out_dir=occupied)
    assert not (tmp_path / "llama-onnx").exists() and not (broken / "onnx").exists()
    assert [p.name for p in occupied.iterdir()] == ["notes.txt"]


@pytest.mark.slow  # trains, interrupts and resumes, or starts processes (seconds)
def test_eval_scores_an_export_as_a_run_beside_the_run_it_came_from(full_run, fp32_export, tmp_path):
    from tunelab.evaluate.run import run as evaluate
    out, _ = fp32_export
    settings = ["eval.resamples=100", "eval.latency.requests=4", "eval.latency.batch_sizes=[1,4]",
                "eval.robustness.max_examples=20", f"eval.model={out}", f"eval.out_dir={tmp_path / 'eval'}"]
    report = evaluate(load_config(None, settings).eval).report
    assert report["export"] == {"format": "onnx", "int8": False, "source_run": str(full_run.resolve())}
    assert report["metrics"]["examples"] == 90 and report["data"].endswith("data")  # the run's test split
    source = str(full_run.resolve())
    assert list(report["baselines"]) == [source]
    # float32: the same answers as the run, so no difference at all
    assert report["metrics"]["accuracy"] == report["baselines"][source]["accuracy"]
    assert report["comparisons"][source]["accuracy"]["difference"] == 0.0
    assert "onnx export of" in (tmp_path / "eval" / "report.md").read_text()

    settings.append("eval.explain.examples=5")
    with pytest.raises(TunelabError, match="explanations are computed with the PyTorch model's gradients"):
        evaluate(load_config(None, settings).eval)
