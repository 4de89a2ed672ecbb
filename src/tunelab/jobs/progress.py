"""What a running job shows of itself, read from its run directory as training writes it: the
metrics events (from metrics.jsonl, the trainer's log, read on from where the last look
stopped), the checkpoints (the trainer's checkpoint directories tunelab marked complete), the
trained tokens, and at the end the metrics CSV of its result file."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from tunelab.train.callbacks import COMPLETE_MARKER

# metrics.jsonl keys (transformers / TRL logs) -> OpenAI's metrics event and checkpoint fields
TRAIN_KEYS = {"loss": "train_loss", "mean_token_accuracy": "train_mean_token_accuracy"}
VALID_KEYS = {"eval_loss": "valid_loss", "eval_mean_token_accuracy": "valid_mean_token_accuracy"}
CSV_COLUMNS = ["step", "train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy"]


def new_metric_rows(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """(complete rows written after byte `offset`, the offset after them); a line still being
    written (no newline yet) waits for the next look."""
    if not path.is_file():
        return [], offset
    with path.open("rb") as f:
        f.seek(offset)
        chunk = f.read()
    end = chunk.rfind(b"\n") + 1
    rows = []
    for line in chunk[:end].splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows, offset + end


def metrics_event(row: dict[str, Any], total_steps: int | None) -> tuple[str, dict[str, Any]] | None:
    """(message, data) of OpenAI's metrics event for one logged row, None for a row without a
    loss (the run's closing summary)."""
    data: dict[str, Any] = {"step": int(row.get("step", 0))}
    for source, target in {**TRAIN_KEYS, **VALID_KEYS}.items():
        if isinstance(row.get(source), (int, float)):
            data[target] = float(row[source])
    if "train_loss" not in data and "valid_loss" not in data:
        return None
    if total_steps:
        data["total_steps"] = total_steps
    shown = ", ".join(f"{k.replace('_', ' ')}={v:.4f}" for k, v in data.items() if k.endswith(("loss", "accuracy")))
    return f"Step {data['step']}{f'/{total_steps}' if total_steps else ''}: {shown}", data


def metrics_key(data: dict[str, Any]) -> tuple[int, tuple[str, ...]]:
    """A metrics event's identity: its step and which figures it has (a training row and an
    evaluation row of one step are two events; the same row logged again is one)."""
    return int(data.get("step", 0)), tuple(sorted(k for k in data if k.endswith("_loss")))


def estimated_finish(first: tuple[float, int] | None, rows: list[dict[str, Any]], total_steps: int | None) -> int | None:
    """When training should end, at the pace since `first` (time, step) of this process: the
    Unix time of the last logged step plus the remaining steps at the mean time per step."""
    timed = [(r["time"], r["step"]) for r in rows if isinstance(r.get("time"), (int, float)) and r.get("step")]
    if not (first and timed and total_steps):
        return None
    (start, step0), (now, step) = first, timed[-1]
    if step <= step0 or now <= start:
        return None
    return int(now + (total_steps - step) * (now - start) / (step - step0))


def trained_tokens(rows: list[dict[str, Any]]) -> int | None:
    seen = [r["num_input_tokens_seen"] for r in rows if isinstance(r.get("num_input_tokens_seen"), (int, float))]
    return int(max(seen)) if seen else None


def complete_checkpoints(run_dir: Path) -> dict[int, Path]:
    """step -> directory of each checkpoint the trainer finished writing."""
    found = {}
    for path in (Path(run_dir) / "checkpoints").glob("checkpoint-*"):
        if (path / COMPLETE_MARKER).is_file():
            try:
                found[int(path.name.rsplit("-", 1)[1])] = path
            except ValueError:
                continue
    return found


def checkpoint_metrics(events: list[dict[str, Any]], step: int) -> dict[str, float]:
    """The latest train and valid figures logged at or before `step` (events: metrics data, any order)."""
    metrics: dict[str, float] = {"step": float(step)}
    for data in sorted((e for e in events if e.get("step", 0) <= step), key=lambda e: e["step"]):
        metrics.update({k: v for k, v in data.items() if k in CSV_COLUMNS[1:]})
    return metrics


def metrics_csv(events: list[dict[str, Any]]) -> bytes:
    """One row per logged step (train and valid figures of the same step merged), oldest first."""
    by_step: dict[int, dict[str, Any]] = {}
    for data in events:
        by_step.setdefault(data["step"], {"step": data["step"]}).update(
            {k: v for k, v in data.items() if k in CSV_COLUMNS})
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for step in sorted(by_step):
        writer.writerow(by_step[step])
    return out.getvalue().encode()


def failure_reason(log_path: Path, code: int) -> str:
    """A sentence for a process that exited with `code`: the one-line error tunelab printed
    (exit 2), the last line of a traceback, or the signal that killed it."""
    if code < 0:
        import signal
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else f"signal {-code}"
        hint = " (out of memory, or stopped from outside the server)" if name == "SIGKILL" else ""
        return f"the training process was killed by {name}{hint}"
    lines = []
    if log_path.is_file():
        lines = [line.strip() for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines()
                 if line.strip()]
    for line in reversed(lines):
        if line.startswith("error:"):
            return line.removeprefix("error:").strip()
    last = next((line for line in reversed(lines) if not line.startswith(("File ", "^", "~"))), None)
    return f"the process exited with code {code}" + (f": {last[:300]}" if last else "")
