"""--resume: training continues from the last checkpoint that tunelab marked complete, and an
interrupted-then-resumed run ends exactly where the same run without the interruption ends
(optimizer, scheduler, RNG and data order all restored on CPU). Unmarked checkpoints (cut off
mid-write) are never used."""
from __future__ import annotations

import os
import signal
import types
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from run_helpers import chat, metrics_rows, train_config, weights_in, write_prepared
from tunelab.errors import TunelabError
from tunelab.train import callbacks as cb
from tunelab.train import run as run_module

STEPS = 12


@pytest.fixture(autouse=True)
def no_memory_preflight(monkeypatch):
    monkeypatch.setattr(run_module, "preflight_memory", lambda *args, **kwargs: None)


class CtrlCBefore(TrainerCallback):
    """Sends this process a real SIGINT as optimizer step `step` begins, as a user's Ctrl-C."""

    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.step:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture
def interrupt_at(monkeypatch):
    """interrupt_at(n): the next run gets Ctrl-C during optimizer step n."""
    pending: list[int] = []
    build = run_module.build_trainer

    def building(*args, **kwargs):
        trainer = build(*args, **kwargs)
        if pending:
            trainer.add_callback(CtrlCBefore(pending.pop()))
        return trainer

    monkeypatch.setattr(run_module, "build_trainer", building)
    return pending.append


def config(model, output: Path, data: Path, **extra):
    # LoRA dropout on (RNG state matters), a high learning rate (the weights move), a decaying
    # schedule (the scheduler state matters) and two epochs of shuffled data (the order matters)
    return train_config(model, output, data=str(data), method="lora", max_steps=STEPS, save_steps=3, lr=5e-3,
                        scheduler="cosine", warmup=0.2, lora={"dropout": 0.1}, **extra)


@pytest.mark.slow  # trains, interrupts and resumes, or starts processes (seconds)
def test_interrupted_and_resumed_run_ends_where_the_uninterrupted_run_ends(tiny_llama, tmp_path, interrupt_at):
    data = write_prepared(tmp_path / "data", [chat(f"what is {i} plus one", f"it is {i + 1}") for i in range(24)])
    straight = run_module.run(config(tiny_llama, tmp_path / "straight", data))

    interrupt_at(5)  # mid-epoch (6 batches of 4 per epoch), between the checkpoints at 3 and 6
    first = run_module.run(config(tiny_llama, tmp_path / "resumed", data))
    checkpoints = tmp_path / "resumed" / "checkpoints"
    assert first.interrupted and first.stages[0]["steps"] == 5
    assert (checkpoints / "checkpoint-5" / cb.COMPLETE_MARKER).is_file()
    # a later checkpoint cut off mid-write: no marker, garbage weights; resume must not touch it
    torn = checkpoints / "checkpoint-9"
    torn.mkdir()
    (torn / "adapter_model.safetensors").write_bytes(b"\x00" * 10)
    interrupted_weights = weights_in(tmp_path / "resumed")

    resumed = run_module.run(config(tiny_llama, tmp_path / "resumed", data, resume=True))

    assert not resumed.interrupted and resumed.stages[0]["steps"] == STEPS
    losses = {r["step"]: r["loss"] for r in metrics_rows(tmp_path / "straight") if "loss" in r}
    resumed_rows = [r for r in metrics_rows(tmp_path / "resumed") if "loss" in r]
    assert [r["step"] for r in resumed_rows] == list(range(1, STEPS + 1))  # each step logged once
    for row in resumed_rows:
        assert row["loss"] == pytest.approx(losses[row["step"]], abs=1e-5), row["step"]
    expected, actual = weights_in(tmp_path / "straight"), weights_in(tmp_path / "resumed")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.allclose(actual[name], expected[name], atol=1e-6), name
    moved = max(float((actual[n] - interrupted_weights[n]).abs().max()) for n in actual)
    assert moved > 1e-3  # the resumed run trained the last 7 steps, it did not stop at the checkpoint
    assert straight.stages[0]["steps"] == STEPS


def test_resume_without_a_complete_checkpoint_is_refused(tiny_llama, tmp_path):
    data = write_prepared(tmp_path / "data", [chat(f"what is {i} plus one", f"it is {i + 1}") for i in range(8)])
    (tmp_path / "run" / "checkpoints" / "checkpoint-3").mkdir(parents=True)  # never marked complete

    with pytest.raises(TunelabError, match="--resume found no complete checkpoint.*run without --resume"):
        run_module.run(config(tiny_llama, tmp_path / "run", data, resume=True))


def test_last_complete_checkpoint_is_the_highest_marked_step(tmp_path):
    assert cb.last_complete_checkpoint(tmp_path / "missing") is None
    for step, marked in ((2, True), (10, True), (30, False), (9, True)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if marked:
            (tmp_path / f"checkpoint-{step}" / cb.COMPLETE_MARKER).write_text("{}")
    assert cb.last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-10"  # numeric order, 30 unmarked


def test_a_checkpoint_is_marked_only_after_the_trainer_wrote_it(tmp_path):
    args = types.SimpleNamespace(output_dir=str(tmp_path))
    state = types.SimpleNamespace(global_step=4, is_world_process_zero=True)
    cb.CompleteCheckpoints().on_save(args, state, None)
    assert not (tmp_path / "checkpoint-4").exists()  # nothing saved: nothing to mark
    (tmp_path / "checkpoint-4").mkdir()
    cb.CompleteCheckpoints().on_save(args, state, None)
    assert (tmp_path / "checkpoint-4" / cb.COMPLETE_MARKER).is_file()
    assert cb.last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
