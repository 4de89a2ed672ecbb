"""`tunelab train` with `train.provider: openai` against a live `tunelab jobs serve` app on
127.0.0.1 (tiny Llama, real training in the server's worker process): the prepared split uploaded
as OpenAI's chat file, the job created with the mapped hyperparameters, Ctrl-C (no terminal)
detaching and printing how to follow, `--resume` following the same job to its end, the run
directory recording the job and its fine-tuned model; then `tunelab eval` of that run through the
server's endpoint shows the figures of the server's own run directory evaluated locally, beside a
run trained here with the same settings."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cli_helpers import ENV, TUNELAB, tunelab, write_jsonl
from tiny_models import make_task_examples

from jobs_helpers import jobs_config, jobs_server, openai_client

from tunelab.train.run_dir import RunDir

FAST = ["--resamples", "200", "eval.latency.requests=2", "eval.latency.batch_sizes=[1]",
        "eval.robustness.perturbations=[]", "eval.generation.max_new_tokens=10"]
COMPARED = ("exact_match", "token_f1", "chrf", "rougeL")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("remote-data")
    train = make_task_examples(40, seed=0)
    words = {r["messages"][0]["content"] for r in train}
    held_out = make_task_examples(20, seed=1, exclude=words)
    write_jsonl(root / "train.jsonl", train)
    write_jsonl(root / "val.jsonl", held_out[:8])
    write_jsonl(root / "test.jsonl", held_out[8:])
    return root


def wait_for_job(run_dir: Path, process) -> dict:
    """The job the run directory records once `tunelab train` has created it (the deadline only
    keeps a broken run from hanging the test)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        manifest = run_dir / "manifest.json"
        if manifest.is_file():
            return json.loads(manifest.read_text())["remote"]
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("no job was recorded")


@pytest.mark.slow
def test_provider_openai_trains_remotely_detaches_resumes_and_evaluates(tmp_path, data, tiny_base):
    cfg = jobs_config(tmp_path / "jobs", tiny_base)
    train_args = ["train", "--model", "tiny", "--data", data, "--output", tmp_path / "remote-run", "--epochs", "2",
                  "train.batch_size=4", "train.grad_accum=2", "train.provider=openai", "train.remote.poll_s=0.2"]
    with jobs_server(cfg) as server:
        url = f"{server.base_url}/v1"
        process = subprocess.Popen([TUNELAB, *map(str, train_args), f"train.remote.base_url={url}"],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, env=ENV, cwd=tmp_path)
        job_id = wait_for_job(tmp_path / "remote-run", process)["job_id"]
        process.send_signal(signal.SIGINT)  # no terminal: detach, say how to follow
        out, err = process.communicate(timeout=120)
        assert process.returncode == 130, err
        assert f"detached: job {job_id} keeps running at {url}" in out and "--resume" in out

        client = openai_client(server.base_url)
        job = client.fine_tuning.jobs.retrieve(job_id)
        assert job.status not in ("cancelled", "failed")  # detaching left it alone
        hyper = job.method.supervised.hyperparameters
        assert (hyper.n_epochs, hyper.batch_size, hyper.learning_rate_multiplier) == (2, 8, 1)  # lr auto: 1
        sent = tmp_path / "remote-run" / "remote" / "training_file.jsonl"
        assert client.files.content(job.training_file).read() == sent.read_bytes()
        assert json.loads(sent.read_text().splitlines()[0]).keys() == {"messages"}  # meta left out

        proc = tunelab(*train_args, f"train.remote.base_url={url}", "--resume", cwd=tmp_path)
        assert "trained (sft)" in proc.stdout
        run = RunDir(tmp_path / "remote-run")
        assert run.remote["job_id"] == job_id and run.remote["status"] == "succeeded"
        assert run.endpoint == f"endpoint:{url}#ft:tiny:remote-run:{job_id}"
        rows = [json.loads(line) for line in (tmp_path / "remote-run" / "metrics.jsonl").open()]
        assert any("loss" in r for r in rows) and any("eval_loss" in r for r in rows)

        tunelab("train", "--model", tiny_base, "--data", data, "--output", tmp_path / "local-run", "--epochs", "2",
                "train.batch_size=8", "train.max_length=64", "train.tracking.backend=none", cwd=tmp_path)
        tunelab("eval", tmp_path / "remote-run", "--baseline", tmp_path / "local-run", "--baseline", "base",
                "--out", tmp_path / "eval",
                *FAST, cwd=tmp_path)
        server_run = Path(cfg.jobs_dir) / "jobs" / job_id / "run"
        tunelab("eval", server_run, "--data", data, "--out", tmp_path / "eval-server-run", *FAST, cwd=tmp_path)
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    local_eval = json.loads((tmp_path / "eval-server-run" / "report.json").read_text())
    assert report["model"] == run.endpoint and report["metrics"]["examples"] == 12
    for metric in COMPARED:  # the served fine-tune answers as its weights do here
        assert report["metrics"][metric] == pytest.approx(local_eval["metrics"][metric], abs=1e-12), metric
    answers = [json.loads(line)["prediction"] for line in (tmp_path / "eval" / "predictions.jsonl").open()]
    assert answers == [json.loads(line)["prediction"] for line in (tmp_path / "eval-server-run" / "predictions.jsonl").open()]
    local = report["baselines"][str(tmp_path / "local-run")]
    assert set(report["comparisons"]) == {str(tmp_path / "local-run"), "base"} and local["perplexity"] > 1
    assert report["baselines"]["base"]["source"] == f"endpoint:{url}#tiny"  # the base, as the server serves it
    assert report["overfitting"] is not None  # the job's loss curves, from its metrics events
    print({"remote": {m: report["metrics"][m] for m in COMPARED}, "local": {m: local[m] for m in COMPARED}})


@pytest.mark.slow
def test_provider_openai_sends_preference_data_as_a_dpo_job(tmp_path, tiny_base):
    """Preference records go as OpenAI's DPO lines, which the server's data stage accepts, with
    train.dpo.beta as the job's beta."""
    rows = [{"prompt": [r["messages"][0]], "chosen": r["messages"][1]["content"],
             "rejected": r["messages"][0]["content"]} for r in make_task_examples(30, seed=2)]
    write_jsonl(tmp_path / "data" / "train.jsonl", rows[:24])
    write_jsonl(tmp_path / "data" / "val.jsonl", rows[24:])
    with jobs_server(jobs_config(tmp_path / "jobs", tiny_base)) as server:
        url = f"{server.base_url}/v1"
        tunelab("train", "--model", "tiny", "--data", tmp_path / "data", "--output", tmp_path / "dpo-run", "--epochs", "1",
                "train.batch_size=4", "train.dpo.beta=0.3", "train.provider=openai", f"train.remote.base_url={url}",
                "train.remote.poll_s=0.2", cwd=tmp_path)
        run = RunDir(tmp_path / "dpo-run")
        job = openai_client(server.base_url).fine_tuning.jobs.retrieve(run.remote["job_id"])
    assert run.task == "dpo" and job.status == "succeeded" and job.method.type == "dpo"
    assert job.method.dpo.hyperparameters.beta == 0.3
    line = json.loads((tmp_path / "dpo-run" / "remote" / "training_file.jsonl").read_text().splitlines()[0])
    assert set(line) == {"input", "preferred_output", "non_preferred_output"}
