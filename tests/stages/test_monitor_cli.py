"""`tunelab monitor` end to end, run as a user runs it (the console command in a subprocess) on
a prediction log written by the server's PredictionLog: exit codes, printed summary, report
files, and a rollback that moves the registry's live version."""
from __future__ import annotations

import json
import random
from pathlib import Path

import yaml
from cli_helpers import tunelab as run_tunelab

from tunelab.serve.predlog import PredictionLog
from tunelab.serve.registry import Registry

WORDS = "good bad service slow quick refund staff price late friendly helpful broken".split()


def tunelab(*args, cwd):
    """`tunelab monitor ARGS...`, whatever its exit code."""
    return run_tunelab("monitor", *args, cwd=cwd, check=False, timeout=120)


def text(rng, low, high):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def prepared(directory: Path) -> Path:
    rng = random.Random(0)
    directory.mkdir(parents=True)
    rows = [{"text": text(rng, 4, 12), "label": rng.choice(["pos", "neg"])} for _ in range(200)]
    (directory / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return directory


def run_dir(path: Path, data: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"train": {"data": str(data)}}))
    return path


def write_log(path: Path, n: int, *, version: str, long_inputs: bool = False, seed: int = 1) -> Path:
    rng = random.Random(seed)
    with PredictionLog(path, retention_days=None) as log:
        for i in range(n):
            label = rng.choice(["pos", "neg"])
            log.log({"ts": 1_700_000_000 + i, "endpoint": "/v1/classify", "model_version": version,
                     "input": text(rng, 40, 80) if long_inputs else text(rng, 4, 12), "output": label,
                     "label": label, "confidence": 0.9, "status": 200, "latency_ms": 3.0})
    return path


def test_stable_traffic_exits_0_and_writes_the_report(tmp_path):
    data = prepared(tmp_path / "prepared")
    write_log(tmp_path / "predictions.db", 150, version="v1")
    proc = tunelab("--reference", data, "--window", 100, "--fail-on-drift", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "drift: none found" in proc.stdout and "100 predictions" in proc.stdout
    report = json.loads((tmp_path / "monitor" / "report.json").read_text())
    assert report["drifted"] is False and report["window"]["predictions"] == 100
    assert (tmp_path / "monitor" / "report.md").is_file() and (tmp_path / "monitor" / "report.html").is_file()


def test_drift_with_rollback_and_fail_on_drift(tmp_path):
    data = prepared(tmp_path / "prepared")
    registry = Registry(tmp_path / "models.json")
    registry.register(run_dir(tmp_path / "runs" / "a", data))
    second = registry.register(run_dir(tmp_path / "runs" / "b", data))
    registry.promote(second["version"])
    write_log(tmp_path / "traffic.db", 120, version=second["version"], long_inputs=True)
    config = tmp_path / "monitor.yaml"
    config.write_text(yaml.safe_dump({"monitor": {"window": 100, "registry": "models.json"}}))
    proc = tunelab(config, "--log", "traffic.db", "--rollback", "--out", "drift", "--fail-on-drift", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "drift: input_chars, input_words" in proc.stdout
    assert "alert: The input length in characters drifted" in proc.stdout
    assert "rollback: v2 -> v1" in proc.stdout
    assert registry.live()["version"] == "v1"
    report = json.loads((tmp_path / "drift" / "report.json").read_text())
    assert report["rollback"]["to"] == "v1" and str(tmp_path / "runs" / "b") in report["reference"]["source"]


def test_a_few_requests_are_reported_as_too_few(tmp_path):
    data = prepared(tmp_path / "prepared")
    write_log(tmp_path / "predictions.db", 3, version="v1")
    proc = tunelab("--reference", data, "--fail-on-drift", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "note: Only 3 predictions in the window" in proc.stdout and "drift: none found" in proc.stdout


def test_unusable_input_exits_2_with_one_sentence(tmp_path):
    proc = tunelab("--log", "missing.db", cwd=tmp_path)
    assert proc.returncode == 2
    assert "missing.db: prediction log not found" in proc.stderr and "Traceback" not in proc.stderr
    PredictionLog(tmp_path / "empty.db").close()
    proc = tunelab("--log", "empty.db", "--reference", prepared(tmp_path / "prepared"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "empty.db: the prediction log holds no predictions" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "monitor").exists()
