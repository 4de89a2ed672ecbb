"""The jobs page as a person uses it: a live jobs server with an API key (in this process, with the
stand-in trainer of the API tests, a real process writing metrics and checkpoints) and headless
Chromium driven over its DevTools pipe. The page asks for the key, then shows the jobs, a job's
loss chart and checkpoints; a mouse click on a running job's cancel button (its confirm dialog
accepted) cancels the job."""
from __future__ import annotations

import httpx2 as httpx
import pytest

from cli_helpers import write_jsonl
from jobs_helpers import FakeTrainerExecutor, chat_lines, jobs_config, jobs_server, openai_client, wait_status

KEY = "page-test-key-0123456789abcdef"
SUPERVISED = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4}}}


@pytest.fixture
def server(tmp_path, tiny_base):
    executor = FakeTrainerExecutor(steps=6)
    with jobs_server(jobs_config(tmp_path / "jobs", tiny_base, api_keys=[KEY]), executor) as live:
        live.executor, live.client = executor, openai_client(live.base_url, KEY)
        yield live


def create_job(server, tmp_path, suffix: str):
    with open(write_jsonl(tmp_path / f"{suffix}.jsonl", chat_lines(16)), "rb") as f:
        training = server.client.files.create(file=f, purpose="fine-tune")
    return server.client.fine_tuning.jobs.create(model="tiny", training_file=training.id, suffix=suffix,
                                                 method=SUPERVISED)


def test_the_shell_is_open_and_the_jobs_need_the_key(server, tmp_path):
    job = create_job(server, tmp_path, "first")
    shell = httpx.get(f"{server.base_url}/jobs")
    assert shell.status_code == 200 and job.id not in shell.text
    assert httpx.get(f"{server.base_url}/jobs/view").status_code == 401
    view = httpx.get(f"{server.base_url}/jobs/view", headers={"Authorization": f"Bearer {KEY}"})
    assert view.status_code == 200 and job.id in view.text and view.headers["cache-control"] == "no-store"


@pytest.mark.slow
def test_the_page_shows_the_jobs_and_its_cancel_button_cancels_a_running_job(browser, server, tmp_path):
    client = server.client
    done = create_job(server, tmp_path, "done")
    wait_status(client, done.id, "succeeded")
    server.executor.steps = 100_000  # the next job runs until it is stopped
    running = create_job(server, tmp_path, "long")
    wait_status(client, running.id, "running")

    with browser.tab(f"{server.base_url}/jobs") as tab:
        tab.wait_for("!document.getElementById('key-form').hidden")  # the server answered 401: asked once
        assert "needs its API key" in tab.evaluate("document.getElementById('jobs-note').textContent")
        tab.evaluate(f"document.getElementById('api-key').value = {KEY!r}")
        tab.click("#key-form button[type=submit]")
        tab.wait_for(f"document.getElementById({running.id!r}) !== null")
        assert tab.evaluate("sessionStorage.getItem('tunelab-jobs-api-key')") == KEY

        page = tab.outline()
        rows = {row[0]: row for row in page.table("jobs")[1:]}
        assert rows[done.id][1] == "succeeded" and rows[done.id][3] == f"ft:tiny:done:{done.id}"
        assert rows[running.id][1] == "running"
        page.assert_charts({f"chart-loss-{done.id}": "path"})  # six steps of train loss, drawn
        assert f"ft:tiny:done:{done.id}:ckpt-step-6" in page.page_text
        page.assert_self_contained()

        tab.click(f'button[data-post="/v1/fine_tuning/jobs/{running.id}/cancel"]')
        assert tab.dialogs and running.id in tab.dialogs[-1]  # asked before cancelling
        assert wait_status(client, running.id, "cancelled").status == "cancelled"
        tab.wait_for(f"document.getElementById({running.id!r}).querySelector('h2').textContent.includes('cancelled')")
        assert tab.evaluate(f"document.getElementById({running.id!r}).querySelector('button') === null")
