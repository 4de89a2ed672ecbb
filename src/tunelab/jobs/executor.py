"""Where a job's processes run: the executor interface the worker talks to, and the local one
(a process of this machine, in its own session so that stopping it stops its children too).
`jobs.executor: ray` sends the same command lines to a Ray cluster (tunelab.jobs.ray_executor).

A job's crash or out-of-memory kill ends its own process only: the worker sees a non-zero exit
code from `poll()` and fails that job; the server and the other jobs carry on."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Protocol

from tunelab.config import JobsConfig


class Execution(Protocol):
    def poll(self) -> int | None: ...      # exit code, None while running
    def terminate(self) -> None: ...       # stop (SIGTERM, then kill after a grace period)


class Executor(Protocol):
    def start(self, job_id: str, argv: list[str], *, cwd: Path, log_path: Path,
              env: dict[str, str], resources: dict[str, float]) -> Execution: ...


def make_executor(cfg: JobsConfig) -> Executor:
    if cfg.executor == "ray":
        from tunelab.jobs.ray_executor import RayExecutor  # ray: imported only when asked for
        return RayExecutor(cfg.ray_address, grace_seconds=cfg.cancel_grace_s)
    return LocalProcessExecutor(grace_s=cfg.cancel_grace_s)


class LocalProcess:
    """A started command: its own process group (session), its output appended to the log."""

    def __init__(self, process: subprocess.Popen, grace_s: float):
        self.process, self.grace_s = process, grace_s

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def interrupt(self) -> None:
        """SIGINT to the command itself, as Ctrl-C: `tunelab train` finishes its step, saves a
        checkpoint and exits (the worker's pause; optional beside the Execution protocol)."""
        if self.process.poll() is None:
            try:
                os.kill(self.process.pid, signal.SIGINT)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        """SIGTERM to the whole group (the trainer and anything it started), SIGKILL to what is
        left after the grace period."""
        if self.process.poll() is not None:
            return
        signal_group(self.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        while self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.process.poll() is None:
            signal_group(self.process.pid, signal.SIGKILL)
            self.process.wait()


def signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class LocalProcessExecutor:
    """Each command a process of this machine. `resources` are not enforced here (the worker's
    jobs.max_concurrent bounds how many run); a GPU job sees the GPUs CUDA_VISIBLE_DEVICES gives it."""

    def __init__(self, grace_s: float = 10.0):
        self.grace_s = grace_s

    def start(self, job_id: str, argv: list[str], *, cwd: Path, log_path: Path,
              env: dict[str, str], resources: dict[str, float]) -> LocalProcess:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        return LocalProcess(process, self.grace_s)


def process_alive(pid: int, marker: str) -> bool:
    """Whether process `pid` still runs and its command line holds `marker` (a job directory):
    after a server crash its jobs' processes may outlive it, and must be stopped before the job
    is resumed by a new one (two trainers must never write one run directory)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return marker.encode() in cmdline
