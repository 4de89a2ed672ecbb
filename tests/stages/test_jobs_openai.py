"""`tunelab jobs serve` as a user runs it, driven by the official `openai` client on 127.0.0.1
with a tiny local Llama: upload, a supervised job (trained and evaluated against its base), a
DPO job on its result (evaluated on its held-out pairs), the job routes (list, retrieve, events, checkpoints, pause, resume,
cancel), and chat completions from the fine-tuned models, equal to what `tunelab serve` of the
same run directory answers."""
from __future__ import annotations

import json

import openai
import pytest
import yaml

from cli_helpers import write_jsonl
from jobs_helpers import chat_lines, dpo_lines, jobs_cli_server, openai_client, wait_status
from serve_helpers import answered_alone, wait_until

pytestmark = pytest.mark.slow
PROMPTS = [[{"role": "user", "content": word}] for word in ("abc", "lamp", "xyzq")]


def upload(client, path):
    with open(path, "rb") as f:
        return client.files.create(file=f, purpose="fine-tune")


@pytest.mark.timeout(1200)
def test_the_openai_client_fine_tunes_follows_and_chats_with_a_local_model(tmp_path, tiny_base):
    config = tmp_path / "jobs.yaml"
    config.write_text(yaml.safe_dump({"jobs": {"models": {"tiny": str(tiny_base)}, "poll_s": 0.2,
                                               "overrides": ["train.max_length=64", "eval.generation.max_new_tokens=8"]}}))
    jobs_dir = tmp_path / "jobs"
    with jobs_cli_server(jobs_dir, str(config)) as base_url:
        client = openai_client(base_url)
        training = upload(client, write_jsonl(tmp_path / "train.jsonl", chat_lines(24)))
        validation = upload(client, write_jsonl(tmp_path / "val.jsonl", chat_lines(6, seed=9)))
        sft = client.fine_tuning.jobs.create(
            model="tiny", training_file=training.id, validation_file=validation.id, suffix="rev", seed=3,
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 8,
                                                                                "learning_rate_multiplier": 5}}})
        assert sft.status == "validating_files"
        done = wait_status(client, sft.id, "succeeded", "failed")
        assert done.status == "succeeded", done.error
        assert done.fine_tuned_model == f"ft:tiny:rev:{sft.id}" and done.trained_tokens > 0
        assert client.fine_tuning.jobs.retrieve(sft.id).model_dump() == done.model_dump()
        assert sft.id in [j.id for j in client.fine_tuning.jobs.list().data]
        events = client.fine_tuning.jobs.list_events(sft.id, limit=200).data[::-1]
        metrics = [e.data for e in events if e.type == "metrics"]
        assert {m["step"] for m in metrics} == set(range(1, 7))
        assert any("valid_loss" in m for m in metrics) and all("total_steps" in m for m in metrics)
        assert all(isinstance(m.get("train_mean_token_accuracy", 0.0), float) for m in metrics)
        checkpoints = client.fine_tuning.jobs.checkpoints.list(sft.id).data
        assert [c.step_number for c in checkpoints] == [6, 3]
        run_dir = jobs_dir / "jobs" / sft.id / "run"
        assert json.loads((run_dir / "eval" / "report.json").read_text())["verdict"]
        assert (run_dir / "manifest.json").is_file() and (run_dir / "checkpoints" / "checkpoint-3").is_dir()

        # the fine-tuned model answers at once, as `tunelab serve` of its run directory does
        assert done.fine_tuned_model in [m.id for m in client.models.list().data]
        answers = [client.chat.completions.create(model=done.fine_tuned_model, messages=messages, max_tokens=6,
                                                  temperature=0).choices[0].message.content for messages in PROMPTS]
        assert answers == answered_alone(run_dir, PROMPTS, max_tokens=6)
        # and so does its earlier checkpoint, as OpenAI's checkpoint models do
        earlier = checkpoints[1].fine_tuned_model_checkpoint
        assert earlier == f"{done.fine_tuned_model}:ckpt-step-3"
        assert [client.chat.completions.create(model=earlier, messages=m, max_tokens=6, temperature=0)
                .choices[0].message.content for m in PROMPTS] \
            == answered_alone(run_dir / "checkpoints" / "checkpoint-3", PROMPTS, max_tokens=6)

        # DPO on the supervised result
        preferences = upload(client, write_jsonl(tmp_path / "dpo.jsonl", dpo_lines(16, seed=4)))
        dpo = client.fine_tuning.jobs.create(model=done.fine_tuned_model, training_file=preferences.id, suffix="pref",
                                             method={"type": "dpo", "dpo": {"hyperparameters": {
                                                 "n_epochs": 1, "batch_size": 8, "beta": 0.2}}})
        dpo_done = wait_status(client, dpo.id, "succeeded", "failed")
        assert dpo_done.status == "succeeded", dpo_done.error
        assert dpo_done.fine_tuned_model == f"ft:tiny:pref:{dpo.id}"
        assert dpo_done.method.dpo.hyperparameters.beta == 0.2
        dpo_run = jobs_dir / "jobs" / dpo.id / "run"
        # evaluated on its held-out pairs against the base (preference accuracy, margin, implicit reward)
        dpo_report = json.loads((dpo_run / "eval" / "report.json").read_text())
        assert dpo_report["task"] == "preference" and dpo_report["preference"]["reference"] == "base"
        assert "preference_accuracy" in dpo_report["comparisons"]["base"]
        assert [client.chat.completions.create(model=dpo_done.fine_tuned_model, messages=m, max_tokens=6,
                                               temperature=0).choices[0].message.content for m in PROMPTS] \
            == answered_alone(dpo_run, PROMPTS, max_tokens=6)

        # pause, resume and cancel a longer job
        long = client.fine_tuning.jobs.create(
            model="tiny", training_file=training.id,
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 50, "batch_size": 4}}})
        wait_status(client, long.id, "running")
        wait_until(lambda: client.fine_tuning.jobs.checkpoints.list(long.id).data, "a checkpoint", guard_s=300)
        assert client.fine_tuning.jobs.pause(long.id).status == "pausing"
        wait_status(client, long.id, "paused")
        # interrupted as by Ctrl-C, training saved a checkpoint of the step it had reached
        last_step = max(e.data["step"] for e in client.fine_tuning.jobs.list_events(long.id, limit=1000).data
                        if e.type == "metrics" and "train_loss" in e.data)
        assert client.fine_tuning.jobs.checkpoints.list(long.id).data[0].step_number == last_step
        assert client.fine_tuning.jobs.resume(long.id).status == "queued"
        wait_status(client, long.id, "running")
        assert client.fine_tuning.jobs.cancel(long.id).status == "cancelled"
        kept = client.fine_tuning.jobs.checkpoints.list(long.id).data
        assert kept and (jobs_dir / "jobs" / long.id / "run" / "checkpoints" / f"checkpoint-{kept[0].step_number}").is_dir()
        with pytest.raises(openai.BadRequestError):
            client.fine_tuning.jobs.resume(long.id)
        messages = [e.message for e in client.fine_tuning.jobs.list_events(long.id, limit=500).data]
        assert "Fine-tuning job resumed from its last checkpoint" in messages
