"""The jobs server is durable with real training: a server stopped mid-job and started again
resumes the job from its last checkpoint and ends with the very weights an uninterrupted job
ends with; of two jobs training at once, the one whose process is killed with SIGKILL fails
with a clear error and the other succeeds."""
from __future__ import annotations

import os
import signal

import pytest
from safetensors.torch import load_file

from cli_helpers import write_jsonl
from jobs_helpers import chat_lines, jobs_config, jobs_server, openai_client, wait_status
from serve_helpers import wait_until

pytestmark = pytest.mark.slow
METHOD = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": 4,
                                                                    "learning_rate_multiplier": 10}}}


def upload(client, path):
    with open(path, "rb") as f:
        return client.files.create(file=f, purpose="fine-tune")


def weights(run_dir):
    return load_file(run_dir / "adapter_model.safetensors")


def test_a_restarted_server_resumes_the_job_to_the_weights_of_an_uninterrupted_run(tmp_path, tiny_base):
    cfg = jobs_config(tmp_path / "jobs", tiny_base, checkpoints_per_epoch=2)
    with jobs_server(cfg) as live:
        client = openai_client(live.base_url)
        training = upload(client, write_jsonl(tmp_path / "train.jsonl", chat_lines(20)))
        interrupted = client.fine_tuning.jobs.create(model="tiny", training_file=training.id, seed=5, method=METHOD)
        wait_until(lambda: client.fine_tuning.jobs.checkpoints.list(interrupted.id).data, "a first checkpoint",
                   guard_s=300)
        pid = live.app.state.store.job(interrupted.id)["pid"]
        assert client.fine_tuning.jobs.retrieve(interrupted.id).status == "running"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the stopped server stopped the training process
    with jobs_server(cfg) as live:
        client = openai_client(live.base_url)
        done = wait_status(client, interrupted.id, "succeeded", "failed")
        assert done.status == "succeeded", done.error
        messages = [e.message for e in client.fine_tuning.jobs.list_events(interrupted.id, limit=500).data]
        assert "Fine-tuning job resumed from its last checkpoint" in messages
        uninterrupted = client.fine_tuning.jobs.create(model="tiny", training_file=training.id, seed=5, method=METHOD)
        assert wait_status(client, uninterrupted.id, "succeeded", "failed").status == "succeeded"
    resumed, straight = (weights(tmp_path / "jobs" / "jobs" / job.id / "run") for job in (interrupted, uninterrupted))
    assert resumed.keys() == straight.keys() and resumed
    for name in straight:
        assert resumed[name].equal(straight[name]), name


def test_one_of_two_jobs_killed_with_sigkill_fails_clearly_and_the_other_succeeds(tmp_path, tiny_base):
    with jobs_server(jobs_config(tmp_path / "jobs", tiny_base, max_concurrent=2)) as live:
        client = openai_client(live.base_url)
        training = upload(client, write_jsonl(tmp_path / "train.jsonl", chat_lines(20)))
        doomed, survivor = (client.fine_tuning.jobs.create(model="tiny", training_file=training.id, method=METHOD)
                            for _ in range(2))
        wait_status(client, doomed.id, "running")
        wait_status(client, survivor.id, "running")
        os.kill(live.app.state.store.job(doomed.id)["pid"], signal.SIGKILL)
        failed = wait_status(client, doomed.id, "failed")
        assert failed.error.code == "training_failed"
        assert failed.error.message.startswith("the training process was killed by SIGKILL")
        done = wait_status(client, survivor.id, "succeeded", "failed")
        assert done.status == "succeeded", done.error
        assert done.fine_tuned_model in [m.id for m in client.models.list().data]
