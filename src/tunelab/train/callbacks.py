"""Trainer callbacks: the metrics log, complete-checkpoint markers, and Ctrl-C to checkpoint.
Callbacks, not Trainer subclasses: they compose with TRL's trainers unchanged."""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

COMPLETE_MARKER = "tunelab-complete.json"


class MetricsLog(TrainerCallback):
    """Appends every log event to metrics.jsonl (loss, lr, grad norm, eval metrics), adding the
    stage, wall time and tokens/s since the previous event."""

    def __init__(self, path: Path, stage: str | None = None):
        self.path = Path(path)
        self.stage = stage
        self._last = None  # (time, tokens seen)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        now = time.time()
        row = {"step": state.global_step, "epoch": round(state.epoch or 0, 4), "time": round(now, 3)}
        if self.stage:
            row["stage"] = self.stage
        row.update({k: v for k, v in logs.items() if isinstance(v, (int, float, str))})
        tokens = getattr(state, "num_input_tokens_seen", 0) or 0
        if self._last and tokens > self._last[1] and now > self._last[0]:
            row["tokens_per_second"] = round((tokens - self._last[1]) / (now - self._last[0]), 1)
        if "loss" in logs:
            self._last = (now, tokens)
        elif self._last is None:
            self._last = (now, tokens)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = (time.time(), getattr(state, "num_input_tokens_seen", 0) or 0)


class CompleteCheckpoints(TrainerCallback):
    """Marks a checkpoint complete once the Trainer has finished writing it (on_save runs after
    the save). Resume only trusts marked checkpoints, so one cut off mid-write is never used."""

    def on_save(self, args, state, control, **kwargs):
        # Every process writes its own part of a checkpoint (its RNG state; ZeRO/FSDP shards) and
        # the Trainer does not wait for the others before on_save: wait here, then mark once.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        if not state.is_world_process_zero:
            return
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if checkpoint.is_dir():
            marker = checkpoint / COMPLETE_MARKER
            tmp = marker.with_suffix(".tmp")
            tmp.write_text(json.dumps({"step": state.global_step, "time": time.time()}))
            tmp.replace(marker)


def last_complete_checkpoint(checkpoints_dir: Path) -> Path | None:
    if not checkpoints_dir.is_dir():
        return None
    complete = [p for p in checkpoints_dir.glob("checkpoint-*") if (p / COMPLETE_MARKER).is_file()]
    return max(complete, key=lambda p: int(p.name.split("-")[-1]), default=None)


class InterruptToCheckpoint(TrainerCallback):
    """The first Ctrl-C finishes the current step, saves a checkpoint and stops cleanly; a second
    one interrupts at once."""

    def __init__(self):
        self.interrupted = False
        self._previous = None

    def _handle(self, signum, frame):
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True

    def on_train_begin(self, args, state, control, **kwargs):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread (e.g. under a test runner's worker): no handler
            self._previous = None

    def on_step_end(self, args, state, control, **kwargs):
        if self.interrupted:
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class RichProgress(TrainerCallback):
    """A rich progress bar over optimizer steps with the latest loss, in place of transformers'
    tqdm bar and its printed log dictionaries (metrics.jsonl keeps every logged value)."""

    def __init__(self, description: str = "training"):
        self.description = description
        self._progress = None
        self._task = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from tunelab.progress import console
        self._progress = Progress(TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                  console=console, refresh_per_second=2)  # its render thread takes the GIL
        self._progress.start()
        self._task = self._progress.add_task(self.description, total=state.max_steps, completed=state.global_step,
                                             loss="")

    def on_step_end(self, args, state, control, **kwargs):
        if self._progress is not None:
            self._progress.update(self._task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._progress is not None and logs:
            shown = {k: logs[k] for k in ("loss", "eval_loss", "eval_macro_f1", "reward", "eval_reward") if k in logs}
            if shown:
                self._progress.update(self._task, loss=" ".join(f"{k} {v:.4f}" for k, v in shown.items()))

    def on_train_end(self, args, state, control, **kwargs):
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
