"""OpenAI's job fields as tunelab's configuration: "auto", the learning rate, checkpoints, names."""
import pytest

from tunelab.config import JobsConfig
from tunelab.jobs.schemas import JobCreateRequest
from tunelab.jobs.spec import (JobRequestError, fine_tuned_name, job_config, requested_method, resolve_auto,
                               resolve_base)


def method(kind="supervised", **hyper):
    return requested_method(JobCreateRequest(model="m", training_file="f",
                                             method={"type": kind, kind: {"hyperparameters": hyper}}))


@pytest.mark.parametrize("examples, epochs", [(10, 10), (20, 5), (34, 3), (1000, 3), (9000, 2), (30000, 1), (2, 25)])
def test_auto_epochs_follow_openais_rule(examples, epochs):
    assert resolve_auto(method(), examples)["supervised"]["hyperparameters"]["n_epochs"] == epochs


@pytest.mark.parametrize("examples, batch", [(10, 1), (1000, 2), (4000, 8), (100_000, 256), (10_000_000, 256)])
def test_auto_batch_size_is_a_power_of_two_near_a_fifth_of_a_percent(examples, batch):
    assert resolve_auto(method(), examples)["supervised"]["hyperparameters"]["batch_size"] == batch


def test_given_values_are_kept_and_dpo_auto_beta_is_a_tenth():
    resolved = resolve_auto(method("dpo", n_epochs=2, batch_size=4), 50)["dpo"]["hyperparameters"]
    assert resolved == {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 1.0, "beta": 0.1}


def test_the_deprecated_top_level_hyperparameters_are_the_supervised_ones():
    request = JobCreateRequest(model="m", training_file="f", hyperparameters={"n_epochs": 4})
    assert requested_method(request)["supervised"]["hyperparameters"]["n_epochs"] == 4


def test_reinforcement_without_a_grader_is_refused_naming_the_field():
    with pytest.raises(JobRequestError) as info:
        requested_method(JobCreateRequest(model="m", training_file="f", method={"type": "reinforcement"}))
    assert info.value.param == "method.reinforcement.grader"  # tunelab.jobs.methods checks the method


def test_the_job_config_scales_tunelabs_default_rate_and_checkpoints_each_epoch(tmp_path):
    cfg = JobsConfig(method="lora", checkpoints_per_epoch=2, overrides=["train.max_length=64"])
    resolved = resolve_auto(method("dpo", n_epochs=2, batch_size=4, learning_rate_multiplier=0.5, beta=0.3), 40)
    raw = job_config(cfg=cfg, method=resolved, base="/b", prepared=tmp_path / "p", run_dir=tmp_path / "r", seed=9,
                     examples=40, resume=False)
    train = raw["train"]
    assert (train["task"], train["epochs"], train["batch_size"], train["seed"]) == ("dpo", 2, 4, 9)
    assert train["lr"] == pytest.approx(2e-4 * 0.5) and train["dpo"] == {"beta": 0.3}
    assert train["save_steps"] == 5 and train["max_length"] == 64 and train["early_stopping_patience"] is None


def test_names_and_bases():
    assert fine_tuned_name("tiny", "support", "ftjob-x") == "ft:tiny:support:ftjob-x"
    assert fine_tuned_name("tiny", None, "ftjob-x") == "ft:tiny::ftjob-x"
    cfg = JobsConfig(models={"tiny": "/models/tiny"})
    assert resolve_base("tiny", cfg, None) == ("/models/tiny", "tiny")
    assert resolve_base("ft:tiny::j", cfg, {"run_dir": "/jobs/j/run", "base_name": "tiny"}) == ("/jobs/j/run", "tiny")
    with pytest.raises(JobRequestError) as info:
        resolve_base("gpt-4o", cfg, None)
    assert info.value.param == "model" and "tiny" in info.value.message
