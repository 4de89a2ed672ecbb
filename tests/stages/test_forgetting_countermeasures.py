"""Forgetting countermeasures measured end to end through the CLI, with the eval stage's retention
figure: a tiny Llama learns task A (reverse a word), then task B (copy a word marked "C "),
three ways: plain, with train.replay (A's training data, 30% of the mix) and with
train.regularization=ewc (Fisher on A's training data, strength 100). `tunelab eval` scores each
on B's held-out words (exact match) and, with eval.forgetting.data = A's held-out words, reports
retention = perplexity of A's answers under the model B started from / under the B model.

Measured on 2 CPU cores (this test, seed 0): see the figures it prints, and the README's
"Forgetting countermeasures" table. Plain training on B destroys A; replay keeps nearly all of it
and learns B; EWC keeps more of A than plain training but at the cost of learning less of B.
"""
import json

import pytest

from cli_helpers import tunelab, write_jsonl
from tiny_models import RECIPE_MODEL, build_task_tokenizer, build_tiny_llama, make_task_examples

COMMON = ["train.method=full", "train.lr=1e-3", "train.batch_size=32", "train.max_length=32", "train.weight_decay=0",
          "train.tracking.backend=none", "train.seed=0", "train.save_steps=100000"]
EVAL = ["eval.robustness.perturbations=[]", "eval.resamples=200", "eval.latency.batch_sizes=[1]",
        "eval.latency.requests=1", "eval.generation.max_new_tokens=10"]


def copy_examples(n, seed, exclude):
    return [{"messages": [{"role": "user", "content": "C " + r["messages"][0]["content"]},
                          {"role": "assistant", "content": r["messages"][0]["content"]}]}
            for r in make_task_examples(n, seed=seed, exclude=exclude)]


@pytest.mark.slow
def test_replay_and_ewc_keep_task_a_while_learning_task_b(tmp_path):
    base = build_tiny_llama(tmp_path / "base", build_task_tokenizer(tmp_path / "tok"), **RECIPE_MODEL)
    a_train = make_task_examples(2000, seed=0)
    seen = {r["messages"][0]["content"] for r in a_train}
    a_test = make_task_examples(200, seed=1, exclude=seen)
    b_train = copy_examples(1000, seed=2, exclude=seen)
    b_test = copy_examples(200, seed=3, exclude=seen | {r["messages"][1]["content"] for r in b_train})
    for name, rows in (("a_train", a_train), ("a_test", a_test), ("b_train", b_train), ("b_test", b_test)):
        write_jsonl(tmp_path / f"{name}.jsonl", rows)
    tunelab("train", *COMMON, f"train.model={base}", f"train.data={tmp_path / 'a_train.jsonl'}",
            f"train.output_dir={tmp_path / 'run-a'}", "train.epochs=6")

    arms = {"plain": [],
            "replay": [f"train.replay.data={tmp_path / 'a_train.jsonl'}", "train.replay.share=0.3"],
            "ewc": ["train.regularization=ewc", f"train.ewc.data={tmp_path / 'a_train.jsonl'}", "train.ewc.strength=100"]}
    figures = {}
    for arm, extra in arms.items():
        run = tmp_path / f"run-b-{arm}"
        tunelab("train", *COMMON, *extra, f"train.model={tmp_path / 'run-a'}",
                f"train.data={tmp_path / 'b_train.jsonl'}", f"train.output_dir={run}", "train.epochs=3")
        tunelab("eval", run, "--data", tmp_path / "b_test.jsonl", *EVAL,
                f"eval.forgetting.data={tmp_path / 'a_test.jsonl'}")
        report = json.loads((run / "eval" / "report.json").read_text())
        figures[arm] = {"retention_of_a": report["forgetting"]["retention"],
                        "b_exact_match": report["metrics"]["exact_match"]}
        assert report["forgetting"]["base"] < 1.1  # the starting point (run A) had learnt A
    print("\n" + "\n".join(f"{arm}: retention of A {f['retention_of_a']:.3f}, exact match on B {f['b_exact_match']:.3f}"
                           for arm, f in figures.items()))

    replay_manifest = json.loads((tmp_path / "run-b-replay" / "manifest.json").read_text())
    assert "a_train.jsonl" in json.dumps(replay_manifest)  # the replayed file is recorded with its hash
    assert figures["plain"]["retention_of_a"] < 0.5  # plain training on B forgets A
    assert figures["plain"]["b_exact_match"] > 0.5
    assert figures["replay"]["retention_of_a"] > 0.9 and figures["replay"]["b_exact_match"] > 0.9
    assert figures["ewc"]["retention_of_a"] > figures["plain"]["retention_of_a"] + 0.2


def test_ewc_without_general_data_is_refused_before_training(tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", make_task_examples(20, seed=0))
    proc = tunelab("train", f"train.data={data}", "train.regularization=ewc", f"train.output_dir={tmp_path / 'run'}",
                   "train.model=unused-because-refused-first", check=False)
    assert proc.returncode == 2
    message = " ".join(proc.stderr.split())
    assert "train.ewc.data" in message and "no general data" in message and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()
