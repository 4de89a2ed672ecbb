"""Over-fitting check from the run's own metrics.jsonl (train.callbacks.MetricsLog): the train and
eval loss curves, the gap between them at the end, the trend of eval loss over the last
evaluations and the step where it turned up; for reinforcement fine-tuning, the reward curves.

How metrics.jsonl is read:
- rows with "loss" are train-loss logs, rows with "eval_loss" evaluations, both keyed by "step";
- a resumed run logs steps again from its checkpoint: the last row for a step wins;
- after training, the run logs a summary row ("train_loss") and then evaluates the model it
  keeps (with load_best_model_at_end, the best checkpoint) at the same step. That evaluation is
  not a point of the curve: taken as one it would overwrite the last real evaluation with the
  best one and hide a rise;
- progressive stages restart their step count and evaluate on their own data, so only the last
  stage (the one that produced the final weights) is read; "stage" names it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from scipy.stats import linregress

TRAIN_POINTS_AVERAGED = 5  # the final train loss is the mean of this many last logged losses
TREND_POINTS = 4  # evaluations the trend is fitted over
MIN_TREND_POINTS = 3  # fewer evaluations than this: "too few points"
TOLERANCE = 0.02  # relative to the best eval loss: smaller changes are noise ("flat")


def overfitting_report(metrics_jsonl: Path, *, tolerance: float = TOLERANCE) -> dict[str, Any] | None:
    """The report's overfitting section, or None when the file is missing or holds no evaluation."""
    path = Path(metrics_jsonl)
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    stage, train, evals = loss_curves(rows)
    if not evals:
        return None
    return summarise(train, evals, stage, tolerance)


def loss_curves(rows: list[dict[str, Any]]) -> tuple[str | None, list[list[float]], list[list[float]]]:
    """(stage, train [[step, loss]], eval [[step, loss]]) of the last stage, sorted by step."""
    logged = [r for r in rows if _number(r.get("loss")) or _number(r.get("eval_loss"))]
    if not logged:
        return None, [], []
    stage = logged[-1].get("stage")
    train: dict[int, float] = {}
    evals: dict[int, float] = {}
    previous = None
    for row in rows:
        if row.get("stage") != stage:
            previous = row
            continue
        if _number(row.get("loss")):
            train[row["step"]] = float(row["loss"])
        if _number(row.get("eval_loss")) and not _is_final_evaluation(row, previous):
            evals[row["step"]] = float(row["eval_loss"])
        previous = row
    return stage, [[s, train[s]] for s in sorted(train)], [[s, evals[s]] for s in sorted(evals)]


def _is_final_evaluation(row: dict[str, Any], previous: dict[str, Any] | None) -> bool:
    # the end-of-training summary carries train_loss (transformers 5 also puts train_runtime on every
    # step's loss row, so that key alone does not mark it)
    return (previous is not None and "train_loss" in previous and "loss" not in previous
            and previous.get("step") == row.get("step")
            and previous.get("stage") == row.get("stage"))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def summarise(train: list[list[float]], evals: list[list[float]], stage: str | None,
              tolerance: float) -> dict[str, Any]:
    recent = [loss for _, loss in train[-TRAIN_POINTS_AVERAGED:]]
    train_loss = sum(recent) / len(recent) if recent else None
    best_step, best = min(evals, key=lambda point: point[1])  # the earliest step on ties
    last_step, eval_loss = evals[-1]
    margin = tolerance * max(abs(best), 1e-12)
    trend = eval_trend(evals, margin)
    turned_at = turned_up_step(evals, best_step, best, margin)
    reason = None
    if turned_at is not None:
        reason = (f"eval loss rose from its minimum {best:.4f} at step {best_step} to {eval_loss:.4f} at step "
                  f"{last_step} (first above it at step {turned_at}), so training past step {best_step} over-fits")
    elif trend == "rising":
        reason = f"eval loss is rising over the last {min(len(evals), TREND_POINTS)} evaluations"
    return {"train_loss": train_loss, "eval_loss": eval_loss,
            "gap": eval_loss - train_loss if train_loss is not None else None,
            "best_eval_loss": best, "trend": trend, "best_step": best_step, "turned_at_step": turned_at,
            "flagged": reason is not None, "reason": reason, "stage": stage,
            "curves": {"train": train, "eval": evals}}


def eval_trend(evals: list[list[float]], margin: float) -> str:
    """Direction of the least-squares line through the last evaluations: its change across them
    compared with the noise margin."""
    if len(evals) < MIN_TREND_POINTS:
        return "too few points"
    window = evals[-TREND_POINTS:]
    steps = [step for step, _ in window]
    fit = linregress(steps, [loss for _, loss in window])
    change = fit.slope * (steps[-1] - steps[0])
    return "rising" if change > margin else "falling" if change < -margin else "flat"


def turned_up_step(evals: list[list[float]], best_step: int, best: float, margin: float) -> int | None:
    """The first evaluation after the minimum that is above it by more than the margin, provided
    the last evaluation is too (a blip that came back down is not a turn)."""
    if evals[-1][1] - best <= margin:
        return None
    return next(step for step, loss in evals if step > best_step and loss - best > margin)


# what TRL's GRPO logs each step (train) or evaluation (eval_ prefix), as the report names them
REWARD_SERIES = {"reward": "reward", "reward_std": "reward_std", "kl": "kl",
                 "completions/mean_length": "completion_length"}


def reward_curves(metrics_jsonl: Path) -> dict[str, Any] | None:
    """A reinforcement fine-tuning run's training section: per logged step of its last rft stage,
    the mean reward of the sampled answers, its spread, the KL to the reference and the mean
    completion length (and the validation reward when it was evaluated), with the first and last
    values of each. None when the run logged no reward (not an rft run)."""
    path = Path(metrics_jsonl)
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rewarded = [r for r in rows if _number(r.get("reward")) or _number(r.get("eval_reward"))]
    if not rewarded:
        return None
    stage = rewarded[-1].get("stage")
    curves: dict[str, dict[int, float]] = {}
    for row in rows:
        if row.get("stage") != stage or "train_loss" in row:
            continue
        for key, name in REWARD_SERIES.items():
            for prefix in ("", "eval_"):
                if _number(row.get(prefix + key)):
                    curves.setdefault(prefix + name, {})[row["step"]] = float(row[prefix + key])
    series = {name: [[step, points[step]] for step in sorted(points)] for name, points in curves.items()}
    return {"stage": stage, "curves": series,
            "first": {name: points[0][1] for name, points in series.items()},
            "last": {name: points[-1][1] for name, points in series.items()}}
