"""`tunelab eval` end to end on a classification run, as a user runs it: the console command on a
tiny BERT classifier trained here by `tunelab train`, against the probe and base baselines, on
test records that carry fairness groups. Checks report.json's stable keys and sections, the
HTML/Markdown reports, determinism (two runs, same numbers) and the --gate exit codes."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml
from cli_helpers import tunelab, write_jsonl

TOKENIZER = Path(__file__).resolve().parents[1] / "assets" / "tiny-chat-tokenizer"
# words that decide the label, so a few dozen steps learn something the untrained head cannot
CUES = {"negative": ["awful", "broken", "refund"], "neutral": ["okay", "arrived", "average"],
        "positive": ["great", "lovely", "perfect"]}
FAST = ["eval.resamples=200", "eval.latency.requests=8", "eval.latency.batch_sizes=[1,8]",
        "eval.robustness.max_examples=60"]
# the explanation section on 40 test predictions; texts are three words, so the deletion test removes one
EXPLAIN = ["eval.explain.examples=40", "eval.explain.errors=3", "eval.explain.deletion_tokens=1"]


def records(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = rng.choice(sorted(CUES))
        words = [rng.choice(CUES[label]), rng.choice(["the", "order", "was", "item", "service"]), str(i % 7)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label, "meta": {"group": "web" if i % 2 else "phone"}})
    return rows


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel
    root = tmp_path_factory.mktemp("eval-cli")
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    write_jsonl(root / "data" / "train.jsonl", records(240, seed=0))
    write_jsonl(root / "data" / "val.jsonl", records(40, seed=1))
    write_jsonl(root / "data" / "test.jsonl", records(120, seed=2))
    tunelab("train", "--model", root / "base", "--data", root / "data", "--method", "full", "--task",
            "classification", "--output", root / "run", "--epochs", "10", "--lr", "1e-3", "train.batch_size=16",
            "train.max_length=32", "train.tracking.backend=none", "train.logging_steps=5", cwd=root)
    return root


@pytest.fixture(scope="module")
def report(workspace) -> dict:
    proc = tunelab("eval", workspace / "run", "--data", workspace / "data", "--baseline", "probe", "--baseline",
                   "base", "--out", workspace / "eval", *FAST, *EXPLAIN, cwd=workspace)
    assert "vs probe" in proc.stdout and "vs base" in proc.stdout
    assert "Loading weights" not in proc.stderr  # tunelab's progress lines, not a bar per model load
    return json.loads((workspace / "eval" / "report.json").read_text())


def test_report_compares_tuned_with_each_baseline_with_intervals(report):
    assert report["task"] == "classification"
    for key in ("accuracy", "macro_f1", "mcc", "ece", "brier", "per_class", "confusion_matrix"):
        assert key in report["metrics"]
    assert set(report["baselines"]) == set(report["comparisons"]) == {"probe", "base"}
    for metric in ("accuracy", "macro_f1", "mcc"):
        base = report["comparisons"]["base"][metric]
        assert base["ci_low"] <= base["difference"] <= base["ci_high"]
    # the cue words are learnable: the tuned model beats its untrained head
    assert report["comparisons"]["base"]["macro_f1"]["verdict"] == "better"
    assert report["metrics"]["macro_f1"] > 0.5  # chance is 1/3


def test_report_has_every_production_readiness_section(report):
    assert len(report["calibration"]["bins"]) == 15
    assert set(report["fairness"]["groups"]) == {"web", "phone"}
    assert set(report["slices"]["group"]) == {"web", "phone"}
    assert set(report["robustness"]["perturbations"]) == {"typos", "casing", "whitespace", "punctuation"}
    assert report["robustness"]["examples"] == 60
    assert set(report["latency"]["by_batch_size"]) == {"1", "8"}
    assert report["latency"]["baseline"]["system"] == "base"  # the served alternative, timed the same way
    assert report["kpi"]["latency"]["p50_ratio"]["value"] > 0
    assert report["overfitting"]["curves"]["eval"]
    assert report["kpi"]["quality"]
    assert report["device"].startswith("cpu")
    assert report["gate"] is None


def test_reports_are_written_for_people_too(report, workspace):
    html = (workspace / "eval" / "report.html").read_text()
    markdown = (workspace / "eval" / "report.md").read_text()
    assert report["verdict"] in markdown
    assert html.count("<svg") >= 4


def test_explanation_section_finds_the_cue_words_and_measures_faithfulness(report, workspace):
    explained = report["explanations"]
    assert (explained["method"], explained["examples"], explained["unit"]) == ("integrated_gradients", 40, "word")
    assert explained["precision"] in ("fp32", "bf16")  # auto resolved to what this machine computes natively
    # the words that decide each label are among the three that push hardest towards it
    for label, cues in CUES.items():
        top = [row["token"] for row in explained["by_class"][label][:3]]
        assert set(top) & set(cues), (label, explained["by_class"][label])
    faithfulness = explained["faithfulness"]
    print(f"\ndeletion test on {faithfulness['examples']} texts: top word {faithfulness['top_k_drop']:.3f}, "
          f"random word {faithfulness['random_drop']:.3f}; integration error {explained['integration_error']:.3f}")
    assert faithfulness["examples"] == 40 and faithfulness["top_k_drop"] > 2 * faithfulness["random_drop"]
    assert not any(flag.startswith("explanations") for flag in report["flags"])
    for error in explained["errors"]:
        assert error["label"] != error["predicted"]
        assert all(error["text"][s["start"]:s["end"]] == s["token"] for s in error["explanation"])
    html = (workspace / "eval" / "report.html").read_text()
    markdown = (workspace / "eval" / "report.md").read_text()
    assert '<section id="explanations">' in html and "Deletion test" in markdown
    assert html.count("<mark ") == sum(len(error["explanation"]) for error in explained["errors"])


def test_two_runs_give_identical_numbers(report, workspace):
    tunelab("eval", workspace / "run", "--data", workspace / "data", "--baseline", "probe", "--baseline", "base",
            "--out", workspace / "eval-again", "--quiet", *FAST, *EXPLAIN, cwd=workspace)
    again = json.loads((workspace / "eval-again" / "report.json").read_text())
    measured = ("latency", "timing_s", "kpi")  # wall-clock figures differ between runs by nature
    assert {k: v for k, v in again.items() if k not in measured} == {k: v for k, v in report.items() if k not in measured}


def test_gate_fails_the_command_when_a_threshold_fails(workspace, report):
    config = workspace / "gate.yaml"
    config.write_text(yaml.safe_dump({"eval": {"gate": {"min": {"macro_f1": 0.99, "accuracy": 0.5},
                                                        "better_than": ["base"]}}}))
    failed = tunelab("eval", workspace / "run", config, "--data", workspace / "data", "--baseline", "base",
                     "--out", workspace / "gated", "--gate", "--quiet", *FAST, cwd=workspace, check=False)
    assert failed.returncode == 1, failed.stderr
    assert "gate: FAILED" in failed.stdout
    checks = json.loads((workspace / "gated" / "report.json").read_text())["gate"]["checks"]
    assert {(c["metric"], c["op"], c["passed"]) for c in checks} == {
        ("macro_f1", ">=", False), ("accuracy", ">=", True), ("macro_f1", "better than", True)}

    passed = tunelab("eval", workspace / "run", config, "eval.gate.min.macro_f1=0.5", "--data", workspace / "data",
                     "--baseline", "base", "--out", workspace / "gated", "--gate", "--quiet", *FAST, cwd=workspace,
                     check=False)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "gate: passed" in passed.stdout


def test_unusable_input_is_one_sentence_and_exit_2(workspace):
    missing = tunelab("eval", workspace / "run", "--data", workspace / "nowhere.jsonl", cwd=workspace, check=False)
    assert missing.returncode == 2 and "test data not found" in missing.stderr and "Traceback" not in missing.stderr
    bad = write_jsonl(workspace / "bad.jsonl", [{"prompt": "x", "completion": "y"}])
    wrong = tunelab("eval", workspace / "run", "--data", bad, cwd=workspace, check=False)
    assert wrong.returncode == 2 and "classification records" in wrong.stderr and "Traceback" not in wrong.stderr


def test_without_data_the_test_split_beside_the_training_data_is_used(workspace):
    tunelab("eval", workspace / "run", "--out", workspace / "default-data", "--quiet", *FAST, cwd=workspace)
    report = json.loads((workspace / "default-data" / "report.json").read_text())
    assert report["data"] == str(workspace / "data") and report["metrics"]["examples"] == 120
    bare = tunelab("eval", workspace / "base", cwd=workspace, check=False)  # a model directory, no run
    assert bare.returncode == 2 and "pass --data" in bare.stderr and "Traceback" not in bare.stderr
