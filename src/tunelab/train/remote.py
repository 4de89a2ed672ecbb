"""`tunelab train` with `train.provider: openai`: the run trained by an OpenAI-compatible
fine-tuning API (OpenAI's, or a `tunelab jobs serve` on the team's own machine) through the
official `openai` client.

1. the data (train.data: a prepared directory or a JSONL) is read as local training reads it,
   its records written as OpenAI training-file lines (tunelab.train.remote_format) to
   RUN/remote/ and uploaded (purpose fine-tune): the train split, and the validation split when
   there is one;
2. the job is created (model = train.model as the API names it, method and hyperparameters mapped
   from the train config, suffix, seed, metadata {"tunelab_run": RUN's name});
3. its events are followed (message events printed, metrics events drawn as a progress bar and
   appended to RUN/metrics.jsonl, so `tunelab eval` reads the loss curves as for a local run);
4. the run directory records the job as last seen (RunDir.remote) at creation and at the end, and
   `tunelab eval RUN` asks its fine_tuned_model through the endpoint (RunDir.endpoint).

Ctrl-C while following: at a terminal, asks whether to cancel the job or detach from it; without
one, detaches. A detached job keeps running; `tunelab train ... --resume` (same output directory)
follows it again instead of starting another.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError
from tunelab.files import write_json, write_jsonl
from tunelab.progress import progress_bars
from tunelab.train.data import KIND_TO_TASK, load_training_data
from tunelab.train.remote_format import check_remote_config, job_method, job_suffix, openai_line
from tunelab.train.run_dir import RunDir, write_remote_run_files

TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class RemoteResult:
    """What `tunelab train` reports (the attributes of train.run.TrainResult), plus the sentence
    for an interrupted run."""
    run_dir: Path
    task: str
    metrics: dict[str, Any] = field(default_factory=dict)
    stages: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    main_process: bool = True
    message: str | None = None


def client_for(remote) -> tuple[Any, str]:
    """(openai.OpenAI, the base URL it talks to): train.remote.base_url, else OPENAI_BASE_URL,
    else OpenAI's; the key from the variable train.remote.api_key_env names."""
    from openai import OpenAI
    base_url = (remote.base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
    key = os.environ.get(remote.api_key_env)
    if not key and "api.openai.com" in base_url:
        raise TunelabError(f"no API key for {base_url}", fix=f"set the environment variable {remote.api_key_env}")
    # a self-hosted server without keys (tunelab jobs serve on loopback) ignores the placeholder
    return OpenAI(base_url=base_url, api_key=key or "none", timeout=remote.timeout_s), base_url


def run(cfg, *, interactive: bool | None = None) -> RemoteResult:
    tc = cfg.train
    check_remote_config(tc)
    started = time.time()
    run_dir = Path(tc.output_dir)
    data = load_training_data(tc.data, tc.eval_data, None, tc.seed).sample(tc.max_train_examples, tc.seed)
    task = KIND_TO_TASK[data.kind]
    if tc.task not in ("auto", task):
        raise TunelabError(f"train.task is {tc.task} but the data is {data.kind} records",
                           fix=f"set train.task={task} (or auto)")
    grader = _grader(tc) if task == "rft" else None
    method = job_method(tc, data.kind, grader)  # refuses classification data before anything is sent
    client, base_url = client_for(tc.remote)
    seen = RunDir(run_dir).remote if (run_dir / "manifest.json").is_file() else None
    if seen and seen.get("base_url") == base_url and seen.get("status") not in TERMINAL and not tc.resume:
        raise TunelabError(f"the run directory belongs to job {seen['job_id']}, still {seen['status']} at {base_url}",
                           where=str(run_dir), fix="follow it with --resume, or choose another --output")
    uploaded = _write_files(run_dir, data)
    if tc.resume and seen and seen.get("base_url") == base_url:
        job = _api(lambda: client.fine_tuning.jobs.retrieve(seen["job_id"]), base_url)
        files = {"training_file": seen.get("training_file"), "validation_file": seen.get("validation_file")}
    else:
        files = {name: _api(lambda p=path: client.files.create(file=(p.name, p.read_bytes()), purpose="fine-tune"),
                            base_url).id for name, path in uploaded.items()}
        job = _api(lambda: client.fine_tuning.jobs.create(
            model=tc.model, training_file=files["training_file"], validation_file=files.get("validation_file"),
            suffix=job_suffix(tc, run_dir.resolve().name), seed=tc.seed, method=method,
            metadata={"tunelab_run": run_dir.resolve().name}), base_url)
    # following reads every event from the first, so the curves are written afresh (a resumed follow too)
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)

    def record(job, interrupted: bool) -> None:
        remote = {"provider": "openai", "base_url": base_url, "job_id": job.id, "status": job.status,
                  "fine_tuned_model": job.fine_tuned_model, "model": job.model, **files,
                  "trained_tokens": job.trained_tokens, "result_files": list(job.result_files or []),
                  "error": job.error.model_dump() if job.error and job.error.message else None, "method": method}
        write_remote_run_files(run_dir, config=cfg.model_dump(mode="json"), base_model=tc.model, task=task,
                               method=f"openai:{method['type']}", data_sources=data.sources, uploaded=uploaded,
                               seed=tc.seed, wall_time_s=time.time() - started, final_metrics=_final(run_dir),
                               remote=remote, interrupted=interrupted)

    if grader is not None:  # what the job was rewarded by, beside the run as a local rft run keeps it (RunDir.grader)
        write_json(run_dir / "grader.json", grader)
    record(job, interrupted=False)  # the job is on record before anything can interrupt following it
    try:
        with ctrl_c_interrupts():
            job = follow(client, job, run_dir / "metrics.jsonl", tc.remote.poll_s, base_url)
    except KeyboardInterrupt:
        job, message = on_interrupt(client, job, base_url, interactive)
        record(job, interrupted=job.status not in TERMINAL)
        return RemoteResult(run_dir, task, _final(run_dir), interrupted=True, message=message)
    record(job, interrupted=False)
    if job.status != "succeeded":
        reason = job.error.message if job.error and job.error.message else "no reason given"
        raise TunelabError(f"the fine-tuning job {job.id} {job.status}: {reason}", where=base_url,
                           fix="fix what it names and train again (the run directory records the job)")
    return RemoteResult(run_dir, task, _final(run_dir))


@contextmanager
def ctrl_c_interrupts() -> Iterator[None]:
    """Ctrl-C (SIGINT) raises KeyboardInterrupt in the block, as local training's handler makes it
    checkpoint, whatever disposition the process inherited (a process started in the background by
    a shell without job control inherits SIGINT ignored, and Python then installs no handler)."""
    try:
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread: signals are not ours to handle
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _grader(tc) -> dict[str, Any]:
    from tunelab.graders import load_grader
    if not tc.grader:
        raise TunelabError("reinforcement fine-tuning needs a grader", fix="set train.grader=GRADER.json")
    return load_grader(tc.grader).spec


def _write_files(run_dir: Path, data) -> dict[str, Path]:
    """The training file (and validation file, when the data has a validation split) as sent."""
    out = run_dir / "remote"
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "training_file.jsonl", [openai_line(r, data.kind) for r in data.train])
    files = {"training_file": out / "training_file.jsonl"}
    if data.eval:
        write_jsonl(out / "validation_file.jsonl", [openai_line(r, data.kind) for r in data.eval])
        files["validation_file"] = out / "validation_file.jsonl"
    return files


def follow(client, job, metrics_path: Path, poll_s: float, base_url: str):
    """Print the job's message events and draw its metrics events as a progress bar until it
    ends; every metrics event goes to metrics.jsonl ("loss" and "eval_loss" rows by step, as a
    local run logs them). Returns the job as it ended."""
    seen: set[str] = set()
    with progress_bars(unit="steps") as bars:
        bar = bars.add_task(f"job {job.status}", total=None)
        while True:
            for event in new_events(client, job.id, seen, base_url):
                data = event.data if isinstance(event.data, dict) else {}
                if event.type == "metrics" and "step" in data:
                    _log_metrics(metrics_path, data)
                    bars.update(bar, completed=data["step"], total=data.get("total_steps"))
                else:
                    bars.console.print(f"[dim]{event.message}[/dim]", highlight=False)
            job = _api(lambda: client.fine_tuning.jobs.retrieve(job.id), base_url)
            bars.update(bar, description=f"job {job.status}")
            if job.status in TERMINAL:
                return job
            time.sleep(poll_s)


def new_events(client, job_id: str, seen: set[str], base_url: str) -> list:
    """Events not shown yet, oldest first. The API lists newest first and pages to older ones
    (`after` = the last id of a page), so paging stops at the first event already seen."""
    fresh, after = [], None
    while True:
        page = _api(lambda: client.fine_tuning.jobs.list_events(job_id, limit=100, **({"after": after} if after
                                                                                        else {})), base_url)
        batch = [e for e in page.data if e.id not in seen]
        fresh += batch
        if len(batch) < len(page.data) or not page.has_more or not page.data:
            break
        after = page.data[-1].id
    seen.update(e.id for e in fresh)
    return list(reversed(fresh))


def _log_metrics(path: Path, data: dict[str, Any]) -> None:
    rows = []
    if isinstance(data.get("train_loss"), (int, float)):
        rows.append({"step": data["step"], "loss": data["train_loss"],
                     **({"mean_token_accuracy": data["train_mean_token_accuracy"]}
                        if "train_mean_token_accuracy" in data else {})})
    if isinstance(data.get("valid_loss"), (int, float)):
        rows.append({"step": data["step"], "eval_loss": data["valid_loss"]})
    with path.open("a", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)


def _final(run_dir: Path) -> dict[str, Any]:
    """The last validation loss the job reported, as a local run's final metrics name it."""
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []
    last = next((r for r in reversed(rows) if "eval_loss" in r), None)
    return {"eval_loss": last["eval_loss"]} if last else {}


def on_interrupt(client, job, base_url: str, interactive: bool | None):
    """(the job after the user's choice, the sentence to print): cancel it or leave it running."""
    interactive = sys.stdin.isatty() if interactive is None else interactive
    choice = "d"
    if interactive:
        try:
            choice = input(f"\njob {job.id} is still {job.status}: [c]ancel it, or [d]etach and leave it running? "
                           ).strip().lower()[:1] or "d"
        except (EOFError, KeyboardInterrupt):
            choice = "d"
    if choice == "c":
        job = _api(lambda: client.fine_tuning.jobs.cancel(job.id), base_url)
        return job, f"cancelled job {job.id} at {base_url}"
    return job, (f"detached: job {job.id} keeps running at {base_url}; follow it again with the same command "
                 "and --resume (train.resume=true), which records its model in the run directory when it ends")


def _api(request, base_url: str):
    import openai
    try:
        return request()
    except openai.APIStatusError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error") if isinstance(body.get("error"), dict) else body
        param = f" ({error.get('param')})" if error.get("param") else ""
        raise TunelabError(f"the fine-tuning API answered {exc.status_code}: {error.get('message') or exc.message}"
                           f"{param}", where=base_url,
                           fix="check the key (train.remote.api_key_env)" if exc.status_code in (401, 403)
                           else "fix the setting it names") from None
    except openai.APIConnectionError as exc:
        raise TunelabError(f"the fine-tuning API could not be reached ({exc.__cause__ or exc})", where=base_url,
                           fix="check train.remote.base_url (or OPENAI_BASE_URL) and that the server runs") from None
