"""The report's reward sections, built from the same blocks as every other section
(tunelab.report_shell): the grader's mean reward per system with its interval, why
the tuned model's answers lost reward and its worst answers; and, for a reinforcement
fine-tuning run, the reward, KL and completion-length curves of its training."""
from __future__ import annotations

from typing import Any

from tunelab import charts
from tunelab.report_shell import Chart, Note, Section, Table, format_value

CURVE_NAMES = {"reward": "mean reward (sampled answers)", "reward_std": "reward spread (std)",
               "kl": "KL to the reference", "completion_length": "completion length (tokens)",
               "eval_reward": "validation reward", "eval_reward_std": "validation reward spread",
               "eval_kl": "validation KL", "eval_completion_length": "validation completion length"}


def reward_section(r: dict[str, Any]) -> Section | None:
    reward = r.get("reward")
    if not reward:
        return None
    grader = reward.get("grader") or {}
    threshold = grader.get("pass_threshold")
    blocks: list = [Note(f"Grader {grader.get('name')} ({grader.get('type')}) scored every system's greedy answer to "
                         f"each test example; intervals are {reward.get('confidence', 0.95):.0%} bootstrap "
                         "intervals of the mean." + (f" An answer passes at {format_value(threshold)} or above."
                                                     if threshold is not None else ""))]
    rows = [[name, s.get("mean"), f"{format_value(s.get('ci_low'))} to {format_value(s.get('ci_high'))}",
             s.get("pass_rate"), s.get("grader_failures")] for name, s in (reward.get("systems") or {}).items()]
    blocks.append(Table(["system", "mean reward", "interval", "pass rate", "grader failures"], rows))
    errors = reward.get("errors_by_kind") or {}
    if errors:
        blocks.append(Table(["why the tuned model's answers scored 0 (error kind)", "answers"],
                            [[kind, count] for kind, count in errors.items()]))
    worst = reward.get("worst") or []
    if worst:
        blocks.append(Table(["example", "reward", "prompt", "answer", "reason"],
                            [[w.get("example"), w.get("score"), _short(w.get("prompt")), _short(w.get("answer")),
                              w.get("reason") or ""] for w in worst]))
    return Section("reward", "Reward (grader)", blocks)


def training_rewards_section(r: dict[str, Any]) -> Section | None:
    training = r.get("training_rewards")
    if not training:
        return None
    first, last = training.get("first") or {}, training.get("last") or {}
    rows = [[CURVE_NAMES.get(name, name), first.get(name), last.get(name)] for name in training.get("curves") or {}]
    stage = f" (stage {training['stage']})" if training.get("stage") else ""
    blocks: list = [Note(f"What TRL's GRPO logged while training{stage}: each step's sampled answers, graded."),
                    Table(["figure", "first logged", "last logged"], rows)]
    curves = training.get("curves") or {}
    groups = (("Reward during training", ("reward", "eval_reward"), "reward"),
              ("KL to the reference", ("kl", "eval_kl"), "KL"),
              ("Completion length", ("completion_length", "eval_completion_length"), "tokens"))
    for title, names, unit in groups:
        lines = {CURVE_NAMES[n]: curves[n] for n in names if len(curves.get(n) or []) > 1}
        if lines:
            blocks.append(Chart(charts.line_chart(title, lines, chart_id=f"chart-rft-{unit.lower()}",
                                                  x_label="step", y_label=unit)))
    return Section("training-rewards", "Training rewards (reinforcement fine-tuning)", blocks)


def _short(text, limit: int = 80) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= limit else text[:limit] + "…"



