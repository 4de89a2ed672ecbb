"""The jobs page: what a person sees of the jobs server in a browser.

Two routes, so that every byte of job data stays under the server's API keys while a browser
(which cannot put an Authorization header on a page it navigates to) can still open the page:

GET /jobs       the page's shell: no job data, so it is served without a key. Its script fetches
                the view with `Authorization: Bearer <key>`; when the server answers 401 (it has
                API keys) it asks for the key once and keeps it in the tab's sessionStorage (gone
                when the tab closes, never sent by the browser on its own, so no cross-site
                request can use it). On a keyless server (loopback only) no key is asked.
GET /jobs/view  the jobs, rendered here from OpenAI-shaped objects (job, events, checkpoints) and
                each run's eval report, on the report shell the data, eval and drift reports use:
                a table of the jobs, then per job its status, loss curves (SVG, tunelab.charts),
                checkpoints, eval verdict, recent events and cancel / pause / resume buttons.
                Under the API keys like every /v1 route. The script swaps it into the shell and
                fetches it again every few seconds while a job is still active.

The buttons POST to /v1/fine_tuning/jobs/{id}/cancel|pause|resume with the same key."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.charts import line_chart
from tunelab.report_shell import (STYLE, Action, Actions, Chart, Note, Section, Status, Table, anchor, esc,
                                  render_html)

TITLE = "tunelab jobs"
ACTIVE = ("validating_files", "queued", "running", "pausing")
OUTCOME = {"succeeded": True, "failed": False, "cancelled": False}  # a Status colour; others neutral
REFRESH_MS = 3000  # how often the page fetches the view again while a job is active
RECENT_EVENTS = 8
MAX_JOBS = 100  # the newest jobs the page shows
NO_STORE = {"Cache-Control": "no-store"}  # job data is not kept in a browser's or proxy's cache


@dataclass
class JobView:
    """What the page shows of one job: OpenAI's objects as the API returns them (dicts) and the
    eval report.json of its run (None until `tunelab eval` wrote one)."""
    job: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)  # newest first, as the API lists them
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    eval_report: dict[str, Any] | None = None
    eval_problem: str | None = None  # why a report on disk could not be read


def install(app, store, jobs_dir: str | Path) -> None:
    """Add GET /jobs (the shell, open) and GET /jobs/view (the jobs, under the API keys) to the
    jobs app; the app lists /jobs among the paths its key check leaves open."""
    from fastapi import Query
    from fastapi.responses import HTMLResponse

    @app.get("/jobs", response_class=HTMLResponse, include_in_schema=False)
    async def jobs_page():
        return HTMLResponse(render_shell(), headers=NO_STORE)

    @app.get("/jobs/view", response_class=HTMLResponse, include_in_schema=False)
    async def jobs_view(limit: int = Query(MAX_JOBS, ge=1, le=1000)):
        views = await asyncio.to_thread(collect_views, store, Path(jobs_dir), limit)
        return HTMLResponse(render_view(views), headers=NO_STORE)


def collect_views(store, jobs_dir: Path, limit: int = MAX_JOBS) -> list[JobView]:
    """The newest `limit` jobs as the API shows them, with their events, checkpoints and the eval
    report of their run directory."""
    from tunelab.errors import TunelabError
    from tunelab.jobs.schemas import checkpoint_object, event_object, job_object
    from tunelab.jobs.spec import fine_tuned_name
    from tunelab.jobs.worker import run_dir_of
    from tunelab.train.run_dir import RunDir
    views = []
    for row in store.jobs(limit=limit):
        name = row["fine_tuned_model"] or fine_tuned_name(row["base_name"], row["suffix"], row["id"])
        view = JobView(job_object(row).model_dump(mode="json"),
                       [event_object(e).model_dump(mode="json") for e in store.events(row["id"], limit=100_000)],
                       [checkpoint_object(c, name).model_dump(mode="json")
                        for c in store.checkpoints(row["id"], limit=1000)])
        try:
            view.eval_report = RunDir(run_dir_of(jobs_dir, row["id"])).eval_report
        except TunelabError as exc:
            view.eval_problem = str(exc)
        views.append(view)
    return views


def render_view(views: Sequence[JobView], *, now: float | None = None) -> str:
    """The jobs as one HTML page (newest first as given)."""
    now = time.time() if now is None else now
    active = sum(v.job["status"] in ACTIVE for v in views)
    meta = [("jobs", len(views)), ("active", active), ("as of", _when(now))]
    sections = [jobs_table(views, now)] + [job_section(view, now) for view in views]
    return render_html(TITLE, sections, meta)


def jobs_table(views: Sequence[JobView], now: float) -> Section:
    if not views:
        return Section("jobs", "Jobs", [Note("No fine-tuning jobs yet: create one with POST /v1/fine_tuning/jobs "
                                             "(client.fine_tuning.jobs.create).", "muted")])
    rows = [[v.job["id"], _status(v.job), v.job.get("model"), v.job.get("fine_tuned_model") or "",
             _when(v.job.get("created_at")), _duration(v.job, now), v.job.get("trained_tokens")] for v in views]
    return Section("jobs", "Jobs", [Table(["job", "status", "model", "fine-tuned model", "created (UTC)", "duration",
                                           "trained tokens"], rows)])


def job_section(view: JobView, now: float) -> Section:
    job = view.job
    blocks: list = [Note(_status(job, detailed=True))]
    actions = job_actions(job)
    if actions:
        blocks.append(Actions(actions))
    method = job.get("method") or {}
    blocks.append(Table(["model", "fine-tuned model", "method", "hyperparameters", "training file",
                         "validation file", "seed", "duration"],
                        [[job.get("model"), job.get("fine_tuned_model") or "", method.get("type", "supervised"),
                          ", ".join(f"{k}={v}" for k, v in (job.get("hyperparameters") or {}).items()),
                          job.get("training_file"), job.get("validation_file") or "", job.get("seed"),
                          _duration(job, now)]]))
    blocks += loss_blocks(job["id"], view.events)
    blocks += checkpoint_blocks(view.checkpoints)
    blocks += eval_blocks(view.eval_report, job, view.eval_problem)
    messages = [e for e in view.events if e.get("type") != "metrics"]
    if messages:
        blocks.append(Table(["time (UTC)", "level", "event"], [[_when(e.get("created_at")), e.get("level"),
                                                                 e.get("message")] for e in messages[:RECENT_EVENTS]]))
    return Section(job["id"], f"{job['id']} ({job['status']})", blocks)


def job_actions(job: dict[str, Any]) -> list[Action]:
    """The buttons a job's status allows, as the API answers them (others would be a 400)."""
    status, url = job["status"], f"/v1/fine_tuning/jobs/{job['id']}"
    actions = []
    if status in ("queued", "running"):
        actions.append(Action("pause", f"{url}/pause"))
    if status == "paused":
        actions.append(Action("resume", f"{url}/resume"))
    if status in (*ACTIVE, "paused"):
        actions.append(Action("cancel", f"{url}/cancel",
                              confirm=f"Cancel {job['id']}? It stops within seconds; its checkpoints are kept."))
    return actions


def loss_blocks(job_id: str, events: Sequence[dict[str, Any]]) -> list:
    """The train and validation loss per step from the job's metrics events, as a line chart."""
    series: dict[str, list[tuple[float, float]]] = {"train loss": [], "valid loss": []}
    for event in events:
        data = event.get("data") or {}
        if event.get("type") != "metrics" or "step" not in data:
            continue
        for key, name in (("train_loss", "train loss"), ("valid_loss", "valid loss")):
            if isinstance(data.get(key), (int, float)):
                series[name].append((data["step"], data[key]))
    # by step; a step logged twice (again after a resume from an earlier checkpoint): its last value
    series = {name: sorted(dict(reversed(points)).items()) for name, points in series.items() if points}
    if not series:
        return [Note("No metrics yet: the loss curves appear with the first logged training step.", "muted")]
    return [Chart(line_chart("Loss per step", series, chart_id=f"chart-loss-{anchor(job_id)}", x_label="step",
                             y_label="loss"))]


def checkpoint_blocks(checkpoints: Sequence[dict[str, Any]]) -> list:
    if not checkpoints:
        return [Note("No checkpoints yet.", "muted")]
    rows = [[c.get("step_number"), c.get("fine_tuned_model_checkpoint"), (c.get("metrics") or {}).get("train_loss"),
             (c.get("metrics") or {}).get("valid_loss"), _when(c.get("created_at"))]
            for c in sorted(checkpoints, key=lambda c: c.get("step_number") or 0)]
    return [Table(["step", "checkpoint", "train loss", "valid loss", "created (UTC)"], rows)]


def eval_blocks(report: dict[str, Any] | None, job: dict[str, Any], problem: str | None = None) -> list:
    """The verdict of `tunelab eval` on the job's run (tuned vs its base), and its deploy gate."""
    if problem:
        return [Note(Status(False, f"Evaluation: the report could not be read ({problem})"))]
    if not report:
        waiting = job["status"] in (*ACTIVE, "paused")
        return [Note("Evaluation: not yet (after training)." if waiting else "Evaluation: no report for this job.",
                     "muted")]
    blocks = [Note(f"Evaluation: {report.get('verdict') or 'no verdict recorded'}", "verdict")]
    gate = report.get("gate")
    if gate:
        checks = gate.get("checks") or []
        passed = sum(bool(c.get("passed")) for c in checks)
        blocks.append(Note(Status(bool(gate.get("passed")), f"Deploy gate {'passed' if gate.get('passed') else 'FAILED'}"
                                                            f": {passed} of {len(checks)} checks pass.")))
    return blocks


def _status(job: dict[str, Any], detailed: bool = False) -> Status:
    status = job["status"]
    text = status
    if detailed and job.get("error"):
        text = f"{status}: {job['error'].get('message')}" + (f" ({job['error']['param']})"
                                                             if job["error"].get("param") else "")
    elif detailed and status == "paused":
        text = "paused: resume continues from its last checkpoint"
    return Status(OUTCOME.get(status), text)


def _duration(job: dict[str, Any], now: float) -> str:
    start = job.get("created_at")
    end = job.get("finished_at") or (now if job["status"] in (*ACTIVE, "paused") else None)
    if not start or not end:
        return ""
    seconds = max(0, int(end - start))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h {rest // 60:02d}m" if hours else f"{rest // 60}m {rest % 60:02d}s"


def _when(timestamp) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(timestamp)) if timestamp else ""


def render_shell() -> str:
    """GET /jobs: the page without data (title, stylesheet, key form, script)."""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(TITLE)}</title>'
            f"<style>{STYLE}{SHELL_STYLE}</style></head><body>\n"
            f'<p id="jobs-note" role="status"></p>'
            f'<form id="key-form" hidden><label for="api-key">API key of this server</label> '
            f'<input id="api-key" type="password" autocomplete="off" required> <button type="submit">Open the jobs'
            f'</button><span class="muted"> kept in this tab only (sessionStorage)</span></form>\n'
            f'<div id="jobs-page"><h1>{esc(TITLE)}</h1><p class="muted">Loading the jobs\u2026</p></div>\n'
            f"<script>{SCRIPT % {'refresh': REFRESH_MS}}</script></body></html>\n")


SHELL_STYLE = """
#jobs-note:empty { display: none; }
#jobs-note { background: #fff8c5; border: 1px solid #d4a72c; padding: .4rem .8rem; border-radius: 6px; }
#key-form { margin: 1rem 0; padding: .8rem 1rem; border: 1px solid #d0d7de; border-radius: 6px; }
#key-form input { font: inherit; width: 22rem; max-width: 100%; }
"""

SCRIPT = """
(() => {
  const KEY = "tunelab-jobs-api-key", page = document.getElementById("jobs-page");
  const form = document.getElementById("key-form"), note = document.getElementById("jobs-note");
  let timer = null, loadSaid = false;  // loadSaid: the note is load()'s own, cleared once the view loads
  const say = (text, fromLoad = false) => { note.textContent = text; loadSaid = fromLoad; };
  const auth = () => { const key = sessionStorage.getItem(KEY); return key ? {Authorization: "Bearer " + key} : {}; };
  function askKey(text) { clearTimeout(timer); say(text); form.hidden = false; document.getElementById("api-key").focus(); }
  async function load() {
    clearTimeout(timer);
    let response;
    try { response = await fetch("/jobs/view", {headers: auth(), cache: "no-store"}); }
    catch (error) { say("The server did not answer; trying again.", true); timer = setTimeout(load, 5000); return; }
    if (response.status === 401) {
      askKey(sessionStorage.getItem(KEY) ? "The server refused that key." : "This server needs its API key.");
      sessionStorage.removeItem(KEY);
      return;
    }
    if (!response.ok) { say("The server answered " + response.status + "; trying again.", true); timer = setTimeout(load, 5000); return; }
    const view = new DOMParser().parseFromString(await response.text(), "text/html");
    page.replaceChildren(...view.body.childNodes);
    form.hidden = true;
    if (loadSaid) say("");
    if (page.querySelector('button[data-post$="/cancel"]')) timer = setTimeout(load, %(refresh)d);
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("api-key");
    sessionStorage.setItem(KEY, input.value.trim());
    input.value = "";
    say("");
    load();
  });
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-post]");
    if (!button) return;
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    button.disabled = true;
    let response;
    try { response = await fetch(button.dataset.post, {method: "POST", headers: auth()}); }
    catch (error) { say("The server did not answer; nothing was changed."); button.disabled = false; return; }
    if (response.status === 401) { askKey("This server needs its API key."); return; }
    const body = await response.json().catch(() => ({}));
    say(response.ok ? body.id + " is now " + body.status + "." : (body.error && body.error.message) || ("HTTP " + response.status));
    load();
  });
  load();
})();
"""
