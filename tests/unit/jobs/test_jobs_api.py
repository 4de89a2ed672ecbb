"""The jobs server's API through the official `openai` client, with a stand-in trainer (a real
process that writes metrics and checkpoints the way `tunelab train` does): OpenAI's objects,
bad requests as 400s naming the field, bad files as failed jobs naming the line, and the
worker's statuses (queue, cancel, pause, resume, a killed process, a restart)."""
from __future__ import annotations

import json
import os
import signal

import openai
import pytest

from cli_helpers import write_jsonl
from jobs_helpers import (FakeTrainerExecutor, chat_lines, dpo_lines, jobs_config, jobs_server, openai_client,
                          wait_status)
from serve_helpers import wait_until

SUPERVISED = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4}}}


@pytest.fixture
def server(tmp_path, tiny_base):
    executor = FakeTrainerExecutor()
    with jobs_server(jobs_config(tmp_path / "jobs", tiny_base), executor) as live:
        live.executor, live.client = executor, openai_client(live.base_url)
        yield live


def upload(client, path, purpose="fine-tune"):
    with open(path, "rb") as f:
        return client.files.create(file=f, purpose=purpose)


def test_files_upload_list_retrieve_content_delete(server, tmp_path):
    client = server.client
    path = write_jsonl(tmp_path / "train.jsonl", chat_lines(12))
    uploaded = upload(client, path)
    assert uploaded.object == "file" and uploaded.purpose == "fine-tune" and uploaded.filename == "train.jsonl"
    assert uploaded.bytes == path.stat().st_size and uploaded.id.startswith("file-")
    assert [f.id for f in client.files.list().data] == [uploaded.id]
    assert client.files.retrieve(uploaded.id).bytes == uploaded.bytes
    assert client.files.content(uploaded.id).read() == path.read_bytes()
    assert client.files.delete(uploaded.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


def test_a_job_goes_from_validating_to_succeeded_with_events_checkpoints_and_a_metrics_file(server, tmp_path):
    client = server.client
    training = upload(client, write_jsonl(tmp_path / "train.jsonl", chat_lines(16)))
    job = client.fine_tuning.jobs.create(model="tiny", training_file=training.id, suffix="demo", seed=7,
                                         method=SUPERVISED, metadata={"team": "a"})
    assert job.status == "validating_files" and job.object == "fine_tuning.job" and job.seed == 7
    done = wait_status(client, job.id, "succeeded")
    assert done.fine_tuned_model == f"ft:tiny:demo:{job.id}"
    assert done.trained_tokens == 60 and done.finished_at is not None and done.error is None
    assert done.hyperparameters.n_epochs == 1 and done.method.supervised.hyperparameters.learning_rate_multiplier == 1
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data[::-1]
    messages = [e.message for e in events if e.type == "message"]
    assert messages[0] == f"Created fine-tuning job: {job.id}" and messages[-1] == "The job has successfully completed"
    metrics = [e.data for e in events if e.type == "metrics"]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    assert metrics[-1]["train_loss"] == pytest.approx(1 / 6) and metrics[-1]["total_steps"] == 4
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [6, 4, 2]
    assert checkpoints[0].fine_tuned_model_checkpoint == f"ft:tiny:demo:{job.id}:ckpt-step-6"
    assert checkpoints[1].metrics.train_loss == pytest.approx(1 / 4)
    csv = client.files.content(done.result_files[0]).read().decode().splitlines()
    assert csv[0] == "step,train_loss,train_mean_token_accuracy,valid_loss,valid_mean_token_accuracy"
    assert len(csv) == 7 and csv[1].startswith("1,1.0,0.1")
    # list, cursor and metadata filter
    other = client.fine_tuning.jobs.create(model="tiny", training_file=training.id, method=SUPERVISED,
                                           metadata={"team": "b"})
    assert [j.id for j in client.fine_tuning.jobs.list().data] == [other.id, job.id]
    assert [j.id for j in client.fine_tuning.jobs.list(after=other.id).data] == [job.id]
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"team": "a"}).data] == [job.id]
    page = client.fine_tuning.jobs.list(limit=1)
    assert page.has_more is True and len(page.data) == 1


@pytest.mark.parametrize("body, param", [
    ({"model": "gpt-4o-mini"}, "model"),
    ({"training_file": "file-missing"}, "training_file"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}}},
     "method.supervised.hyperparameters.n_epochs"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 1000}}}},
     "method.supervised.hyperparameters.batch_size"),
    ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 5}}}}, "method.dpo.hyperparameters.beta"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"learning_rate_multiplier": -1}}}},
     "method.supervised.hyperparameters.learning_rate_multiplier"),
    ({"suffix": "no spaces allowed"}, "suffix"),
])
def test_a_bad_create_request_is_a_400_naming_the_field(server, tmp_path, body, param):
    training = upload(server.client, write_jsonl(tmp_path / "train.jsonl", chat_lines(12)))
    with pytest.raises(openai.BadRequestError) as info:
        server.client.fine_tuning.jobs.create(**{"model": "tiny", "training_file": training.id, **body})
    assert info.value.status_code == 400
    assert info.value.body["param"] == param, info.value.body
    if param.startswith("method."):
        assert info.value.body["message"].startswith(f"{param} must be 'auto' or a "), info.value.body
    assert server.client.fine_tuning.jobs.list().data == []


@pytest.mark.parametrize("lines, method, words", [
    (chat_lines(12)[:5] + [b"{not json"] + chat_lines(12)[5:], "supervised", ["training file line 6", "JSON"]),
    (chat_lines(12), "dpo", ["method dpo trains on preference examples", "chat examples"]),
    (dpo_lines(12), "supervised", ["method supervised trains on chat examples"]),
    (chat_lines(5), "supervised", ["has 5 usable examples", "at least 10"]),
    ([{"messages": [{"role": "user", "content": "abc"}, {"role": "assistant", "content": "cba", "weight": 3}]}]
     + chat_lines(12), "supervised", ["training file line 1", "weight 3"]),
])
def test_a_bad_training_file_fails_the_job_naming_the_line_and_the_server_stays_up(server, tmp_path, lines, method,
                                                                                   words):
    training = upload(server.client, write_jsonl(tmp_path / "train.jsonl", lines))
    job = server.client.fine_tuning.jobs.create(model="tiny", training_file=training.id, method={"type": method})
    failed = wait_status(server.client, job.id, "failed")
    assert failed.error.param == "training_file" and failed.error.code == "invalid_training_file"
    for word in words:
        assert word in failed.error.message, failed.error.message
    assert server.executor.started == []
    assert server.client.files.list().data  # still answering


def test_jobs_queue_one_at_a_time_and_cancel_stops_the_process_keeping_checkpoints(tmp_path, tiny_base):
    executor = FakeTrainerExecutor(steps=400)
    with jobs_server(jobs_config(tmp_path / "jobs", tiny_base, max_concurrent=1), executor) as live:
        client = openai_client(live.base_url)
        training = upload(client, write_jsonl(tmp_path / "train.jsonl", chat_lines(12)))
        first = client.fine_tuning.jobs.create(model="tiny", training_file=training.id, method=SUPERVISED)
        second = client.fine_tuning.jobs.create(model="tiny", training_file=training.id, method=SUPERVISED)
        wait_status(client, first.id, "running")
        wait_until(lambda: client.fine_tuning.jobs.checkpoints.list(first.id).data, "a checkpoint")
        wait_until(lambda: client.fine_tuning.jobs.retrieve(first.id).estimated_finish, "an estimated finish")
        wait_status(client, second.id, "queued")  # validated, then held back by max_concurrent
        pid = live.app.state.store.job(first.id)["pid"]
        assert client.fine_tuning.jobs.cancel(first.id).status == "cancelled"
        wait_until(lambda: not alive(pid), "the cancelled job's process ended")
        wait_status(client, second.id, "running")
        kept = client.fine_tuning.jobs.checkpoints.list(first.id).data
        assert kept and all(os.path.isdir(live.app.state.store.checkpoints(first.id)[0]["path"]) for _ in kept)
        assert client.fine_tuning.jobs.retrieve(first.id).estimated_finish is None
        with pytest.raises(openai.BadRequestError):
            client.fine_tuning.jobs.cancel(first.id)


def test_pause_checkpoints_and_stops_the_job_and_resume_continues_from_that_checkpoint(tmp_path, tiny_base):
    executor = FakeTrainerExecutor(steps=400)
    with jobs_server(jobs_config(tmp_path / "jobs", tiny_base), executor) as live:
        client = openai_client(live.base_url)
        training = upload(client, write_jsonl(tmp_path / "train.jsonl", chat_lines(12)))
        job = client.fine_tuning.jobs.create(model="tiny", training_file=training.id, method=SUPERVISED)
        wait_status(client, job.id, "running")
        wait_until(lambda: client.fine_tuning.jobs.checkpoints.list(job.id).data, "a checkpoint")
        assert client.fine_tuning.jobs.pause(job.id).status in ("pausing", "paused")
        wait_status(client, job.id, "paused")
        # the trainer was interrupted as by Ctrl-C: it saved a checkpoint of the step it had reached
        last_step = max(e.data["step"] for e in client.fine_tuning.jobs.list_events(job.id, limit=1000).data
                        if e.type == "metrics")
        assert client.fine_tuning.jobs.checkpoints.list(job.id).data[0].step_number == last_step
        with pytest.raises(openai.BadRequestError):
            client.fine_tuning.jobs.pause(job.id)
        executor.steps = 2
        assert client.fine_tuning.jobs.resume(job.id).status in ("queued", "running")  # the worker may take it at once
        wait_status(client, job.id, "succeeded")
    assert executor.started[0][1][-1].endswith("config.yaml")
    assert executor.started[1][1][-1] == "train.resume=true"


@pytest.mark.slow  # trains, interrupts and resumes, or starts processes (seconds)
def test_a_job_whose_process_is_killed_fails_with_a_clear_error_and_the_other_succeeds(tmp_path, tiny_base):
    executor = FakeTrainerExecutor(steps=60)
    with jobs_server(jobs_config(tmp_path / "jobs", tiny_base, max_concurrent=2), executor) as live:
        client = openai_client(live.base_url)
        training = upload(client, write_jsonl(tmp_path / "train.jsonl", chat_lines(12)))
        doomed, other = (client.fine_tuning.jobs.create(model="tiny", training_file=training.id, method=SUPERVISED)
                         for _ in range(2))
        wait_status(client, doomed.id, "running")
        wait_status(client, other.id, "running")
        os.kill(live.app.state.store.job(doomed.id)["pid"], signal.SIGKILL)
        failed = wait_status(client, doomed.id, "failed")
        assert failed.error.code == "training_failed"
        assert failed.error.message.startswith("the training process was killed by SIGKILL")
        assert wait_status(client, other.id, "succeeded").fine_tuned_model


def test_a_failing_training_process_fails_the_job_with_its_error_sentence(tmp_path, tiny_base):
    executor = FakeTrainerExecutor(steps=1, exit_code=2)
    with jobs_server(jobs_config(tmp_path / "jobs", tiny_base), executor) as live:
        client = openai_client(live.base_url)
        training = upload(client, write_jsonl(tmp_path / "train.jsonl", chat_lines(12)))
        job = client.fine_tuning.jobs.create(model="tiny", training_file=training.id, method=SUPERVISED)
        failed = wait_status(client, job.id, "failed")
    assert failed.error.code == "training_failed" and "exited with code 2" in failed.error.message


def test_a_restarted_server_queues_its_running_job_again_to_resume_it(tmp_path, tiny_base):
    cfg = jobs_config(tmp_path / "jobs", tiny_base)
    executor = FakeTrainerExecutor(steps=400)
    with jobs_server(cfg, executor) as live:
        client = openai_client(live.base_url)
        training = upload(client, write_jsonl(tmp_path / "train.jsonl", chat_lines(12)))
        job = client.fine_tuning.jobs.create(model="tiny", training_file=training.id, method=SUPERVISED)
        wait_until(lambda: client.fine_tuning.jobs.checkpoints.list(job.id).data, "a checkpoint")
        pid = live.app.state.store.job(job.id)["pid"]
    assert not alive(pid), "a stopping server stops its jobs' processes"
    executor = FakeTrainerExecutor(steps=2)
    with jobs_server(cfg, executor) as live:
        client = openai_client(live.base_url)
        assert wait_status(client, job.id, "succeeded").fine_tuned_model
        events = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert executor.started[0][1][-1] == "train.resume=true"
    assert "Fine-tuning job resumed from its last checkpoint" in events


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_with_api_keys_every_route_needs_one_the_served_models_too(tmp_path, tiny_base):
    key = "k" * 32
    with jobs_server(jobs_config(tmp_path / "jobs", tiny_base, api_keys=[key]), FakeTrainerExecutor()) as live:
        for path in ("/v1/files", "/v1/fine_tuning/jobs", "/v1/models"):
            with pytest.raises(openai.AuthenticationError):
                openai_client(live.base_url, "wrong").get(path, cast_to=object)
        client = openai_client(live.base_url, key)
        assert client.files.list().data == []
        assert [m.id for m in client.models.list().data] == ["tiny"]


@pytest.mark.slow  # starts a process of its own (seconds)
def test_without_keys_the_server_refuses_a_public_address(tmp_path):
    from cli_helpers import tunelab
    proc = tunelab("jobs", "serve", "--host", "0.0.0.0", "--jobs-dir", tmp_path / "jobs", check=False, timeout=120)
    assert proc.returncode == 2 and "refusing to listen on 0.0.0.0 without API keys" in proc.stderr


def test_a_training_process_a_crashed_server_left_behind_is_stopped_before_its_job_resumes(tmp_path, tiny_base):
    """After a server crash (no graceful stop) its jobs' processes may still run: the next server
    stops them, so two trainers never write one run directory, and queues the jobs to resume."""
    import subprocess
    import sys

    from tunelab.jobs.executor import LocalProcessExecutor
    from tunelab.jobs.store import JobStore
    from tunelab.jobs.worker import Worker
    cfg = jobs_config(tmp_path / "jobs", tiny_base)
    store = JobStore(cfg.jobs_dir)
    job = store.add_job(model="tiny", base=str(tiny_base), base_name="tiny", training_file="file-x", seed=0,
                        method={"type": "supervised", "supervised": {"hyperparameters": {}}}, hyperparameters={})
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", job["id"]],
                              start_new_session=True)
    store.update_job(job["id"], status="running", phase="train", pid=orphan.pid)
    Worker(cfg, store, LocalProcessExecutor()).recover()
    assert orphan.wait(timeout=30) == -signal.SIGKILL
    assert (store.job(job["id"])["status"], store.job(job["id"])["resume"]) == ("queued", 1)


@pytest.mark.slow  # starts training processes and waits for their steps (seconds)
def test_a_job_resumed_after_a_crash_lists_each_steps_metrics_once(tmp_path, tiny_base):
    """A server that crashed leaves a trainer that logged steps past its last checkpoint; the next
    server stops it (no checkpoint on SIGKILL) and the resumed trainer logs those steps again:
    the job's events still hold every step's metrics once, in order."""
    from tunelab.jobs.store import JobStore
    from tunelab.jobs.worker import Worker, job_dir
    cfg = jobs_config(tmp_path / "jobs", tiny_base)
    store = JobStore(cfg.jobs_dir)
    job = store.add_job(model="tiny", base=str(tiny_base), base_name="tiny", training_file="file-x", seed=0,
                        method={"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 1,
                                                                                         "n_epochs": 1}}},
                        hyperparameters={})
    job_dir(cfg.jobs_dir, job["id"]).mkdir(parents=True)
    store.update_job(job["id"], status="queued")
    crashed = Worker(cfg, store, FakeTrainerExecutor(steps=400))

    def logged_past_a_checkpoint():
        crashed.tick()
        steps = [e["data"]["step"] for e in store.events(job["id"], limit=1000) if e["type"] == "metrics"]
        return steps and max(steps) % 2 == 1 and max(steps) > 2  # checkpoints are every 2 steps
    wait_until(logged_past_a_checkpoint, "a step logged after a checkpoint")
    # the crash: this worker looks no more; its trainer runs on until the next server stops it
    restarted = Worker(cfg, store, FakeTrainerExecutor(steps=3))
    restarted.recover()
    wait_until(lambda: restarted.tick() or store.job(job["id"])["status"] == "succeeded", "the resumed job to succeed")
    steps = [e["data"]["step"] for e in reversed(store.events(job["id"], limit=1000)) if e["type"] == "metrics"]
    log_steps = [json.loads(line)["step"] for line in (job_dir(cfg.jobs_dir, job["id"]) / "run" / "metrics.jsonl")
                 .read_text().splitlines()]
    assert len(log_steps) > len(set(log_steps)), "the resumed trainer logged some steps again"
    assert steps == list(range(1, max(log_steps) + 1))
