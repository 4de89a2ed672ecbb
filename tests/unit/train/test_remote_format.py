"""Canonical records as OpenAI training-file lines and the train config as a job's `method`
(tunelab.train.remote_format), golden values."""
import pytest

from tunelab.config import TrainConfig
from tunelab.errors import TunelabError
from tunelab.train.remote_format import check_remote_config, job_method, job_suffix, openai_line

CHAT = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                     {"role": "assistant", "content": "a", "weight": 1}], "meta": {"id": 3}}
EXACT = {"type": "string_check", "name": "exact", "input": "{{ sample.output_text }}",
         "reference": "{{ item.answer }}", "operation": "eq"}


def test_chat_preference_and_prompt_lines():
    assert openai_line(CHAT, "generative") == {"messages": CHAT["messages"]}
    assert openai_line({"prompt": "hi", "chosen": "good", "rejected": "bad"}, "preference") == {
        "input": {"messages": [{"role": "user", "content": "hi"}]},
        "preferred_output": [{"role": "assistant", "content": "good"}],
        "non_preferred_output": [{"role": "assistant", "content": "bad"}]}
    prompt = {"messages": [{"role": "user", "content": "q"}], "answer": "INV-1", "meta": {"id": 1}}
    assert openai_line(prompt, "prompt") == {"messages": [{"role": "user", "content": "q"}], "answer": "INV-1"}
    with pytest.raises(TunelabError, match="classification"):
        openai_line({"text": "t", "label": "l"}, "classification")


def test_hyperparameters_mapped_from_the_train_config():
    tc = TrainConfig(epochs=3, batch_size=4, grad_accum=2, method="lora")
    assert job_method(tc, "generative") == {"type": "supervised", "supervised": {"hyperparameters": {
        "n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": "auto"}}}
    tc = TrainConfig(epochs=1, batch_size=8, lr=1e-4, method="lora", dpo={"beta": 0.2})
    assert job_method(tc, "preference")["dpo"]["hyperparameters"] == {
        "n_epochs": 1, "batch_size": 8, "learning_rate_multiplier": pytest.approx(0.5), "beta": 0.2}  # 1e-4 / 2e-4
    tc = TrainConfig(epochs=2, batch_size=8, method="full", lr=2e-6, rft={"num_generations": 4}, eval_steps=5)
    method = job_method(tc, "prompt", EXACT)
    assert method == {"type": "reinforcement", "reinforcement": {"grader": EXACT, "hyperparameters": {
        "n_epochs": 2, "batch_size": 2, "learning_rate_multiplier": pytest.approx(2.0), "compute_multiplier": 0.5,
        "eval_interval": 5}}}


def test_settings_a_job_cannot_take_are_refused():
    for settings in ({"epochs": 1.5}, {"stages": [{"data": "d"}]}, {"mix": [{"data": "d"}]},
                     {"regularization": "ewc"}):
        with pytest.raises(TunelabError, match="provider openai"):
            check_remote_config(TrainConfig(data="d", **settings))


def test_suffix_is_the_run_name_as_openai_allows_it():
    assert job_suffix(TrainConfig(), "my run/v2") == "my-run-v2"
    assert job_suffix(TrainConfig(remote={"suffix": "fixed"}), "x") == "fixed"


class RecordingJobs:
    """The one call on_interrupt may make (jobs.cancel), recorded."""

    def __init__(self):
        self.cancelled = []

    def cancel(self, job_id):
        from types import SimpleNamespace
        self.cancelled.append(job_id)
        return SimpleNamespace(id=job_id, status="cancelled")


def test_ctrl_c_at_a_terminal_cancels_or_detaches_as_answered(monkeypatch):
    from types import SimpleNamespace

    from tunelab.train.remote import on_interrupt
    jobs = RecordingJobs()
    client = SimpleNamespace(fine_tuning=SimpleNamespace(jobs=jobs))
    running = SimpleNamespace(id="ftjob-1", status="running")
    monkeypatch.setattr("builtins.input", lambda prompt: "c")
    job, message = on_interrupt(client, running, "http://h/v1", interactive=True)
    assert jobs.cancelled == ["ftjob-1"] and job.status == "cancelled" and message.startswith("cancelled job ftjob-1")
    monkeypatch.setattr("builtins.input", lambda prompt: "d")
    job, message = on_interrupt(client, running, "http://h/v1", interactive=True)
    assert jobs.cancelled == ["ftjob-1"] and job is running and message.startswith("detached: job ftjob-1")
    job, message = on_interrupt(client, running, "http://h/v1", interactive=False)  # no terminal: never asks
    assert jobs.cancelled == ["ftjob-1"] and "--resume" in message
