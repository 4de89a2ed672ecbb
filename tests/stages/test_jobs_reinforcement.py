"""Reinforcement fine-tuning through the jobs API (issue 13 on issue 12's server), live on
127.0.0.1 with a tiny Llama: OpenAI's graders API mounted on the jobs app (validate, run, 400
naming the grader), a reinforcement job refused at create time for a bad grader or
hyperparameter, and `tunelab train --task rft` with `train.provider: openai` sending the prompts
and the grader as method reinforcement, the server training it with GRPO, then `tunelab eval` of
the remote run (its grader kept beside it) giving the mean reward the server's own run directory
gives evaluated locally."""
from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from cli_helpers import tunelab, write_jsonl
from jobs_helpers import jobs_config, jobs_server, openai_client
from tiny_models import make_task_examples

from tunelab.train.run_dir import RunDir

EXACT = {"type": "string_check", "name": "reversed", "input": "{{ sample.output_text }}",
         "reference": "{{ item.answer }}", "operation": "eq"}
FAST = ["--resamples", "200", "eval.latency.requests=2", "eval.latency.batch_sizes=[1]",
        "eval.generation.max_new_tokens=8"]


def prompts(records):
    return [{"messages": r["messages"][:1], "answer": r["messages"][1]["content"]} for r in records]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_base):
    root = tmp_path_factory.mktemp("rft-jobs")
    cfg = jobs_config(root / "jobs", tiny_base, evaluate=True,
                      overrides=["train.max_length=64", "train.rft.max_completion_length=6", "eval.latency.requests=2",
                                 "eval.latency.batch_sizes=[1]", "eval.generation.max_new_tokens=8"])
    with jobs_server(cfg) as live:
        live.cfg, live.client = cfg, openai_client(live.base_url)
        yield live


def test_graders_api_on_the_jobs_server(server):
    graders = server.client.fine_tuning.alpha.graders
    assert graders.validate(grader=EXACT).grader.name == "reversed"
    assert graders.run(grader=EXACT, model_sample="olleh", item={"answer": "olleh"}).reward == 1.0
    with pytest.raises(openai.BadRequestError) as caught:
        graders.validate(grader={**EXACT, "operation": "sounds_like"})
    assert caught.value.body["param"] == "grader"


def test_a_bad_reinforcement_job_is_a_400_naming_the_field(server, tmp_path):
    rows = prompts(make_task_examples(12, seed=5))
    with open(write_jsonl(tmp_path / "prompts.jsonl", rows), "rb") as f:
        training = server.client.files.create(file=f, purpose="fine-tune")
    for method, param in [({"type": "reinforcement", "reinforcement": {"grader": {**EXACT, "operation": "x"}}},
                           "method.reinforcement.grader"),
                          ({"type": "reinforcement", "reinforcement": {"grader": EXACT, "hyperparameters": {
                              "reasoning_effort": "high"}}}, "method.reinforcement.hyperparameters.reasoning_effort")]:
        with pytest.raises(openai.BadRequestError) as caught:
            server.client.fine_tuning.jobs.create(model="tiny", training_file=training.id, method=method)
        assert caught.value.body["param"] == param


@pytest.mark.slow
def test_provider_openai_rft_run_trains_remotely_and_evaluates_by_its_grader(server, tmp_path):
    records = make_task_examples(36, seed=0)
    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", prompts(records[:24]))
    write_jsonl(data / "val.jsonl", prompts(records[24:28]))
    write_jsonl(data / "test.jsonl", prompts(records[28:]))
    (tmp_path / "grader.json").write_text(json.dumps(EXACT))
    url = f"{server.base_url}/v1"
    tunelab("train", "--task", "rft", "--model", "tiny", "--data", data, "--output", tmp_path / "remote-rft",
            "--epochs", "1", "train.batch_size=4", "train.rft.num_generations=2", f"train.grader={tmp_path / 'grader.json'}",
            "train.provider=openai", f"train.remote.base_url={url}", "train.remote.poll_s=0.2", cwd=tmp_path)
    run = RunDir(tmp_path / "remote-rft")
    job = server.client.fine_tuning.jobs.retrieve(run.remote["job_id"])
    assert job.status == "succeeded" and job.method.type == "reinforcement"
    assert job.method.reinforcement.grader.name == "reversed"
    assert job.method.reinforcement.hyperparameters.batch_size == 2  # 4 sampled answers = 2 prompts x 2
    assert run.task == "rft" and json.loads(Path(run.grader).read_text()) == EXACT
    server_run = Path(server.cfg.jobs_dir) / "jobs" / job.id / "run"
    # the job's own eval step graded its held-out prompts with the job's grader, against the base
    own = json.loads((server_run / "eval" / "report.json").read_text())
    assert own["task"] == "rft" and "reward" in own["comparisons"]["base"] and own["reward"]["grader"]["name"] == "reversed"
    tunelab("eval", tmp_path / "remote-rft", "--out", tmp_path / "eval", *FAST, cwd=tmp_path)
    tunelab("eval", server_run, "--data", data, "--out", tmp_path / "eval-server-run", *FAST, cwd=tmp_path)
    remote = json.loads((tmp_path / "eval" / "report.json").read_text())
    local = json.loads((tmp_path / "eval-server-run" / "report.json").read_text())
    assert remote["task"] == local["task"] == "rft"
    assert remote["metrics"]["reward"] == pytest.approx(local["metrics"]["reward"], abs=1e-12)
    assert (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines() == \
        (tmp_path / "eval-server-run" / "predictions.jsonl").read_text().splitlines()
