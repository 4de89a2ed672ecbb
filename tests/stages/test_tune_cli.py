"""`tunelab tune` end to end, as a user runs it: a tiny BERT classifier, a search over lr and
epochs, each trial a run directory scored by the eval stage on the validation split; results
table, JSON and CSV; resume of the same SQLite study; two processes sharing one study; bad
search spaces refused in one sentence with nothing written."""
import json
import random
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from cli_helpers import ENV, TUNELAB, tunelab, write_jsonl

POSITIVE = "good great fine lovely nice superb happy".split()
NEGATIVE = "bad awful poor sad ugly terrible angry".split()
FILLER = "the a this that movie day food service it was is very so".split()


def records(n, seed):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["neg", "pos"])
        words = rng.sample(FILLER, 4) + [rng.choice(POSITIVE if label == "pos" else NEGATIVE)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
    root = tmp_path_factory.mktemp("tune")
    tokenizer = AutoTokenizer.from_pretrained(Path(__file__).parents[1] / "assets" / "tiny-chat-tokenizer")
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    for split, n, seed in (("train", 160, 0), ("val", 60, 1), ("test", 60, 2)):
        write_jsonl(root / "prepared" / f"{split}.jsonl", records(n, seed))
    config_file = root / "tune.yaml"
    config_file.write_text(yaml.safe_dump({
        "train": {"model": str(root / "base"), "data": str(root / "prepared"), "method": "full", "batch_size": 16,
                  "max_length": 16, "tracking": {"backend": "none"}, "early_stopping_patience": None},
        "eval": {"resamples": 100, "latency": {"batch_sizes": [1], "requests": 2}},
        "tune": {"space": {"lr": {"low": 1e-4, "high": 3e-3, "log": True}, "epochs": {"low": 1, "high": 3}},
                 "pruner": "none", "heartbeat_s": 5}}))
    return root, config_file


@pytest.mark.slow
def test_search_writes_trials_results_and_resumes_the_same_study(project):
    root, config = project
    out = root / "search"
    first = tunelab("tune", config, "--trials", 3, "--out", out)
    assert "best: trial" in first.stdout and "macro_f1" in first.stdout
    results = json.loads((out / "results.json").read_text())
    assert [t["state"] for t in results["trials"]] == ["complete"] * 3
    assert results["metric"] == "macro_f1" and results["direction"] == "maximize"
    for trial in results["trials"]:
        assert trial["run_dir"].endswith(f"trial-{trial['number']:04d}")
        assert (out / f"trial-{trial['number']:04d}" / "manifest.json").is_file()
        report = json.loads((out / f"trial-{trial['number']:04d}" / "eval" / "report.json").read_text())
        assert report["data"].endswith("val.jsonl")  # scored on validation, never test
        assert trial["value"] == pytest.approx(report["metrics"]["macro_f1"])
    best = max(results["trials"], key=lambda t: t["value"])
    assert results["best"]["number"] == best["number"]
    assert len((out / "results.csv").read_text().splitlines()) == 4

    again = tunelab("tune", config, "--trials", 3, "--out", out, check=False)
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr

    tunelab("tune", config, "--trials", 5, "--out", out, "--resume")
    resumed = json.loads((out / "results.json").read_text())
    assert [t["number"] for t in resumed["trials"]] == [0, 1, 2, 3, 4]
    assert resumed["trials"][:3] == results["trials"]  # the first three were not run again


@pytest.mark.slow
def test_two_processes_share_one_study(project):
    root, config = project
    out = root / "shared"
    storage = f"sqlite:///{root / 'shared.db'}"
    tunelab("tune", config, "--trials", 1, "--out", out, "--storage", storage, "tune.study=shared")

    def worker(_):
        return subprocess.run([TUNELAB, "tune", str(config), "--trials", "5", "--out", str(out), "--storage", storage,
                               "tune.study=shared", "--resume"], capture_output=True, text=True, env=ENV, timeout=400)

    with ThreadPoolExecutor(2) as pool:
        procs = list(pool.map(worker, range(2)))
    assert all(p.returncode == 0 for p in procs), [p.stderr[-2000:] for p in procs]
    trials = json.loads((out / "results.json").read_text())["trials"]
    finished = [t for t in trials if t["state"] == "complete"]
    assert len(finished) >= 5  # each worker stops once the study has 5 (one may finish a trial in flight)
    assert len({t["worker"] for t in finished[1:]}) == 2  # both processes ran trials of the one study
    assert len({t["run_dir"] for t in trials}) == len(trials)


@pytest.mark.parametrize("space,expected", [
    ({"lr": {"low": 1e-3, "high": 1e-5}}, "low 0.001 is above high 1e-05"),
    ({"lr": {"low": 0, "high": 1e-3, "log": True}}, "log scale needs low above 0"),
    ({"learning_rate": {"low": 1e-5, "high": 1e-3}}, "unknown parameter(s) learning_rate"),
    ({"warmup": {"low": 0.0, "high": 1.5}}, "tune.space.warmup can give 1.5"),
    ({"epochs": {"choices": []}}, "non-empty choices"),
])
def test_an_impossible_search_space_is_refused_with_nothing_written(project, tmp_path, space, expected):
    root, config = project
    raw = yaml.safe_load(config.read_text())
    raw["tune"]["space"] = space
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    proc = tunelab("tune", bad, "--trials", 2, "--out", tmp_path / "out", check=False)
    message = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and expected in message and "Traceback" not in proc.stderr
    assert message.count("error:") == 1
    assert not (tmp_path / "out").exists()
