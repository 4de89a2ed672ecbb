"""The worker: a thread of the jobs server that moves each job through OpenAI's statuses.

validating_files  the data stage checks the files (tunelab.jobs.validation), "auto" is resolved,
                  the job's config.yaml written; a bad file fails the job, naming the line
queued            waits for one of jobs.max_concurrent slots (oldest first)
running           `tunelab train config.yaml` as its own process (the executor's), then
                  `tunelab eval RUN --baseline base`; metrics events and checkpoints are read from
                  the run directory as they appear
succeeded         the fine-tuned model is registered with the server's model pool (answered at
                  once by /v1/chat/completions), the metrics CSV uploaded as the result file
failed            a non-zero exit of training (the process's own error sentence, or the signal
                  that killed it); other jobs and the server carry on
cancelled         the process is stopped (SIGTERM, then SIGKILL); its checkpoints stay on disk
pausing / paused  the process is interrupted as Ctrl-C would (it saves a checkpoint and stops);
                  resume queues the job again and training continues from that checkpoint

Everything lives in the store, so a restarted server finds its jobs: one that was running is
queued again and resumes from its last checkpoint (a process the old server left behind is
stopped first: two trainers never write one run directory)."""
from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from tunelab.config import JobsConfig
from tunelab.errors import TunelabError
from tunelab.jobs import progress
from tunelab.jobs.executor import Execution, Executor, process_alive, signal_group
from tunelab.jobs.spec import fine_tuned_name, job_config, resolve_auto
from tunelab.jobs.store import JobStore
from tunelab.jobs.validation import JobFailure, prepare_job_data
from tunelab.train.callbacks import last_complete_checkpoint

log = logging.getLogger("tunelab.jobs")
# the methods whose held-out split the eval step scores against the base: chat replies, preference
# pairs, and a reinforcement job's prompts by the grader saved with its run
EVALUATED = ("supervised", "dpo", "reinforcement")


@dataclass
class Running:
    job_id: str
    phase: str  # train | eval
    execution: Execution
    total_steps: int | None
    # (step, kind) of every metrics event the job has: a resumed trainer logs again the steps
    # between its checkpoint and the interruption, and the final evaluation is logged twice
    logged: set = field(default_factory=set)
    first_logged: tuple[float, int] | None = None  # (time, step) of this process's first logged row: the pace
    pause_asked: float | None = None  # monotonic time the process was asked to checkpoint and stop


def job_dir(root: Path, job_id: str) -> Path:
    return Path(root) / "jobs" / job_id


def run_dir_of(root: Path, job_id: str) -> Path:
    return job_dir(root, job_id) / "run"


def served_models(store: JobStore, job: dict, run_dir: Path) -> dict[str, Path]:
    """The model ids a succeeded job gives the server: its ft: model (the run directory) and
    each kept checkpoint as `ft:...:ckpt-step-N` (OpenAI's checkpoint models), newest first."""
    models = {job["fine_tuned_model"]: run_dir}
    for checkpoint in store.checkpoints(job["id"], limit=1_000):
        if Path(checkpoint["path"]).is_dir():
            models[f"{job['fine_tuned_model']}:ckpt-step-{checkpoint['step']}"] = Path(checkpoint["path"])
    return models


class Worker:
    def __init__(self, cfg: JobsConfig, store: JobStore, executor: Executor,
                 on_model: Callable[[str, Path], None] = lambda name, run: None):
        """on_model(ft_model_name, run_dir): called when a job succeeds (the server registers it)."""
        self.cfg, self.store, self.executor, self.on_model = cfg, store, executor, on_model
        self.root = Path(cfg.jobs_dir)
        self.running: dict[str, Running] = {}
        self._validating: set[str] = set()
        self._validator = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunelab-validate")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    # life

    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="tunelab-jobs-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and the jobs' processes; their status stays, so the next server resumes them."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for running in list(self.running.values()):
            running.execution.terminate()
        self.running.clear()
        self._validator.shutdown(wait=True, cancel_futures=True)

    def wake(self) -> None:
        """Look now (a job was created, cancelled, paused or resumed)."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 (one bad look must not end the worker; the next one retries)
                log.exception("jobs worker: unexpected error")
            self._wake.wait(self.cfg.poll_s)
            self._wake.clear()

    def recover(self) -> None:
        """Jobs a previous server left running are queued again (resuming from their last
        checkpoint), pausing ones are paused; processes it left behind are stopped first."""
        for job in self.store.jobs_in("running", "pausing"):
            if job["pid"] and process_alive(job["pid"], job["id"]):
                signal_group(job["pid"], 9)
                deadline = time.monotonic() + 10
                while process_alive(job["pid"], job["id"]) and time.monotonic() < deadline:
                    time.sleep(0.05)
            if job["status"] == "pausing":
                self.store.update_job(job["id"], status="paused", resume=1, pid=None)
                continue
            self.store.update_job(job["id"], status="queued", resume=1, pid=None)
            self.store.add_event(job["id"], "The server restarted; the job is queued again and resumes from its "
                                            "last checkpoint")

    # one look

    def tick(self) -> None:
        for job in self.store.jobs_in("validating_files"):
            if job["id"] not in self._validating:
                self._validating.add(job["id"])
                self._validator.submit(self._validate, job["id"])
        for job_id in list(self.running):
            self._watch(self.running[job_id])
        free = self.cfg.max_concurrent - len(self.running)
        for job in self.store.jobs_in("queued")[:max(0, free)]:
            self._start(job)

    # validating_files -> queued | failed

    def _validate(self, job_id: str) -> None:
        try:
            job = self.store.job(job_id)
            if job is None or job["status"] != "validating_files":
                return
            self.store.add_event(job_id, f"Validating training file: {job['training_file']}"
                                 + (f" and validation file: {job['validation_file']}" if job["validation_file"] else ""))
            try:
                self._prepare(job)
            except JobFailure as failure:
                self._fail(job_id, failure.as_error(), statuses=("validating_files",))
                return
            except TunelabError as exc:
                self._fail(job_id, {"code": "invalid_request", "message": str(exc), "param": None},
                           statuses=("validating_files",))
                return
            if self.store.update_job(job_id, status="queued", only_if_status=("validating_files",)):
                self.store.add_event(job_id, "Files validated, moving job to queued state")
            self.wake()
        except Exception as exc:  # noqa: BLE001 (a fault here fails this job, never the server)
            log.exception("validating %s", job_id)
            self._fail(job_id, {"code": "server_error", "message": f"validation failed unexpectedly ({exc})",
                                "param": None}, statuses=("validating_files",))
        finally:
            self._validating.discard(job_id)

    def _prepare(self, job: dict) -> None:
        directory = job_dir(self.root, job["id"])
        validation = self.store.file_path(job["validation_file"]) if job["validation_file"] else None
        for param, file_id in (("training_file", job["training_file"]), ("validation_file", job["validation_file"])):
            if file_id and self.store.file(file_id) is None:
                raise JobFailure(f"invalid_{param}", f"the {param.replace('_', ' ')} {file_id} was deleted", param)
        prepared = prepare_job_data(training=self.store.file_path(job["training_file"]), validation=validation,
                                    method_type=job["method"]["type"], job_dir=directory,
                                    min_examples=self.cfg.min_examples)
        method = resolve_auto(job["method"], prepared.examples)
        try:
            config = job_config(cfg=self.cfg, method=method, base=job["base"], prepared=prepared.directory,
                                run_dir=run_dir_of(self.root, job["id"]), seed=job["seed"],
                                examples=prepared.examples, resume=False)
        except TunelabError as exc:
            raise JobFailure("invalid_request", str(exc), "method") from None
        from tunelab.files import write_text
        write_text(directory / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        self.store.update_job(job["id"], method=method, examples=prepared.examples)

    # queued -> running

    def _start(self, job: dict) -> None:
        directory = job_dir(self.root, job["id"])
        run_dir = run_dir_of(self.root, job["id"])
        phase = "eval" if job["phase"] == "eval" and (run_dir / "manifest.json").is_file() else "train"
        argv = self._argv(phase, directory, run_dir, resume=bool(job["resume"]))
        if not self.store.update_job(job["id"], status="running", phase=phase, only_if_status=("queued",)):
            return
        try:
            execution = self.executor.start(job["id"], argv, cwd=directory, log_path=directory / f"{phase}.log",
                                            env=self._env(), resources={"CPU": 1.0, "GPU": float(self.cfg.gpus_per_job)})
        except Exception as exc:  # noqa: BLE001 (an executor that cannot start the job fails the job)
            self._fail(job["id"], {"code": "server_error", "message": f"could not start the job ({exc})", "param": None})
            return
        self.store.update_job(job["id"], pid=getattr(execution, "pid", None))
        hyper = job["method"][job["method"]["type"]]["hyperparameters"]
        total = math.ceil((job["examples"] or 0) / hyper["batch_size"]) * int(hyper["n_epochs"]) or None
        self.running[job["id"]] = Running(job["id"], phase, execution, total,
                                          logged={progress.metrics_key(d) for d in self._metrics_history(job["id"])})
        if phase == "train":
            resumed = argv[-1] == "train.resume=true"
            self.store.add_event(job["id"], "Fine-tuning job resumed from its last checkpoint" if resumed
                                 else "Fine-tuning job started")
        else:
            self.store.add_event(job["id"], "Evaluating the fine-tuned model against its base")

    def _argv(self, phase: str, directory: Path, run_dir: Path, *, resume: bool) -> list[str]:
        cli = [sys.executable, "-m", "tunelab.cli"]
        if phase == "eval":
            return [*cli, "eval", str(run_dir), str(directory / "config.yaml"), "--quiet"]
        argv = [*cli, "train", str(directory / "config.yaml")]
        if resume and last_complete_checkpoint(run_dir / "checkpoints") is not None:
            argv.append("train.resume=true")
        return argv

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        src = str(Path(__file__).resolve().parents[2])  # this tunelab, whichever way the server was started
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        return env

    # running -> ...

    def _watch(self, running: Running) -> None:
        job = self.store.job(running.job_id)
        self._ingest(job, running)
        if job["status"] == "cancelled":
            running.execution.terminate()
            del self.running[running.job_id]
            self._ingest(job, running)
            self.store.update_job(job["id"], pid=None)
            self.store.add_event(job["id"], "Job cancelled; its checkpoints are kept")
            return
        if job["status"] == "pausing" and not self._paused(running):
            return
        if job["status"] == "pausing":
            del self.running[running.job_id]
            self._ingest(job, running)
            self.store.update_job(job["id"], status="paused", resume=1, pid=None, estimated_finish=None,
                                  only_if_status=("pausing",))
            self.store.add_event(job["id"], "Job paused; resume continues from its last checkpoint")
            return
        code = running.execution.poll()
        if code is None:
            return
        del self.running[running.job_id]
        self._ingest(job, running)
        directory = job_dir(self.root, job["id"])
        if running.phase == "train":
            if code != 0:
                self._fail(job["id"], {"code": "training_failed", "message":
                                       progress.failure_reason(directory / "train.log", code), "param": None})
                return
            if self.cfg.evaluate and job["method"]["type"] in EVALUATED:
                self.store.update_job(job["id"], status="queued", phase="eval", only_if_status=("running",))
                self.wake()
                return
        elif code != 0:
            self.store.add_event(job["id"], "Evaluation against the base failed: "
                                 + progress.failure_reason(directory / "eval.log", code), level="warn")
        self._succeed(job)

    def _paused(self, running: Running) -> bool:
        """Whether a pausing job's process has stopped. It is first interrupted as Ctrl-C would
        (`tunelab train` finishes its step, saves a checkpoint and exits), so a resumed job loses
        no step; one still running after jobs.pause_grace_s, or an execution that cannot be
        interrupted, is stopped like a cancel (resuming from its last checkpoint)."""
        if running.pause_asked is None:
            running.pause_asked = time.monotonic()
            interrupt = getattr(running.execution, "interrupt", None)
            if interrupt is None:
                running.execution.terminate()
            else:
                interrupt()
        elif running.execution.poll() is None and time.monotonic() - running.pause_asked > self.cfg.pause_grace_s:
            running.execution.terminate()
        return running.execution.poll() is not None

    def _ingest(self, job: dict, running: Running) -> None:
        run_dir = run_dir_of(self.root, job["id"])
        # checkpoints first: training logs a step before it saves that step's checkpoint, so the
        # metrics read next hold every step of the checkpoints seen now
        found = progress.complete_checkpoints(run_dir)
        rows, offset = progress.new_metric_rows(run_dir / "metrics.jsonl", job["metrics_offset"])
        for row in rows:
            event = progress.metrics_event(row, running.total_steps)
            key = progress.metrics_key(event[1]) if event is not None else None
            if key is not None and key not in running.logged:
                self.store.add_event(job["id"], event[0], type="metrics", data=event[1])
                running.logged.add(key)
        tokens = progress.trained_tokens(rows)
        if running.first_logged is None and rows and "time" in rows[0]:
            running.first_logged = (rows[0]["time"], rows[0].get("step", 0))
        finish = progress.estimated_finish(running.first_logged, rows, running.total_steps) \
            if running.phase == "train" else None
        self.store.update_job(job["id"], metrics_offset=offset,
                              **({"trained_tokens": tokens} if tokens is not None else {}))
        if finish is not None:  # only while it runs: a cancel or pause clears it for good
            self.store.update_job(job["id"], estimated_finish=finish, only_if_status=("running",))
        job["metrics_offset"] = offset
        known = {c["step"] for c in self.store.checkpoints(job["id"], limit=10_000)}
        if found.keys() != known:
            history = self._metrics_history(job["id"])
            for step in sorted(found.keys() - known):
                if self.store.add_checkpoint(job["id"], step, str(found[step]),
                                             progress.checkpoint_metrics(history, step)):
                    self.store.add_event(job["id"], f"Checkpoint created at step {step}")
            for step in known - found.keys():  # the trainer deleted it (jobs.keep_checkpoints)
                self.store.drop_checkpoint(job["id"], step)

    def _metrics_history(self, job_id: str) -> list[dict]:
        return [e["data"] for e in self.store.events(job_id, limit=1_000_000) if e["type"] == "metrics" and e["data"]]

    def _succeed(self, job: dict) -> None:
        job_id = job["id"]
        name = fine_tuned_name(job["base_name"], job["suffix"], job_id)
        run_dir = run_dir_of(self.root, job_id)
        results = self.store.add_file("step_metrics.csv", "fine-tune-results",
                                      progress.metrics_csv(self._metrics_history(job_id)))
        for model_id, path in served_models(self.store, {**job, "fine_tuned_model": name}, run_dir).items():
            try:
                self.on_model(model_id, path)
            except Exception as exc:  # noqa: BLE001 (the run is complete on disk; say why it is not served)
                self.store.add_event(job_id, f"{model_id} could not be served here: {exc}", level="warn")
        if self.store.update_job(job_id, status="succeeded", fine_tuned_model=name, finished_at=int(time.time()),
                                 result_files=[results["id"]], pid=None, estimated_finish=None,
                                 only_if_status=("running",)):
            self.store.add_event(job_id, f"New fine-tuned model created: {name}")
            self.store.add_event(job_id, "The job has successfully completed")

    def _fail(self, job_id: str, error: dict, statuses: tuple[str, ...] = ("running", "validating_files", "queued")) -> None:
        if self.store.update_job(job_id, status="failed", error=error, finished_at=int(time.time()), pid=None,
                                 estimated_finish=None, only_if_status=statuses):
            self.store.add_event(job_id, f"Job failed: {error['message']}", level="error")
