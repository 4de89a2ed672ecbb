"""Acceptance: a small randomly initialised Llama-style model with its own tokenizer and chat
template, fully fine-tuned by `tunelab train` on a few thousand examples of a deterministic text
transformation (reversing a word), gets over 90% exact match on held-out words it never saw.
The recipe (tests/tiny_models.py) was measured at 100% on seven seeds in ~30 s of training.
`tunelab eval` then proves it on the same held-out words: exact match against the base model with
an interval, and the robustness table."""
import json

from tiny_models import (RECIPE_DATA, RECIPE_MODEL, RECIPE_SFT, build_task_tokenizer, build_tiny_llama,
                         greedy_exact_match, make_task_examples)

from tunelab.config import load_config
from tunelab.evaluate import run as eval_run
from tunelab.train import run as train_run


def test_full_fine_tune_learns_word_reversal_to_over_90_percent_exact_match(tmp_path):
    tokenizer = build_task_tokenizer(tmp_path / "tokenizer")
    base = build_tiny_llama(tmp_path / "base", tokenizer, **RECIPE_MODEL)
    train = make_task_examples(RECIPE_DATA["n_train"], seed=0)
    train_words = {r["messages"][0]["content"] for r in train}
    held_out = make_task_examples(RECIPE_DATA["n_test"], seed=1, exclude=train_words)
    assert not train_words & {r["messages"][0]["content"] for r in held_out}
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in train))

    before = greedy_exact_match(base, held_out)
    cfg = load_config(None, [
        f"train.model={base}", f"train.data={data}", f"train.output_dir={tmp_path / 'run'}", "train.method=full",
        f"train.epochs={RECIPE_SFT['num_train_epochs']}", f"train.lr={RECIPE_SFT['learning_rate']}",
        f"train.batch_size={RECIPE_SFT['per_device_train_batch_size']}", f"train.max_length={RECIPE_SFT['max_length']}",
        "train.weight_decay=0", "train.tracking.backend=none", "train.seed=0"])
    train_run.run(cfg)
    after = greedy_exact_match(tmp_path / "run", held_out)

    print(f"held-out exact match: before {before:.3f}, after {after:.3f}")
    assert before == 0.0
    assert after > 0.9, f"held-out exact match {after:.3f}"

    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in held_out))
    settings = load_config(None, ["eval.baselines=[base]", "eval.resamples=200", "eval.robustness.max_examples=100",
                                  "eval.latency.batch_sizes=[1,8]", "eval.latency.requests=8",
                                  "eval.generation.max_new_tokens=12"]).eval
    settings = settings.model_copy(update={"model": str(tmp_path / "run"), "data": str(test),
                                           "out_dir": str(tmp_path / "eval")})
    report = eval_run.run(settings).report
    assert report["task"] == "generative"
    assert report["metrics"]["exact_match"] == after  # eval's batched generation agrees with the plain loop
    assert report["baselines"]["base"]["exact_match"] == 0.0
    assert report["comparisons"]["base"]["exact_match"]["verdict"] == "better"
    robustness = report["robustness"]["perturbations"]
    assert set(robustness) == {"typos", "casing", "whitespace", "punctuation"}
    # reversing a perturbed word is still reversal: casing changes the expected answer, so it flips
    assert robustness["casing"]["flip_rate"] > 0.5
    assert (tmp_path / "eval" / "predictions.jsonl").is_file() and (tmp_path / "eval" / "report.html").is_file()
