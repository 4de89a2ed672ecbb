"""The whole loop, through the CLI on 127.0.0.1, on the embedded sentiment corpus with a real
shift: the live model is trained on the corpus' tweets about everything but airlines; traffic then
comes from the airline tweets it never saw. Serve it, send that traffic, `monitor` flags the
shift, `label select` picks from the log, a simulated annotator (the corpus' own labels) labels
the batch in a Label Studio export, `label import` reads it back, `retrain` builds a candidate
that the gate shows better on the new slice and not worse by more than 1 point of macro-F1 on
the old test split and puts it in shadow; more airline traffic, with the annotator's feedback
posted to /v1/feedback; `models compare` judges the shadow against the live model from the log,
and `models promote` makes it live on the running server. One YAML config (loop.yaml) for all."""
from __future__ import annotations

import asyncio
import csv
import json
import random
import subprocess
import time
from pathlib import Path

import httpx2
import pytest
import yaml
from cli_helpers import ENV, TUNELAB, tunelab, write_jsonl
from serve_helpers import free_port, wait_ready, wait_until

from tunelab.examples import example_data_path

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]
AIRLINES = ("@united", "@americanair", "@usairways", "@jetblue", "@southwestair", "@virginamerica")
OLD, FIRST_TRAFFIC, SECOND_TRAFFIC, SELECTED = 1500, 400, 300, 300
CONFIG = {
    "data": {"format": "classification", "labels": ["negative", "neutral", "positive"],
             "split": {"val": 0.1, "test": 0.2, "seed": 0}},
    "train": {"model": "default", "data": "prepared", "output_dir": "live", "method": "full", "epochs": 1,
              "lr": 5.0e-5, "batch_size": 32, "eval_batch_size": 128, "max_length": 48, "warmup": 0.06,
              "tracking": {"backend": "none"}},
    "eval": {"resamples": 300, "robustness": {"perturbations": []}, "latency": {"batch_sizes": [1], "requests": 4}},
    # a shadow queue that holds every copy of the traffic: the shadow catches up after the burst
    "serve": {"registry": "registry.json", "prediction_log": "predictions.db", "registry_poll_s": 0.2,
              "cache_size": 0, "shadow_max_queue": 2000},
    "monitor": {"prediction_log": "predictions.db", "reference": "prepared", "window": FIRST_TRAFFIC},
    "retrain": {"registry": "registry.json", "replay": 1.0, "deploy": "shadow", "out_dir": "round1",
                "train": {"epochs": 1}},
}


def corpus_slices(seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(the tweets not about airlines, the airline tweets), each {"text", "label"}, distinct, shuffled."""
    path, encoding = example_data_path("sentiment")
    with open(path, encoding=encoding, newline="") as f:
        rows = list(csv.DictReader(f))
    seen, old, new = set(), [], []
    for row in rows:
        text = " ".join(row["text"].split())
        if not text or text.lower() in seen:
            continue
        seen.add(text.lower())
        (new if any(a in text.lower() for a in AIRLINES) else old).append({"text": text, "label": row["sentiment"]})
    rng = random.Random(seed)
    rng.shuffle(old)
    rng.shuffle(new)
    return old, new


async def classify_all(base: str, texts: list[str], labels: dict[str, str] | None = None) -> list[dict]:
    """Classify each text (8 clients); with `labels`, post the annotator's label for each answer to
    /v1/feedback as soon as it arrives."""
    answers: list[dict] = [{}] * len(texts)
    pending = list(enumerate(texts))[::-1]
    async with httpx2.AsyncClient(base_url=base, timeout=120) as client:
        async def worker() -> None:
            while pending:
                i, text = pending.pop()
                response = await client.post("/v1/classify", json={"text": text})
                assert response.status_code == 200, response.text
                answers[i] = response.json()
                if labels is not None:
                    stored = await client.post("/v1/feedback", json={"id": answers[i]["id"], "label": labels[text],
                                                                     "annotator": "corpus"})
                    assert stored.status_code == 200, stored.text

        await asyncio.gather(*(worker() for _ in range(8)))
    return answers


def shadow_copies(base: str, probe: str | None = None) -> float:
    """Copies the shadow has answered (the server's /metrics), after classifying `probe` if given."""
    if probe is not None:
        asyncio.run(classify_all(base, [probe]))
        time.sleep(0.5)
    for line in httpx2.get(f"{base}/metrics", timeout=30).text.splitlines():
        if line.startswith('tunelab_shadow_requests_total{outcome="answered"}'):
            return float(line.split()[1])
    return 0.0


def annotate(tasks_file: Path, truth: dict[str, str], out: Path) -> int:
    """The simulated annotator: Label Studio's JSON export of the tasks, each answered with the
    corpus' label (a text the corpus does not hold as logged, e.g. redacted, is left unannotated)."""
    tasks = json.loads(tasks_file.read_text())
    answered = 0
    for task in tasks:
        label = truth.get(task["data"]["text"])
        task["annotations"] = [] if label is None else [
            {"id": task["id"], "completed_by": {"id": 1, "email": "annotator@example.com"}, "was_cancelled": False,
             "result": [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]}]
        answered += label is not None
    out.write_text(json.dumps(tasks))
    return answered


def test_the_whole_loop_on_a_real_shift(tmp_path):
    old, new = corpus_slices()
    truth = {r["text"]: r["label"] for r in new}
    first, second = new[:FIRST_TRAFFIC], new[FIRST_TRAFFIC:FIRST_TRAFFIC + SECOND_TRAFFIC]
    (tmp_path / "loop.yaml").write_text(yaml.safe_dump(CONFIG))
    write_jsonl(tmp_path / "old.jsonl", old[:OLD])
    tunelab("data", "prepare", "old.jsonl", "--config", "loop.yaml", "--out", "prepared", "--quiet", cwd=tmp_path)
    tunelab("train", "loop.yaml", cwd=tmp_path, timeout=1200)
    tunelab("models", "register", "live", cwd=tmp_path)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # its log to a file: a pipe nobody reads fills up and blocks the server's next log line
    server = subprocess.Popen([TUNELAB, "serve", "loop.yaml", "--port", str(port)], cwd=tmp_path, env=ENV,
                              stdout=(tmp_path / "serve.log").open("w"), stderr=subprocess.STDOUT, text=True)
    try:
        wait_ready(base, server, timeout=300)
        answers = asyncio.run(classify_all(base, [r["text"] for r in first]))
        assert {a["model_version"] for a in answers} == {"v1"}

        # the monitor flags the shift
        monitor = tunelab("monitor", "loop.yaml", "--fail-on-drift", cwd=tmp_path, check=False)
        assert monitor.returncode == 1, monitor.stdout + monitor.stderr
        assert "drift: " in monitor.stdout and "content" in monitor.stdout.split("drift: ")[1].splitlines()[0]

        # label select picks from the log; the annotator labels the batch through Label Studio files
        tunelab("label", "select", "loop.yaml", "--run", "live", "--log", "predictions.db", "--k", SELECTED,
                "--out", "batch.jsonl", cwd=tmp_path)
        tunelab("label", "export", "batch.jsonl", "--format", "label-studio", "--out", "tasks.json", cwd=tmp_path)
        annotated = annotate(tmp_path / "tasks.json", truth, tmp_path / "export.json")
        assert annotated >= 0.9 * SELECTED
        imported = tunelab("label", "import", "export.json", "--out", "labelled", cwd=tmp_path)
        assert f"records: classification {annotated}" in imported.stdout

        # retrain: better on the new slice, not worse by more than 1 point on the old test split; in shadow
        retrain = tunelab("retrain", "labelled/classification.jsonl", "loop.yaml", cwd=tmp_path, check=False,
                          timeout=1200)
        print(retrain.stdout)
        assert retrain.returncode == 0, retrain.stdout + retrain.stderr
        summary = json.loads((tmp_path / "round1" / "summary.json").read_text())
        old_scores, new_scores = summary["eval_old"], summary["eval_new"]
        assert old_scores["candidate"] >= old_scores["live"] - 0.01 and new_scores["candidate"] > new_scores["live"]
        assert summary["registry"]["shadow"] == "v2" and "v2 is the shadow" in retrain.stdout

        # the shadow answers copies of the next traffic, on which the annotator gives feedback
        probes = iter(r["text"] for r in new[FIRST_TRAFFIC + SECOND_TRAFFIC:])
        wait_until(lambda: shadow_copies(base, probe=next(probes)) > 0, "the server took up the shadow", 120)
        answers = asyncio.run(classify_all(base, [r["text"] for r in second], truth))
        assert {a["model_version"] for a in answers} == {"v1"}  # the shadow never answers a client
        wait_until(lambda: shadow_copies(base) >= len(second) + 1, "the shadow answered every copy", 300)

        compare = tunelab("models", "compare", "--out", "compare.json", cwd=tmp_path)
        print(compare.stdout)
        result = json.loads((tmp_path / "compare.json").read_text())
        assert result["role"] == "shadow" and result["candidate"]["version"] == "v2"
        assert result["agreement"]["pairs"] >= len(second) + 1
        assert result["quality"]["labelled"] == len(second) and result["quality"]["paired"]
        assert result["quality"]["candidate"] > result["quality"]["live"]
        assert result["recommendation"]["action"] == "promote", result["recommendation"]

        tunelab("models", "promote", "v2", cwd=tmp_path)
        wait_until(lambda: httpx2.get(f"{base}/health").json()["model_version"] == "v2", "v2 is served", 300)
        after = asyncio.run(classify_all(base, [second[1]["text"]]))
        assert after[0]["model_version"] == "v2"
        assert "shadow" not in tunelab("models", "list", cwd=tmp_path).stdout.split("live: ")[1]
    finally:
        server.terminate()
        server.wait(timeout=60)
