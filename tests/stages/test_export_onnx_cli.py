"""`tunelab export RUN --format onnx [--int8]` as a user runs it (the console command).

Bad input (a run directory with missing files, a generative run the ONNX exporter does not
handle, no directory at all): one sentence on stderr, exit 2, nothing written.

The acceptance run (slow): the demo's recipe (examples/sentiment.yaml: the embedded MiniLM on
`example:sentiment`), shortened to 2,000 training examples, one epoch at lr 1e-4, exported to int8
ONNX: on the 3,248-example test split its accuracy is within one point of the PyTorch model's,
and `tunelab eval` of the export reports the same difference against the run it came from.
Measured on 2026-12-02 (2-core AMD EPYC): PyTorch accuracy 65.73%, int8 ONNX 65.49% (-0.25
points), labels agreeing on 98.61% of the test examples, largest logit difference 0.37.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import tunelab, tunelab_in_process

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER = ROOT / "tests" / "assets" / "tiny-chat-tokenizer"


def single_sentence_error(monkeypatch, capsys, *args) -> str:
    """`tunelab ARGS` through the console script's entry point: exit 2 and one sentence."""
    code, out, err = tunelab_in_process(monkeypatch, capsys, *args)
    assert code == 2, out + err
    assert "Traceback" not in err
    message = " ".join(err.split())
    assert message.startswith("error: ") and message.endswith(".")
    return message


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory) -> dict[str, Path]:
    """A classifier directory whose weights are gone, and a tiny Llama (a causal LM)."""
    import torch
    from tiny_models import build_tiny_llama
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
    root = tmp_path_factory.mktemp("export-onnx-cli")
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=2, num_labels=2, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(root / "no-weights")
    tokenizer.save_pretrained(root / "no-weights")
    (root / "no-weights" / "model.safetensors").unlink()
    build_tiny_llama(root / "llama", tokenizer, hidden=32, layers=1)
    return {"no-weights": root / "no-weights", "llama": root / "llama", "root": root}


def test_a_run_directory_with_missing_files_is_refused_in_one_sentence(bad_runs, monkeypatch, capsys):
    run = bad_runs["no-weights"]
    before = sorted(p.name for p in run.iterdir())
    message = single_sentence_error(monkeypatch, capsys, "export", run, "--format", "onnx", "--int8")
    assert "lacks model weights (model.safetensors), so there is no model to export" in message
    assert sorted(p.name for p in run.iterdir()) == before  # no onnx-int8/ nor a partial one


def test_a_generative_run_is_refused_in_one_sentence(bad_runs, monkeypatch, capsys):
    run = bad_runs["llama"]
    message = single_sentence_error(monkeypatch, capsys, "export", run, "--format", "onnx")
    assert "ONNX export covers classifiers, and this run is a sft (generative) model" in message
    assert "--format gguf" in message
    assert not (run / "onnx").exists()


def test_no_run_directory_and_a_gguf_quant_are_refused_in_one_sentence(bad_runs, monkeypatch, capsys):
    message = single_sentence_error(monkeypatch, capsys, "export", bad_runs["root"] / "missing", "--format", "onnx")
    assert "run directory not found" in message
    message = single_sentence_error(monkeypatch, capsys, "export", bad_runs["llama"], "--format", "onnx",
                                    "--quant", "q8_0")
    assert "--quant chooses a GGUF weight type; ONNX is quantised with --int8" in message


@pytest.mark.slow
@pytest.mark.timeout(2400)  # prepares the corpus, trains on 2,000 examples, exports and evaluates: ~10 min
def test_the_demo_run_exports_to_int8_within_one_point(tmp_path):
    tunelab("data", "prepare", "example:sentiment", "--config", ROOT / "examples" / "sentiment.yaml",
            "--out", tmp_path / "prepared", cwd=tmp_path)
    tunelab("train", ROOT / "examples" / "sentiment.yaml", f"train.data={tmp_path / 'prepared'}",
            f"train.output_dir={tmp_path / 'run'}", "train.max_train_examples=2000", "train.epochs=1",
            "train.lr=1e-4",
            "train.tracking.backend=none", cwd=tmp_path, timeout=1200)
    proc = tunelab("export", tmp_path / "run", "--format", "onnx", "--int8", cwd=tmp_path, timeout=1200)
    assert "int8 ONNX classifier saved to" in proc.stdout
    export = tmp_path / "run" / "onnx-int8"
    checks = json.loads((export / "manifest.json").read_text())["checks"]
    assert checks["passed"] and checks["examples"] == 3248
    assert abs(checks["accuracy"]["delta"]) <= 0.01, checks
    assert checks["label_agreement"] >= 0.97
    assert checks["accuracy"]["pytorch"] > 0.5  # the run learnt something (three labels)

    shutil.rmtree(tmp_path / "run" / "eval", ignore_errors=True)
    tunelab("eval", export, "eval.resamples=200", "eval.latency.requests=8", "eval.latency.batch_sizes=[1,8]",
            "eval.robustness.max_examples=100", cwd=tmp_path, timeout=1200)
    report = json.loads((export / "eval" / "report.json").read_text())
    source = str((tmp_path / "run").resolve())
    assert report["export"]["int8"] is True and list(report["comparisons"]) == [source]
    delta = report["metrics"]["accuracy"] - report["baselines"][source]["accuracy"]
    assert delta == pytest.approx(checks["accuracy"]["delta"])  # eval and the export check count alike
