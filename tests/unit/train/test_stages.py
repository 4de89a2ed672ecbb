"""Progressive training (train.stages): each stage starts from the previous one's weights, is
evaluated and snapshotted, and `--resume` skips finished stages and continues the interrupted one."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import TrainerCallback

from run_helpers import assert_same_weights, chat, metrics_rows, train_config, weights_in, write_prepared
from tunelab.config import validate_config
from tunelab.errors import TunelabError
from tunelab.train import callbacks as cb
from tunelab.train import run as run_module
from tunelab.train.stages import STAGE_RECORD, planned_stages


@pytest.fixture
def stage_data(tmp_path):
    first = write_prepared(tmp_path / "general", [chat(f"say {i}", f"{i} said") for i in range(8)],
                           [chat(f"say {i}", f"{i} said") for i in range(50, 54)])
    second = write_prepared(tmp_path / "domain", [chat(f"spell {i}", f"{i} spelt") for i in range(8)],
                            [chat(f"spell {i}", f"{i} spelt") for i in range(50, 54)])
    return [{"name": "general", "data": str(first), "epochs": 1, "lr": 5e-3},
            {"name": "domain", "data": str(second), "epochs": 2, "lr": 1e-3}]


def staged(tiny_llama, output, stages, **train):
    return train_config(tiny_llama, output, stages=stages, **{"method": "full", **train})


@pytest.mark.slow  # trains for seconds, or starts processes
def test_second_stage_starts_from_the_first_stage_snapshot(tiny_llama, tmp_path, stage_data, spy_stages):
    result = run_module.run(staged(tiny_llama, tmp_path / "run", stage_data))
    run_dir = result.run_dir
    first, second = run_dir / "stages" / "1-general", run_dir / "stages" / "2-domain"

    assert [s["stage"] for s in result.stages] == ["general", "domain"]
    assert_same_weights(spy_stages[0]["initial"], weights_in(tiny_llama))
    assert_same_weights(spy_stages[1]["initial"], weights_in(first))  # stage 2 begins where stage 1 ended
    assert not torch.equal(weights_in(first)["model.layers.0.mlp.up_proj.weight"],
                           weights_in(tiny_llama)["model.layers.0.mlp.up_proj.weight"])
    assert_same_weights(weights_in(run_dir), weights_in(second))  # the run's model is the last stage's
    # each stage has its own epochs and learning rate
    assert [(s["epochs"], s["lr"]) for s in spy_stages] == [(1, 5e-3), (2, 1e-3)]
    assert [s["steps"] for s in result.stages] == [2, 4]

    # snapshots are complete HF directories with their stage's record
    for snapshot, stage in ((first, "general"), (second, "domain")):
        assert (snapshot / "config.json").is_file() and (snapshot / "tokenizer.json").is_file()
        assert json.loads((snapshot / STAGE_RECORD).read_text())["stage"] == stage
    # evaluation after each stage: in the manifest's stages and in metrics.jsonl tagged by stage
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [s["stage"] for s in manifest["stages"]] == ["general", "domain"]
    assert all("eval_loss" in s["eval"] for s in manifest["stages"])
    assert manifest["final_metrics"] == manifest["stages"][-1]["eval"]
    assert set(manifest["datasets"]) == {f"{s['data']}/{f}" for s in stage_data for f in ("train.jsonl", "val.jsonl")}
    rows = metrics_rows(run_dir)
    assert {r["stage"] for r in rows} == {"general", "domain"}
    for stage in ("general", "domain"):
        assert any("eval_loss" in r for r in rows if r["stage"] == stage)


class StopAfterFirstStep(TrainerCallback):
    """Acts as a Ctrl-C during the first step of the stage it is given to."""

    def __init__(self, interrupt: cb.InterruptToCheckpoint):
        self.interrupt = interrupt

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            self.interrupt.interrupted = True


def interrupt_stage(monkeypatch, stage_index: int):
    original = run_module.build_trainer

    def build(*args, **kwargs):
        trainer = original(*args, **kwargs)
        if args[8] == stage_index:  # build_trainer(model, tokenizer, data, task, labels, tc, stage, run_dir, index, ...)
            handler = next(c for c in trainer.callback_handler.callbacks if isinstance(c, cb.InterruptToCheckpoint))
            trainer.add_callback(StopAfterFirstStep(handler))
        return trainer

    monkeypatch.setattr(run_module, "build_trainer", build)


@pytest.mark.slow  # starts a process of its own (seconds)
def test_resume_skips_finished_stages_and_continues_the_interrupted_one(tiny_llama, tmp_path, stage_data,
                                                                         spy_stages, monkeypatch):
    uninterrupted = run_module.run(staged(tiny_llama, tmp_path / "whole", stage_data))

    with monkeypatch.context() as patch:
        interrupt_stage(patch, 1)
        first = run_module.run(staged(tiny_llama, tmp_path / "run", stage_data))
    run_dir = first.run_dir
    assert first.interrupted and [s["stage"] for s in first.stages] == ["general", "domain"]
    assert (run_dir / "stages" / "1-general" / STAGE_RECORD).is_file()
    assert not (run_dir / "stages" / "2-domain").exists()
    assert cb.last_complete_checkpoint(run_dir / "checkpoints" / "domain").name == "checkpoint-1"

    spy_stages.clear()
    resumed = run_module.run(staged(tiny_llama, tmp_path / "run", stage_data, resume=True))
    # only the interrupted stage trained again, from the first stage's snapshot and its checkpoint
    assert len(spy_stages) == 1 and spy_stages[0]["resume"] is True
    assert_same_weights(spy_stages[0]["initial"], weights_in(run_dir / "stages" / "1-general"))
    assert not resumed.interrupted and resumed.stages[1]["steps"] == 4
    assert resumed.stages[0] == first.stages[0]  # the finished stage's outcome, read back from its snapshot
    assert resumed.stages[0]["eval"]["eval_loss"] == uninterrupted.stages[0]["eval"]["eval_loss"]
    domain_steps = [r["step"] for r in metrics_rows(run_dir) if r.get("stage") == "domain" and "loss" in r]
    assert domain_steps == [1, 2, 3, 4]  # step 1 before the interruption, 2-4 after it, none twice
    # same weights as the run that was never interrupted
    final, expected = weights_in(run_dir), weights_in(uninterrupted.run_dir)
    for name, value in expected.items():
        torch.testing.assert_close(final[name], value, rtol=0, atol=1e-6)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert not manifest["interrupted"] and [s["stage"] for s in manifest["stages"]] == ["general", "domain"]


@pytest.mark.slow  # trains, interrupts and resumes, or starts processes (seconds)
@pytest.mark.parametrize("method", ["full", "lora"])
def test_resume_starts_a_stage_that_never_checkpointed_from_the_previous_snapshot(tiny_llama, tmp_path, stage_data,
                                                                                  spy_stages, method):
    import shutil
    run_dir = run_module.run(staged(tiny_llama, tmp_path / "run", stage_data, method=method)).run_dir
    (run_dir / "stages" / "2-domain" / STAGE_RECORD).unlink()  # as if stopped before stage 2's first checkpoint
    shutil.rmtree(run_dir / "checkpoints" / "domain")
    spy_stages.clear()
    result = run_module.run(staged(tiny_llama, tmp_path / "run", stage_data, method=method, resume=True))
    assert len(spy_stages) == 1 and spy_stages[0]["resume"] is False
    snapshot = weights_in(run_dir / "stages" / "1-general")
    if method == "lora":  # the adapter snapshot is loaded into the run's adapter
        assert (run_dir / "stages" / "1-general" / "adapter_config.json").is_file()
        assert_same_weights(spy_stages[0]["adapter"], snapshot)
        assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in snapshot.items())
    else:
        assert_same_weights(spy_stages[0]["initial"], snapshot)
    assert [s["stage"] for s in result.stages] == ["general", "domain"] and result.stages[1]["steps"] == 4


@pytest.mark.slow  # trains, interrupts and resumes, or starts processes (seconds)
def test_resume_of_a_finished_run_trains_nothing(tiny_llama, tmp_path, stage_data, spy_stages):
    run_dir = run_module.run(staged(tiny_llama, tmp_path / "run", stage_data)).run_dir
    trained = weights_in(run_dir)
    spy_stages.clear()
    result = run_module.run(staged(tiny_llama, tmp_path / "run", stage_data, resume=True))
    assert spy_stages == [] and [s["stage"] for s in result.stages] == ["general", "domain"]
    assert_same_weights(weights_in(run_dir), trained)


def test_stages_of_different_kinds_are_refused_before_loading_weights(tiny_llama, tmp_path, stage_data, monkeypatch):
    prefs = write_prepared(tmp_path / "prefs", [{"prompt": "a", "chosen": "b", "rejected": "c"}])
    monkeypatch.setattr(run_module, "load_model", lambda *a, **k: pytest.fail("weights loaded"))
    stages = [stage_data[0], {"name": "prefs", "data": str(prefs)}]
    with pytest.raises(TunelabError, match="stage prefs trains on preference records after stage"):
        run_module.run(staged(tiny_llama, tmp_path / "run", stages))


@pytest.mark.parametrize("train,message", [
    ({"stages": [{"data": "a"}, {"data": "b", "name": "stage1"}]}, "stage names repeat"),
    ({"stages": [{"data": "a", "name": "../up"}]}, "cannot name a directory"),
    ({"stages": [{"data": "a"}], "mix": [{"data": "b"}]}, "train.stages and train.mix"),
    ({"stages": [{"data": "a"}], "data": "b"}, "beside train.stages"),
    ({"mix": [{"data": "a"}], "data": "b"}, "beside train.mix"),
    ({}, "no training data"),
])
def test_stage_plans_that_contradict_themselves_are_refused(train, message):
    with pytest.raises(TunelabError, match=message):
        planned_stages(validate_config({"train": train}, "test").train)


def test_stages_are_named_in_order():
    tc = validate_config({"train": {"stages": [{"data": "a"}, {"data": "b", "name": "chat"}]}}, "test").train
    assert [s.name for s in planned_stages(tc)] == ["stage1", "chat"]
