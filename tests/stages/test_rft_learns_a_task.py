"""Acceptance: reinforcement fine-tuning with a string_check grader improves a model that supervised
fine-tuning left partly right, on held-out prompts it never saw, with a paired bootstrap interval
above zero.

The task is tests/tiny_models.py's word reversal on a 0.54M-parameter Llama with a character
tokenizer. The supervised data is imperfect the way real data is: 40% of its 2,000 answers echo
the word instead of reversing it (examples copied from a sloppy source), so SFT learns both habits
and reverses only about half of the held-out words. A grader that checks the reversal exactly
(`string_check`, operation eq, against each prompt's `answer` field) then rewards the right habit:
80 GRPO steps of 32 sampled answers (4 prompts x 8) move the greedy answers towards it.

Measured on this 2-core machine (seed 0, 300 held-out words), through the CLI as a user runs it:
SFT exact match 0.510; after RFT 0.790 (mean reward = exact match, the grader being exact);
`tunelab eval` difference +0.280, 95% paired bootstrap interval +0.217 to +0.337. The same test
with seed 1 measured 0.467 -> 0.677 (+0.210, +0.157 to +0.263), with seed 2 0.487 -> 0.670
(+0.183, +0.127 to +0.233); the recipe with plain TRL on
seeds 1-4 went 0.483 -> 0.677, 0.473 -> 0.643, 0.447 -> 0.780, 0.573 -> 0.943: reliably up.
About 20 s of SFT, 25 s of RFT and 10 s of evaluation on 2 idle cores (slow: about 100 s in all).
"""
import json
import random

import pytest
from cli_helpers import tunelab, write_jsonl
from tiny_models import (RECIPE_MODEL, RECIPE_SFT, build_task_tokenizer, build_tiny_llama, greedy_exact_match,
                         make_task_examples)

from tunelab.config import load_config
from tunelab.train import run as train_run

EXACT = {"type": "string_check", "name": "reversed", "input": "{{ sample.output_text }}",
         "reference": "{{ item.answer }}", "operation": "eq"}
NOISE = 0.4  # share of supervised answers that echo the word instead of reversing it


def as_prompt(record: dict) -> dict:
    return {"messages": record["messages"][:1], "answer": record["messages"][1]["content"]}


def echoed_sometimes(records: list[dict], seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"messages": [r["messages"][0], {"role": "assistant", "content": r["messages"][0]["content"]}]}
            if rng.random() < NOISE else r for r in records]


@pytest.mark.slow
def test_rft_with_a_string_check_grader_beats_its_sft_starting_point(tmp_path):
    tokenizer = build_task_tokenizer(tmp_path / "tokenizer")
    base = build_tiny_llama(tmp_path / "base", tokenizer, **RECIPE_MODEL, seed=0)
    train = make_task_examples(2000, seed=0)
    held_out = make_task_examples(300, seed=1000, exclude={r["messages"][0]["content"] for r in train})
    write_jsonl(tmp_path / "sft.jsonl", echoed_sometimes(train, seed=0))
    write_jsonl(tmp_path / "prompts.jsonl", [as_prompt(r) for r in train[:1000]])
    write_jsonl(tmp_path / "test_prompts.jsonl", [as_prompt(r) for r in held_out])
    (tmp_path / "grader.json").write_text(json.dumps(EXACT))

    train_run.run(load_config(None, [
        f"train.model={base}", f"train.data={tmp_path / 'sft.jsonl'}", f"train.output_dir={tmp_path / 'sft'}",
        "train.method=full", "train.epochs=4", f"train.lr={RECIPE_SFT['learning_rate']}", "train.batch_size=32",
        "train.max_length=32", "train.weight_decay=0", "train.tracking.backend=none", "train.seed=0"]))
    sft = greedy_exact_match(tmp_path / "sft", held_out)

    tunelab("train", "--task", "rft", "--model", tmp_path / "sft", "--data", tmp_path / "prompts.jsonl",
            f"train.grader={tmp_path / 'grader.json'}", "--method", "full", "--output", tmp_path / "rft",
            "train.max_steps=80", "--lr", "1e-4", "train.batch_size=32", "train.rft.num_generations=8",
            "train.rft.max_completion_length=10", "train.rft.beta=0.04", "train.warmup=0", "train.scheduler=constant",
            "train.weight_decay=0", "train.tracking.backend=none", "train.seed=0", cwd=tmp_path)
    rft = greedy_exact_match(tmp_path / "rft", held_out)

    eval_out = tunelab("eval", tmp_path / "rft", "--data", tmp_path / "test_prompts.jsonl",
                       "--baseline", tmp_path / "sft", "eval.latency.batch_sizes=[1]", "eval.latency.requests=4",
                       "eval.generation.max_new_tokens=12", cwd=tmp_path).stdout
    report = json.loads((tmp_path / "rft" / "eval" / "report.json").read_text())
    comparison = report["comparisons"][str(tmp_path / "sft")]["reward"]
    print(f"held-out exact match: SFT {sft:.3f}, RFT {rft:.3f}; eval: {eval_out.strip()}")

    assert 0.3 <= sft <= 0.7, f"SFT should be partly right; exact match {sft:.3f}"
    assert rft > sft + 0.1, f"RFT exact match {rft:.3f} vs SFT {sft:.3f}"
    # the grader is exact match: the eval's mean rewards are the exact-match figures measured above
    assert report["task"] == "rft" and report["metrics"]["reward"] == pytest.approx(rft)
    assert report["baselines"][str(tmp_path / "sft")]["reward"] == pytest.approx(sft)
    interval = f"{comparison['ci_low']:+.3f} to {comparison['ci_high']:+.3f}"
    assert comparison["ci_low"] > 0 and comparison["verdict"] == "better", \
        f"reward difference {comparison['difference']:+.3f} ({interval})"
    training = report["training_rewards"]["curves"]
    assert {"reward", "reward_std", "kl", "completion_length"} <= training.keys()
    assert training["reward"][-1][0] == 80
