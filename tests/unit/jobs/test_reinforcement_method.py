"""OpenAI's `method` objects as train: settings (tunelab.jobs.methods): reinforcement's grader and
hyperparameters checked field by field, and the train keys each method sets (golden values)."""
from __future__ import annotations

import json

import pytest

from tunelab.config import validate_config
from tunelab.jobs.methods import MethodError, reinforcement_method, train_section_for_method

EXACT = {"type": "string_check", "name": "exact", "input": "{{ sample.output_text }}",
         "reference": "{{ item.answer }}", "operation": "eq"}


def test_requested_reinforcement_keeps_the_grader_and_auto():
    method = reinforcement_method({"grader": EXACT, "hyperparameters": {"n_epochs": 2, "compute_multiplier": 0.5}})
    hyper = method["reinforcement"]["hyperparameters"]
    assert method["type"] == "reinforcement" and method["reinforcement"]["grader"] == EXACT
    assert hyper["n_epochs"] == 2 and hyper["compute_multiplier"] == 0.5 and hyper["batch_size"] == "auto"


@pytest.mark.parametrize("section, param", [
    (None, "method.reinforcement.grader"),
    ({"grader": {**EXACT, "operation": "sounds_like"}}, "method.reinforcement.grader"),
    ({"grader": {"type": "python", "name": "p", "source": "def grade(s, i):\n    return 1\n"}},
     "method.reinforcement.grader"),
    ({"grader": EXACT, "hyperparameters": {"n_epochs": 0}}, "method.reinforcement.hyperparameters.n_epochs"),
    ({"grader": EXACT, "hyperparameters": {"batch_size": 2.5}}, "method.reinforcement.hyperparameters.batch_size"),
    ({"grader": EXACT, "hyperparameters": {"learning_rate_multiplier": 0}},
     "method.reinforcement.hyperparameters.learning_rate_multiplier"),
    ({"grader": EXACT, "hyperparameters": {"reasoning_effort": "high"}},
     "method.reinforcement.hyperparameters.reasoning_effort"),
    ({"grader": EXACT, "hyperparameters": {"eval_samples": 4}}, "method.reinforcement.hyperparameters.eval_samples"),
    ({"grader": EXACT, "hyperparameters": {"beta": 0.1}}, "method.reinforcement.hyperparameters.beta"),
    ({"grader": EXACT, "extra": 1}, "method.reinforcement.extra"),
    ({"grader": EXACT, "hyperparameters": [1, 2]}, "method.reinforcement.hyperparameters"),
])
def test_bad_reinforcement_requests_name_the_field(section, param):
    with pytest.raises(MethodError) as caught:
        reinforcement_method(section)
    assert caught.value.param == param and caught.value.message


def test_python_grader_accepted_when_the_server_allows_it():
    grader = {"type": "python", "name": "p", "source": "def grade(s, i):\n    return 1\n"}
    assert reinforcement_method({"grader": grader}, allow_python=True)["reinforcement"]["grader"] == grader


def test_train_section_of_each_method(tmp_path):
    assert train_section_for_method({"type": "supervised", "supervised": {"hyperparameters": {}}},
                                    job_dir=tmp_path) == {"task": "sft"}
    assert train_section_for_method({"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.3}}},
                                    job_dir=tmp_path) == {"task": "dpo", "dpo": {"beta": 0.3}}
    method = {"type": "reinforcement", "reinforcement": {"grader": EXACT, "hyperparameters": {
        "n_epochs": 2, "batch_size": 2, "learning_rate_multiplier": 1.0, "compute_multiplier": 0.5,
        "eval_interval": 5, "eval_samples": "auto", "reasoning_effort": "auto"}}}
    section = train_section_for_method(method, job_dir=tmp_path / "job")
    assert section == {"task": "rft", "grader": str(tmp_path / "job" / "grader.json"), "batch_size": 8,
                       "rft": {"num_generations": 4, "allow_python_graders": False}, "eval_steps": 5}
    assert json.loads((tmp_path / "job" / "grader.json").read_text()) == EXACT
    # merged over the common keys spec.job_config sets, it is a valid config
    validate_config({"train": {"model": "m", "data": "d", "epochs": 2, **section}}, "test")
    auto = train_section_for_method({"type": "reinforcement", "reinforcement": {"grader": EXACT, "hyperparameters": {
        "batch_size": 1, "compute_multiplier": "auto"}}}, job_dir=tmp_path / "auto")
    assert auto["rft"]["num_generations"] == 8 and auto["batch_size"] == 8 and "eval_steps" not in auto
