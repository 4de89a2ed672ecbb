"""`jobs.executor: ray`: each job runs as one Ray task on a cluster, which starts the job's command
line as a subprocess on the node Ray picked (the node that has the GPUs and CPUs the job asks for).

What the cluster needs: every node sees the jobs directory at the same path (a shared filesystem:
NFS, a cluster volume), since the job reads its files and writes its run directory and its log
there, and the server reads them back; and every node has tunelab installed at the same
interpreter path as the server (the job's argv names it), as in one image for the whole cluster.

Stopping a job: `terminate` asks Ray to cancel the task (a KeyboardInterrupt inside it), on which
the task sends SIGTERM to the job's process group, waits a grace period, then SIGKILLs the group.
If the task has not ended by then, the task's worker is force-killed (`ray.cancel(force=True)`),
and the job's process, which asked the kernel for SIGKILL when its parent dies
(PR_SET_PDEATHSIG), dies with it: no orphaned training process keeps a GPU."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.ray_cluster import connect

GRACE_SECONDS = 10.0  # SIGTERM -> SIGKILL inside the task; the server force-kills the task a little later
POLL_SECONDS = 0.5  # the task wakes this often so that a cancel (KeyboardInterrupt) is seen at once
CANCELLED = -signal.SIGTERM  # the exit code of a job stopped through terminate()
LOST = 1  # the task's worker or node died first: a failure whose reason is the log's last "error:" line
# a job's resources (the worker asks {"CPU": 1, "GPU": jobs.gpus_per_job}) -> Ray's task options;
# any other name is a custom resource of the cluster's nodes
RESOURCE_OPTIONS = {"cpu": "num_cpus", "num_cpus": "num_cpus", "gpu": "num_gpus", "num_gpus": "num_gpus",
                    "memory": "memory"}


class RayExecution:
    """One job's Ray task: its exit code once finished, and the way to stop it."""

    def __init__(self, ray, ref, log_path: Path, grace_seconds: float):
        self._ray, self._ref, self._log_path = ray, ref, log_path
        # how long terminate() lets the task stop the job itself before force-killing the task
        self.force_after = grace_seconds + 5
        self._code: int | None = None
        self._cancel_requested = False

    def poll(self) -> int | None:
        if self._code is None:
            ready, _ = self._ray.wait([self._ref], timeout=0)
            if ready:
                self._code = self._result()
        return self._code

    def terminate(self) -> None:
        """Cancel the task (graceful: SIGTERM then SIGKILL to the job inside it); if it has not
        ended a few seconds after its grace period, force-kill its worker, and the job with it."""
        if self.poll() is not None:
            return
        self._cancel_requested = True
        ray = self._ray
        ray.cancel(self._ref, force=False)
        ready, _ = ray.wait([self._ref], timeout=self.force_after)
        if not ready:
            ray.cancel(self._ref, force=True)
            ray.wait([self._ref], timeout=10)

    def _result(self) -> int:
        ray = self._ray
        try:
            return int(ray.get(self._ref, timeout=0))
        except ray.exceptions.TaskCancelledError:
            return CANCELLED
        except ray.exceptions.RayError as exc:  # worker crashed or was killed, node lost, task raised
            # a force-cancelled task reads back as a crashed worker: still a cancel, not a loss
            if self._cancel_requested:
                return CANCELLED
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            # the jobs server makes a failed job's error of the log's last "error:" line
            self._note(f"error: the job's Ray task ended before the job did ({type(exc).__name__}"
                       + (f": {reason}" if reason else "") + "); see the Ray logs of its node")
            return LOST

    def _note(self, line: str) -> None:
        try:
            with open(self._log_path, "a", encoding="utf-8") as log:
                log.write(line + "\n")
        except OSError:
            pass  # the log lives on the shared filesystem; the exit code carries the outcome anyway


class RayExecutor:
    """Sends each job to the Ray cluster at `address` (HOST:PORT, ray://HOST:10001 or auto); with
    no address, starts a Ray head on this machine (127.0.0.1) with its CPUs and GPUs."""

    def __init__(self, address: str | None, *, grace_seconds: float = GRACE_SECONDS):
        try:
            import ray
        except ImportError:
            raise TunelabError("jobs.executor is ray but Ray is not installed",
                               fix="pip install 'tunelab[ray]', or set jobs.executor=local") from None
        self._ray = ray
        if not ray.is_initialized():
            _connect(ray, address)
        self.grace_seconds = grace_seconds
        # no retry: a job that failed or whose node died is the jobs server's to resume or fail
        self._task = ray.remote(max_retries=0)(run_job)

    def start(self, job_id: str, argv: list[str], *, cwd: Path, log_path: Path, env: dict[str, str],
              resources: dict[str, float]) -> RayExecution:
        options: dict = {"name": f"tunelab-job-{job_id}", "num_cpus": 1, "num_gpus": 0}
        custom = {}
        for key, amount in resources.items():
            if key.lower() in RESOURCE_OPTIONS:
                options[RESOURCE_OPTIONS[key.lower()]] = amount
            else:
                custom[key] = amount  # a cluster's own resource label (e.g. {"A100": 1})
        if custom:
            options["resources"] = custom
        ref = self._task.options(**options).remote([str(a) for a in argv], str(cwd), str(log_path), dict(env),
                                                  self.grace_seconds)
        return RayExecution(self._ray, ref, Path(log_path), self.grace_seconds)


def _connect(ray, address: str | None) -> None:
    """Join the cluster at `address`, or start a head on 127.0.0.1. An explicit HOST:PORT is
    probed first: Ray itself retries an unreachable address for minutes."""
    if address and address != "auto":
        _probe(address)
    connect(ray, address, setting="jobs.ray_address")


def _probe(address: str, timeout: float = 5.0) -> None:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise TunelabError(f"jobs.ray_address {address!r} is not an address Ray can join",
                           fix="write it as HOST:PORT (the head's GCS port, 6379 by default), ray://HOST:10001 "
                               "or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise TunelabError(f"no Ray cluster answers at {address} ({exc.strerror or type(exc).__name__})",
                           fix="start the head (ray start --head) or fix jobs.ray_address") from None


def run_job(argv: list[str], cwd: str, log_path: str, env: dict[str, str], grace_seconds: float) -> int:
    """The Ray task: run the job's command line on this node with its output appended to
    log_path, and return its exit code. A cancel from the server arrives as KeyboardInterrupt:
    the job's process group gets SIGTERM, then SIGKILL after grace_seconds."""
    child_env = {**os.environ, **env}
    child_env.pop("CUDA_VISIBLE_DEVICES", None)  # the server's view of its own GPUs means nothing here
    if "CUDA_VISIBLE_DEVICES" in os.environ:  # the GPUs Ray gave this task
        child_env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(argv, cwd=cwd, env=child_env, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=_parent_death_signal())
        try:
            while True:
                try:
                    return process.wait(timeout=POLL_SECONDS)
                except subprocess.TimeoutExpired:
                    continue
        except BaseException:  # KeyboardInterrupt from ray.cancel, or the worker shutting down
            _stop_group(process, grace_seconds)
            raise


def _stop_group(process: subprocess.Popen, grace_seconds: float) -> None:
    for sig, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                if process.wait(timeout=0.2) is not None:
                    break
            except subprocess.TimeoutExpired:
                continue
        if process.returncode is not None:
            try:  # the leader is gone; anything it left in its group goes too
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return


def _parent_death_signal():
    """What the child runs before exec: ask the kernel for SIGKILL when the Ray worker that
    started it dies (Linux's PR_SET_PDEATHSIG), so a force-cancelled task leaves no job running.
    libc is looked up here, in the parent: nothing may be imported between fork and exec."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
