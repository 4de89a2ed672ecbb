"""Helpers of the jobs-server tests: OpenAI-format training files, a tiny base model, a jobs
server on a free loopback port (in this process, or `tunelab jobs serve` as a subprocess), an
executor that plays a training process (for the worker's own logic, without training), and the
one wait-until-status.

Its fixture (`tiny_base`) reaches every test through tests/conftest.py's `pytest_plugins`; test
modules import the plain helpers they use by name (`from jobs_helpers import jobs_server`)."""
from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from serve_helpers import LiveServer, free_port, wait_ready


def chat_lines(n: int, seed: int = 0) -> list[dict]:
    """OpenAI chat-format lines of the tests' reverse-a-word task."""
    from tiny_models import make_task_examples
    return make_task_examples(n, seed=seed)


def dpo_lines(n: int, seed: int = 0) -> list[dict]:
    """OpenAI DPO lines: the reversed word preferred, the word itself not."""
    return [{"input": {"messages": [r["messages"][0]]},
             "preferred_output": [r["messages"][1]],
             "non_preferred_output": [{"role": "assistant", "content": r["messages"][0]["content"]}]}
            for r in chat_lines(n, seed)]


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """The tiny Llama jobs fine-tune (char-level chat tokenizer, untied head)."""
    from tiny_models import build_task_tokenizer, build_tiny_llama
    out = tmp_path_factory.mktemp("jobs-base")
    return build_tiny_llama(out, build_task_tokenizer(out), hidden=32, layers=2, heads=4, max_positions=128, seed=0,
                            tied=False)


def jobs_config(jobs_dir: Path, base: Path | None, **overrides):
    from tunelab.config import JobsConfig
    values = {"jobs_dir": str(jobs_dir), "models": {"tiny": str(base)} if base else {}, "poll_s": 0.1,
              "evaluate": False, "overrides": ["train.max_length=64"], **overrides}
    return JobsConfig(**values)


@contextmanager
def jobs_server(cfg, executor=None):
    """The jobs app on 127.0.0.1 in this process (a uvicorn thread); `executor` replaces the
    configured one. Stopping it is a graceful server shutdown."""
    from tunelab.jobs.app import create_jobs_app
    app = create_jobs_app(cfg)
    if executor is not None:
        app.state.worker.executor = executor
    server = LiveServer(app).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def jobs_cli_server(jobs_dir: Path, *args: str, timeout: float = 120):
    """`tunelab jobs serve` as a user starts it, on a free port; yields its base URL."""
    from cli_helpers import ENV, TUNELAB
    port = free_port()
    log = Path(jobs_dir).parent / "server.log"  # a file, not a pipe nobody reads, which would fill and block it
    with log.open("w") as out:
        process = subprocess.Popen([TUNELAB, "jobs", "serve", "--port", str(port), "--jobs-dir", str(jobs_dir), *args],
                                   stdout=out, stderr=subprocess.STDOUT, text=True, env=ENV)
    base_url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_ready(base_url, process, timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log.read_text()}") from None
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def openai_client(base_url: str, key: str = "unused"):
    import openai
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)


def wait_status(client, job_id: str, *statuses: str, guard_s: float = 600):
    """Poll the job until its status is one of `statuses`; the deadline only keeps a broken server
    from hanging the run. Returns the job."""
    deadline = time.monotonic() + guard_s
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        assert job.status not in ("failed", "cancelled", "succeeded") or job.status in statuses, \
            f"job ended {job.status}: {job.error}"
        assert time.monotonic() < deadline, f"job {job_id} stayed {job.status}"
        time.sleep(0.1)


# A stand-in for `tunelab train`: writes metrics.jsonl rows and complete checkpoints into the
# job's run directory, one step every 0.05 s, then exits with the code asked for; Ctrl-C (SIGINT)
# saves a checkpoint of the last finished step and exits 130
FAKE_TRAINER = r"""
import json, os, sys, time
run, steps, code, resume = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[5] == "resume"
os.makedirs(os.path.join(run, "checkpoints"), exist_ok=True)
def checkpoint(step):
    ckpt = os.path.join(run, "checkpoints", f"checkpoint-{step}")
    os.makedirs(ckpt, exist_ok=True)
    open(os.path.join(ckpt, "tunelab-complete.json"), "w").write("{}")
def last_checkpoint():
    found = [int(name.rsplit("-", 1)[1]) for name in os.listdir(os.path.join(run, "checkpoints"))
             if os.path.isfile(os.path.join(run, "checkpoints", name, "tunelab-complete.json"))]
    return max(found, default=0)
done = last_checkpoint() if resume else 0  # the last step finished; a resumed run goes on from its checkpoint
try:
  for step in range(done + 1, done + steps + 1):
    time.sleep(0.05)
    with open(os.path.join(run, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"step": step, "time": time.time(), "loss": 1.0 / step, "mean_token_accuracy": 0.1 * step,
                            "num_input_tokens_seen": 10 * step}) + "\n")
    done = step
    if step % 2 == 0:
        checkpoint(step)
except KeyboardInterrupt:  # as tunelab train: a checkpoint of the last finished step, exit 130
    checkpoint(done)
    sys.exit(130)
sys.exit(code)
"""


class FakeTrainerExecutor:
    """Runs FAKE_TRAINER in place of each command (a real process of its own, so stopping and
    killing it are real; resumed, it goes on from its last complete checkpoint as `tunelab train
    --resume` does); `steps` and `exit_code` per call, the argv it was given recorded."""

    def __init__(self, steps: int = 6, exit_code: int = 0):
        from tunelab.jobs.executor import LocalProcessExecutor
        self.local = LocalProcessExecutor(grace_s=5)
        self.steps, self.exit_code = steps, exit_code
        self.started: list[tuple[str, list[str]]] = []

    def start(self, job_id, argv, *, cwd, log_path, env, resources):
        self.started.append((job_id, list(argv)))
        run = Path(cwd) / "run"
        resume = "resume" if argv[-1] == "train.resume=true" else "fresh"
        return self.local.start(job_id, [sys.executable, "-c", FAKE_TRAINER, str(run), str(self.steps),
                                         str(self.exit_code), job_id, resume],
                                cwd=cwd, log_path=log_path, env=env, resources=resources)
