"""`jobs.executor: ray`: jobs sent by RayExecutor to a local Ray head on 127.0.0.1 (joined by
address, as a server joins a cluster) run their command line on a worker, write their log, and
give back their exit code; terminate stops them and their process; bad addresses and a missing
Ray are one sentence each."""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tunelab.errors import TunelabError
from tunelab.jobs import ray_executor
from tunelab.jobs.progress import failure_reason
from tunelab.jobs.ray_executor import CANCELLED, LOST, RayExecutor

PRINT_PID_THEN_SLEEP = "import os, time; print('pid', os.getpid(), flush=True); time.sleep(600)"
IGNORE_SIGTERM = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); "


@pytest.fixture(scope="module")
def executor(ray_head):
    import ray
    yield RayExecutor(ray_head)
    ray.shutdown()


def finish(execution, limit: float = 120) -> int:
    deadline = time.monotonic() + limit
    while (code := execution.poll()) is None:
        assert time.monotonic() < deadline, "the job never finished"
        time.sleep(0.2)
    return code


def started_pid(log: Path, limit: float = 120) -> int:
    deadline = time.monotonic() + limit
    while not (log.is_file() and log.read_text().startswith("pid ")):
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.2)
    return int(log.read_text().split()[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat")
    return not (state.is_file() and state.read_text().split(") ")[-1].startswith("Z"))  # a zombie is dead


def gone(pid: int, limit: float = 30) -> bool:
    deadline = time.monotonic() + limit
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not alive(pid)


# the two fast tests first: they need Ray not yet connected in this process (the module's executor
# fixture connects it)
def test_an_address_where_no_cluster_answers_is_one_sentence(tmp_path):
    pytest.importorskip("ray")
    with pytest.raises(TunelabError, match="no Ray cluster answers at 127.0.0.1:9"):
        RayExecutor("127.0.0.1:9")
    with pytest.raises(TunelabError, match="not an address Ray can join"):
        RayExecutor("head-without-port")


def test_ray_not_installed_is_one_sentence(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(TunelabError, match="Ray is not installed") as error:
        ray_executor.RayExecutor("127.0.0.1:6379")
    assert "tunelab[ray]" in str(error.value)


@pytest.mark.slow
def test_a_job_runs_its_command_on_the_cluster_and_exits_0(executor, tmp_path):
    script = "import os, pathlib; pathlib.Path('out.txt').write_text(os.environ['JOB_WORD']); print('wrote it')"
    execution = executor.start("job-ok", [sys.executable, "-c", script], cwd=tmp_path, log_path=tmp_path / "job.log",
                               env={"JOB_WORD": "hello"}, resources={"CPU": 1.0, "GPU": 0.0})
    assert finish(execution) == 0
    assert (tmp_path / "out.txt").read_text() == "hello"  # ran in cwd, with the job's environment
    assert "wrote it" in (tmp_path / "job.log").read_text()
    assert execution.poll() == 0  # asked again, the same answer


@pytest.mark.slow
def test_a_failing_command_gives_its_exit_code_and_its_output_in_the_log(executor, tmp_path):
    script = "import sys; print('broken input on line 3', file=sys.stderr); sys.exit(3)"
    execution = executor.start("job-bad", [sys.executable, "-c", script], cwd=tmp_path,
                               log_path=tmp_path / "logs" / "job.log", env={}, resources={})
    assert finish(execution) == 3
    assert "broken input on line 3" in (tmp_path / "logs" / "job.log").read_text()


@pytest.mark.slow
def test_terminate_stops_a_running_job_and_its_process(executor, tmp_path):
    log = tmp_path / "job.log"
    execution = executor.start("job-long", [sys.executable, "-c", PRINT_PID_THEN_SLEEP], cwd=tmp_path, log_path=log,
                               env={}, resources={"num_cpus": 1})
    pid = started_pid(log)
    assert execution.poll() is None and alive(pid)
    execution.terminate()
    assert execution.poll() == CANCELLED  # terminate returns once the task has ended
    assert gone(pid)


@pytest.mark.slow
def test_a_job_that_ignores_sigterm_is_killed_after_the_grace_period(ray_head, executor, tmp_path):
    log = tmp_path / "job.log"
    stubborn = RayExecutor(ray_head, grace_seconds=1)  # joins the session Ray is already connected to
    execution = stubborn.start("job-stubborn", [sys.executable, "-c", IGNORE_SIGTERM + PRINT_PID_THEN_SLEEP],
                               cwd=tmp_path, log_path=log, env={}, resources={})
    pid = started_pid(log)
    execution.terminate()
    assert execution.poll() == CANCELLED
    assert gone(pid)


@pytest.mark.slow
def test_force_killing_the_task_kills_the_job_with_its_worker(ray_head, executor, tmp_path):
    """The task's worker is force-killed while the job still ignores SIGTERM inside its long grace
    period: the job, which asked for SIGKILL at its parent's death, must not outlive it."""
    log = tmp_path / "job.log"
    patient = RayExecutor(ray_head, grace_seconds=300)
    execution = patient.start("job-orphan", [sys.executable, "-c", IGNORE_SIGTERM + PRINT_PID_THEN_SLEEP],
                              cwd=tmp_path, log_path=log, env={}, resources={})
    pid = started_pid(log)
    execution.force_after = 1  # do not wait out the task's grace period
    execution.terminate()
    assert execution.poll() == CANCELLED
    assert gone(pid)


@pytest.mark.slow
def test_a_worker_that_dies_fails_the_job_with_the_reason_in_its_log(executor, tmp_path):
    """The Ray worker running the task is SIGKILLed (as by the out-of-memory killer): the job
    fails, its log ends with the reason as the jobs server reads a job's error, and the job's
    process died with its worker."""
    log = tmp_path / "job.log"
    execution = executor.start("job-lost", [sys.executable, "-c", PRINT_PID_THEN_SLEEP], cwd=tmp_path, log_path=log,
                               env={}, resources={})
    pid = started_pid(log)
    worker = int(Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].split()[1])  # the job's parent
    os.kill(worker, signal.SIGKILL)
    assert finish(execution) == LOST
    assert gone(pid)
    reason = failure_reason(log, LOST)
    assert reason.startswith("the job's Ray task ended before the job did (WorkerCrashedError") and "Ray logs" in reason


@pytest.mark.slow
def test_a_real_tunelab_train_runs_through_the_executor(executor, tmp_path):
    from cli_helpers import ENV, TUNELAB, write_jsonl
    from tiny_models import build_task_tokenizer, build_tiny_llama
    build_tiny_llama(tmp_path / "base", build_task_tokenizer(tmp_path / "base"), hidden=32, layers=1, heads=2,
                     max_positions=128, seed=0)
    rows = [{"messages": [{"role": "user", "content": f"add one to {i}"}, {"role": "assistant", "content": str(i + 1)}]}
            for i in range(12)]
    write_jsonl(tmp_path / "data" / "train.jsonl", rows[:10])
    write_jsonl(tmp_path / "data" / "val.jsonl", rows[10:])
    argv = [TUNELAB, "train", "--model", str(tmp_path / "base"), "--data", str(tmp_path / "data"), "--method", "full",
            "--output", str(tmp_path / "run"), "train.max_steps=2", "train.batch_size=4", "train.max_length=64",
            "train.tracking.backend=none", "train.logging_steps=1"]
    execution = executor.start("job-train", argv, cwd=tmp_path, log_path=tmp_path / "train.log",
                               env={k: ENV[k] for k in ("OMP_NUM_THREADS", "HF_HUB_OFFLINE")}, resources={"num_cpus": 1})
    assert finish(execution, limit=400) == 0, (tmp_path / "train.log").read_text()[-2000:]
    assert (tmp_path / "run" / "manifest.json").is_file() and (tmp_path / "run" / "model.safetensors").is_file()


DRIVER = """
import pathlib, sys, time
from tunelab.jobs.ray_executor import RayExecutor
RayExecutor(sys.argv[1]).start("job-owned", [sys.executable, "-c", sys.argv[2]], cwd=pathlib.Path(sys.argv[3]),
                                log_path=pathlib.Path(sys.argv[3]) / "job.log", env={}, resources={})
time.sleep(600)
"""


@pytest.mark.slow
def test_a_server_that_dies_takes_its_jobs_on_the_cluster_with_it(ray_head, tmp_path):
    """A jobs server killed outright (its Ray driver gone) leaves no job running on the cluster, so
    the next server can resume the job without two trainers writing one run directory."""
    import subprocess
    server = subprocess.Popen([sys.executable, "-c", DRIVER, ray_head, PRINT_PID_THEN_SLEEP, str(tmp_path)])
    try:
        pid = started_pid(tmp_path / "job.log")
        assert alive(pid)
    finally:
        server.kill()
        server.wait()
    assert gone(pid, limit=60)
