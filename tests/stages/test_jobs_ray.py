"""`jobs.executor: ray` end to end: `tunelab jobs serve` joins a local Ray head on 127.0.0.1 (a
cluster of one node, the jobs directory shared by being on the same disk) and runs a real job
through it, as the official `openai` client sees it: the tiny Llama fine-tuned by `tunelab train`
and evaluated by `tunelab eval`, both Ray tasks; its metrics events, checkpoints and fine-tuned
model, which the same server answers; the jobs page shows the eval verdict; a second job is
cancelled while it runs on the cluster."""
from __future__ import annotations

from pathlib import Path

import httpx2 as httpx
import pytest
import yaml

from cli_helpers import write_jsonl
from jobs_helpers import chat_lines, jobs_cli_server, openai_client, wait_status
from serve_helpers import wait_until

SUPERVISED = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4}}}


@pytest.mark.slow
def test_a_job_runs_on_the_ray_cluster_through_the_server(ray_head, tiny_base, tmp_path):
    config = tmp_path / "jobs.yaml"
    config.write_text(yaml.safe_dump({"jobs": {
        "executor": "ray", "ray_address": ray_head, "models": {"tiny": str(tiny_base)}, "poll_s": 0.2,
        "cancel_grace_s": 5, "overrides": ["train.max_length=64", "eval.resamples=100"]}}))
    with jobs_cli_server(tmp_path / "jobs", str(config)) as base_url:
        client = openai_client(base_url)
        with open(write_jsonl(tmp_path / "train.jsonl", chat_lines(40)), "rb") as f:
            training = client.files.create(file=f, purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="tiny", training_file=training.id, suffix="ray", method=SUPERVISED)
        done = wait_status(client, job.id, "succeeded")
        assert done.fine_tuned_model == f"ft:tiny:ray:{job.id}" and done.trained_tokens > 0
        events = client.fine_tuning.jobs.list_events(job.id, limit=1000).data
        assert [e.data["step"] for e in events if e.type == "metrics"]  # read from the run the Ray task wrote
        assert client.fine_tuning.jobs.checkpoints.list(job.id).data
        answer = client.chat.completions.create(model=done.fine_tuned_model, max_tokens=4,
                                                messages=[{"role": "user", "content": "abc"}])
        assert answer.model == done.fine_tuned_model and answer.choices[0].message.content is not None
        assert [e.message for e in events if e.level != "info"] == []  # the eval task too ran and succeeded
        page = httpx.get(f"{base_url}/jobs/view").text
        assert "Evaluation: " in page and "no report for this job" not in page  # its verdict on the page

        long = client.fine_tuning.jobs.create(model="tiny", training_file=training.id, method={
            "type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 50, "batch_size": 1}}})
        wait_until(lambda: any(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(long.id).data),
                   "the second job trains on the cluster", guard_s=300)
        assert job_processes(long.id)  # its trainer, started by the Ray task
        client.fine_tuning.jobs.cancel(long.id)
        assert wait_status(client, long.id, "cancelled").status == "cancelled"
        wait_until(lambda: "Job cancelled; its checkpoints are kept" in
                   [e.message for e in client.fine_tuning.jobs.list_events(long.id).data],
                   "the worker saw the Ray task end", guard_s=120)
        wait_until(lambda: not job_processes(long.id), "no process of the cancelled job is left", guard_s=60)


def job_processes(job_id: str) -> list[int]:
    """The processes of this machine whose command line names the job (its config.yaml path)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and job_id.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:  # it ended while we looked
            continue
    return found
