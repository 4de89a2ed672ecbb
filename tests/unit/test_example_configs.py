"""Every config shipped in examples/ loads and validates as a whole, as a user would copy it."""
from pathlib import Path

import pytest
import yaml

from tunelab.config import load_config
from tunelab.train.stages import planned_stages

EXAMPLES = Path(__file__).parents[2] / "examples"
CONFIGS = sorted(EXAMPLES.glob("*.yaml"))


def test_the_examples_are_there():
    names = {p.name for p in CONFIGS}
    assert {"dpo_after_sft.yaml", "progressive.yaml", "multitask.yaml", "sentiment.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_config_validates(path):
    cfg = load_config(path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if "train" in raw:
        planned_stages(cfg.train)  # data, stages and mix do not contradict each other


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_launcher_configs_beside_them_parse(path):
    """examples/accelerate/ holds `accelerate launch` configs, not tunelab ones: valid YAML mappings."""
    assert isinstance(yaml.safe_load(path.read_text(encoding="utf-8")), dict)


def test_what_the_examples_declare():
    dpo = load_config(EXAMPLES / "dpo_after_sft.yaml").train
    assert (dpo.task, dpo.model, dpo.dpo.loss_type) == ("dpo", "runs/sft", "sigmoid")
    progressive = load_config(EXAMPLES / "progressive.yaml").train
    assert [s.name for s in planned_stages(progressive)] == ["general", "domain", "style"]
    multitask = load_config(EXAMPLES / "multitask.yaml").train
    assert {m.task: m.weight for m in multitask.mix} == {"summarize": 5, "reply": 3, "intent": 2}
    assert all(m.prefix for m in multitask.mix)
