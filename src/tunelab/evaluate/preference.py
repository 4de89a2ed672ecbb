"""Evaluation of a preference (DPO) run: on held-out pairs {"prompt", "chosen", "rejected"}, how
often each model gives the chosen reply a higher log-likelihood than the rejected one, and by how
much, for the tuned model and each baseline on the same pairs, compared by paired bootstrap.

A reply is scored as preference training formats it: after a conversational prompt (messages),
through the chat template as the assistant's turn, its end-of-turn token included; after a
string prompt, as the plain text that continues it, the end token included. A reply's score is
its summed log-likelihood in nats (what DPO's implicit reward is made of), so the figures are:

- `preference_accuracy`: the share of pairs whose chosen reply scores higher than the rejected;
- `margin`: the mean of chosen minus rejected;
- `chosen_log_likelihood` / `rejected_log_likelihood`: per token, over all pairs' replies.

With a local `base` baseline (the model DPO started from, when the run started from its base), the
`preference` part adds DPO's own held-out figure: the implicit reward of a reply is its score under
the tuned model minus under the reference, and `reward_accuracy` is the share of pairs whose chosen
reply gains more than the rejected one (TRL's eval `rewards/accuracies`, before its beta).
Models behind endpoints give no log-likelihoods and are refused in one sentence.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from tunelab.errors import TunelabError
from tunelab.evaluate import generative
from tunelab.evaluate.endpoint import is_endpoint
from tunelab.evaluate.generate import corpus_log_likelihood, reply_log_likelihood
from tunelab.evaluate.systems import generator_for
from tunelab.train.data import with_prefix
from tunelab.train.run_dir import RunDir

COMPARED = ("preference_accuracy", "margin")


def evaluate(model: str, records: list[dict], run: RunDir, *, prefixes: list[str], baselines: list[str], settings,
             data_where: str, progress, grader=None, runtime=None) -> dict[str, Any]:
    """The task-specific part of report.json for preference pairs. Each prompt carries its task's
    prefix, as in training."""
    pairs = [with_prefix(r, prefix) if prefix else r for r, prefix in zip(records, prefixes)]
    sources = {name: model if name == "tuned" else generative.baseline_source(name, run)
               for name in ["tuned", *baselines]}
    for name, source in sources.items():  # before any model loads: nothing is scored in vain
        if is_endpoint(source):
            raise TunelabError(f"{name} is a model behind an endpoint, which gives no log-likelihoods to compare "
                               "a chosen reply with a rejected one", where=data_where,
                               fix="compare preference runs with local models (base or a model directory)")
    systems = {name: score_system(name, source, pairs, settings, progress) for name, source in sources.items()}
    tuned = systems["tuned"]
    conversational = all(isinstance(p["prompt"], list) for p in pairs)
    progress("latency")
    # generating needs the chat template; a string-prompt run is scored, not timed
    timing = generative.latency_section(systems, [_as_chat(p) for p in pairs], settings) if conversational else None
    progress("forgetting")
    kept = generative.forgetting_section(tuned["system"], run, settings.forgetting)
    return {
        **generative.tuned_against_baselines(systems, {metric: metric for metric in COMPARED}, settings),
        "calibration": None, "fairness": None, "robustness": None,
        "slices": generative.slices_section(records, {"preference_accuracy": tuned["examples"]["preference_accuracy"]}),
        "forgetting": kept,
        "latency": timing,
        "timing_s": {name: round(s["seconds"], 2) for name, s in systems.items()},
        "preference": implicit_reward(tuned, systems.get("base")),
        "headline": "preference_accuracy",
        "predictions": [{"chosen_score": round(c, 4), "rejected_score": round(r, 4), "prefers": "chosen" if c > r
                         else "rejected"} for c, r in zip(tuned["chosen"], tuned["rejected"])],
        # what an API would bill per request: the prompt and a reply, with this model's tokenizer
        "tokens_per_request": tuned["tokens_per_request"],
    }


def score_system(name: str, source: str, pairs: list[dict], settings, progress) -> dict[str, Any]:
    """Summed log-likelihoods of each pair's chosen and rejected reply under one model, and the
    figures made of them."""
    progress(f"scoring the pairs with {name}")
    started = time.perf_counter()
    system = generator_for(source, settings)
    model, tokenizer = system.loaded
    prompts = [p["prompt"] for p in pairs]
    chosen_means, chosen_counts = reply_log_likelihood(model, tokenizer, prompts, [p["chosen"] for p in pairs])
    rejected_means, rejected_counts = reply_log_likelihood(model, tokenizer, prompts, [p["rejected"] for p in pairs])
    chosen = np.asarray(chosen_means) * np.asarray(chosen_counts)
    rejected = np.asarray(rejected_means) * np.asarray(rejected_counts)
    examples = {"preference_accuracy": (chosen > rejected).astype(float), "margin": chosen - rejected}
    metrics = {"preference_accuracy": float(examples["preference_accuracy"].mean()),
               "margin": float(examples["margin"].mean()),
               "chosen_log_likelihood": corpus_log_likelihood(chosen_means, chosen_counts),
               "rejected_log_likelihood": corpus_log_likelihood(rejected_means, rejected_counts),
               "examples": len(pairs)}
    rendered = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) if isinstance(p, list)
                else p for p in prompts]
    prompt_tokens = [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in rendered]
    return {"metrics": metrics, "examples": examples, "chosen": chosen.tolist(), "rejected": rejected.tolist(),
            "source": source, "system": system, "conversations": [_as_chat(p) for p in pairs],
            "tokens_per_request": float(np.mean(prompt_tokens) + np.mean(chosen_counts)),
            "seconds": time.perf_counter() - started}


def implicit_reward(tuned: dict[str, Any], reference: dict[str, Any] | None) -> dict[str, Any] | None:
    """DPO's implicit reward on the held-out pairs, with `reference` (the base) as the reference
    model: (tuned - reference) score of the chosen reply against that of the rejected one."""
    if reference is None:
        return None
    chosen = np.asarray(tuned["chosen"]) - np.asarray(reference["chosen"])
    rejected = np.asarray(tuned["rejected"]) - np.asarray(reference["rejected"])
    return {"reference": "base", "reward_accuracy": float(np.mean(chosen > rejected)),
            "reward_margin": float(np.mean(chosen - rejected)), "chosen_reward": float(np.mean(chosen)),
            "rejected_reward": float(np.mean(rejected)), "examples": int(chosen.size)}


def _as_chat(pair: dict[str, Any]) -> dict[str, Any]:
    """The pair as a chat record answered by its chosen reply (what latency generates from)."""
    prompt = pair["prompt"] if isinstance(pair["prompt"], list) else [{"role": "user", "content": pair["prompt"]}]
    return {"messages": [*prompt, {"role": "assistant", "content": pair["chosen"]}]}
