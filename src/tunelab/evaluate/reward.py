"""Evaluation by a grader: the mean reward (OpenAI grader JSON, tunelab.graders) of the tuned model's
greedy answers and of each baseline's, on the same held-out records, compared by paired bootstrap.

This module evaluates prompt records (a reinforcement fine-tuning run's test split: messages
ending with the user's turn, reference fields beside them), where the reward is the headline:
there is no reference reply to compute exact match against. Chat records with a grader are
evaluated as generative runs are, with the reward added (tunelab.evaluate.generative, through
tunelab.evaluate.grading). The grader is eval.grader, else the grader.json an rft run saved
beside its weights.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from tunelab.evaluate import generative
from tunelab.evaluate.endpoint import is_endpoint
from tunelab.evaluate.grading import figures, reward_section, score
from tunelab.evaluate.systems import generator_for
from tunelab.train.data import with_prefix
from tunelab.train.run_dir import RunDir

# prompt_texts renders a chat record's messages before its final reply: a prompt record gets an
# empty reply slot, which prompt_texts drops, so both kinds of record render the same way
REPLY_SLOT = {"role": "assistant", "content": ""}


def as_chat(record: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [*record["messages"], REPLY_SLOT]} if record["messages"][-1]["role"] == "user" else record


def evaluate(model: str, records: list[dict], run: RunDir, *, prefixes: list[str], baselines: list[str], settings,
             data_where: str, progress, grader, runtime) -> dict[str, Any]:
    """The task-specific part of report.json for prompt records. Each prompt's first user turn
    carries its task's prefix, as in training; the grader reads the record as it is."""
    conversations = [as_chat(with_prefix(r, prefix) if prefix else r) for r, prefix in zip(records, prefixes)]
    raw = [as_chat(r) for r in records]  # what an endpoint gets: inputs as a client sends them
    systems = {}
    for name in ["tuned", *baselines]:
        source = model if name == "tuned" else generative.baseline_source(name, run)
        systems[name] = answer_and_grade(name, source, raw if is_endpoint(source) else conversations, records, grader,
                                         runtime, settings, progress)
    compared = {"reward": "reward", **({"pass_rate": "passed"} if grader.pass_threshold is not None else {})}
    tuned = systems["tuned"]
    progress("latency")
    timing = generative.latency_section(systems, conversations, settings)
    progress("forgetting")
    kept = generative.forgetting_section(tuned["system"], run, settings.forgetting)
    return {
        **generative.tuned_against_baselines(systems, compared, settings),
        "calibration": None, "fairness": None, "robustness": None,
        "slices": generative.slices_section(records, {"reward": tuned["examples"]["reward"]}),
        "forgetting": kept,
        "latency": timing,
        "timing_s": {name: round(s["seconds"], 2) for name, s in systems.items()},
        "reward": reward_section(grader, {name: s["results"] for name, s in systems.items()}, records,
                                 tuned["answers"], settings),
        "headline": "reward",
        "predictions": tuned["answers"],
        "tokens_per_request": tuned["tokens_per_request"],
    }


def answer_and_grade(name: str, source: str, conversations, records, grader, runtime, settings, progress):
    progress(f"generating with {name}")
    started = time.perf_counter()
    system = generator_for(source, settings)
    generated = system.answer(conversations)
    progress(f"grading {name}'s answers")
    results = score(grader, runtime, generated.texts, records)
    scores = np.asarray([r.score for r in results], dtype=float)
    examples = {"reward": scores}
    if grader.pass_threshold is not None:
        examples["passed"] = (scores >= grader.pass_threshold).astype(float)
    return {"metrics": {**figures(grader, results), "examples": len(records)}, "examples": examples,
            "results": results, "answers": generated.texts, "source": source, "system": system,
            "conversations": conversations,
            "tokens_per_request": float(np.mean(generated.prompt_tokens) + np.mean(generated.new_tokens)),
            "seconds": time.perf_counter() - started}
