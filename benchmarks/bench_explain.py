"""Claim: an Integrated Gradients explanation of one 128-token input takes under 0.5 s on CPU
(tunelab.evaluate.explain.explain at its default steps and precision), and its attributions are
faithful on real data: deleting a text's top-attributed words lowers the predicted label's
probability more than deleting as many random words.

Measured on the embedded MiniLM encoder (`default`) fine-tuned here for one epoch on a seeded
slice of the packaged sentiment corpus (`example:sentiment`), or on a classification run given
with --run (e.g. demo/run from `make demo`). Printed: the time of one explanation and of one
plain forward pass of the same input (best of --repeats, same process, same threads) and their
ratio, at the default precision (auto: bf16 on a CPU that computes it natively) and in fp32; the
integration error (how far the scores' sum is from the exact change in log-odds) at several step
counts in both precisions, and how closely bf16 ranks the words as fp32 does; and the deletion
test at k = 1 and 3 on --texts test texts.
Run: python benchmarks/bench_explain.py [--run RUN_DIR | --save DIR] [--threads N] [--texts N]
"""
from __future__ import annotations

import argparse
import csv
import random
import re
import statistics
import tempfile
import time
from pathlib import Path

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # the corpus' mojibake rows


def sentiment_rows(seed: int) -> list[tuple[str, str]]:
    from tunelab.examples import example_data_path
    path, encoding = example_data_path("sentiment")
    with open(path, encoding=encoding, newline="") as handle:
        rows = [(row["text"].strip(), row["sentiment"]) for row in csv.DictReader(handle)]
    rows = [(text, label) for text, label in rows if text and not CONTROL.search(text)]
    random.Random(seed).shuffle(rows)
    return rows


def fine_tune(rows: list[tuple[str, str]], out: Path, examples: int):
    """MiniLM with a fresh head, one epoch of plain transformers Trainer on `examples` rows."""
    from datasets import Dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    from tunelab.examples import default_model_path
    labels = sorted({label for _, label in rows})
    path = str(default_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    data = Dataset.from_dict({"text": [t for t, _ in rows[:examples]],
                              "label": [labels.index(l) for _, l in rows[:examples]]})
    data = data.map(lambda batch: tokenizer(batch["text"], truncation=True, max_length=64), batched=True,
                    remove_columns=["text"])
    args = TrainingArguments(output_dir=str(out), num_train_epochs=1, learning_rate=5e-5, per_device_train_batch_size=32,
                             warmup_steps=0.06, seed=0, use_cpu=True, report_to=[], save_strategy="no",
                             logging_strategy="no", disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer)).train()
    return model.eval(), tokenizer


def best_of(repeats: int, work) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a classification run directory (default: fine-tune MiniLM here)")
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument("--texts", type=int, default=200, help="test texts for the deletion test")
    parser.add_argument("--save", help="keep the model fine-tuned here in this directory (reuse it with --run)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared 2-core machine a second thread mostly spins)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--speed-only", action="store_true", help="only time the 128-token explanation")
    args = parser.parse_args()
    import numpy as np
    import torch

    from scipy.stats import spearmanr

    from tunelab.evaluate.explain import DEFAULT_STEPS, attribute, deletion_test, explain, resolve_precision
    from tunelab.evaluate.predict import classify, load_classifier
    torch.set_num_threads(args.threads)
    rows = sentiment_rows(seed=0)
    if args.run:
        model, tokenizer = load_classifier(args.run)
        source = args.run
    else:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as scratch:
            model, tokenizer = fine_tune(rows, Path(scratch), args.train_examples)
        if args.save:
            model.save_pretrained(args.save)
            tokenizer.save_pretrained(args.save)
        source = f"MiniLM fine-tuned here: 1 epoch on {args.train_examples} sentiment rows ({time.perf_counter() - started:.0f} s)"
    test = [text for text, _ in rows[-args.texts:]]  # never in the fine-tuning slice
    print(f"model: {source}; torch threads: {torch.get_num_threads()}")

    # speed on one 128-token input: test texts joined, cut at 128 tokens
    long_text = " ".join(test)
    ids = tokenizer(long_text, truncation=True, max_length=128)["input_ids"]
    long_text = tokenizer.decode(ids, skip_special_tokens=True)
    encoded = tokenizer(long_text, truncation=True, max_length=128, return_tensors="pt")
    with torch.inference_mode():
        forward = best_of(args.repeats, lambda: model(**encoded))
    default = resolve_precision("auto", next(model.parameters()).device)
    print(f"\n128-token input ({encoded['input_ids'].shape[1]} tokens): forward pass {forward * 1000:.1f} ms (fp32)")
    for precision in dict.fromkeys([default, "fp32"]):
        explained = best_of(args.repeats, lambda: explain(model, tokenizer, long_text, max_length=128,
                                                          precision=precision))
        label = "default, " + precision if precision == default else precision
        print(f"explanation ({DEFAULT_STEPS} steps, {label}) {explained:.3f} s = {explained / forward:.1f}x the "
              f"forward pass -> {'under' if explained < 0.5 else 'OVER'} 0.5 s")

    if args.speed_only:
        return 0
    # integration error against the step count, on short test texts
    # (the error against each precision's own change; the rank correlation against fp32 at 64 steps)
    print("\nsteps | precision | median integration error (|sum of scores - change in log-odds| / |change|) | "
          "median Spearman vs fp32 64 steps | same top-3 words | s per text")
    reference = [attribute(model, tokenizer, text, steps=64, max_length=128, precision="fp32") for text in test[:40]]
    for steps in (8, 16, 32, 64):
        for precision in dict.fromkeys(["fp32", default]):
            started = time.perf_counter()
            runs = [attribute(model, tokenizer, text, steps=steps, max_length=128, precision=precision)
                    for text in test[:40]]
            seconds = (time.perf_counter() - started) / len(runs)
            errors = [run.integration_error / abs(run.change) for run in runs if abs(run.change) > 1e-6]
            pairs = [([s["score"] for s in run.spans], [s["score"] for s in ref.spans])
                     for run, ref in zip(runs, reference) if len(ref.spans) > 2]
            rank = statistics.median(spearmanr(a, b).statistic for a, b in pairs)
            top3 = np.mean([set(np.argsort(a)[-3:]) == set(np.argsort(b)[-3:]) for a, b in pairs])
            print(f"{steps:5d} | {precision} | {statistics.median(errors):.4f} | {rank:.4f} | {top3:.0%} | {seconds:.3f}")

    # faithfulness: deletion test at the default steps
    def probabilities(batch):
        return classify(model, tokenizer, batch, max_length=128)[1]
    explanations, targets = [], []
    for text in test:
        run = attribute(model, tokenizer, text, max_length=128)
        explanations.append(run.spans)
        targets.append(run.label)
    print("\nk | texts | mean drop, top-k words deleted | mean drop, k random words (5 draws) | top-k larger in")
    for k in (1, 3):
        result = deletion_test(probabilities, test, explanations, targets, k=k, seed=0)
        print(f"{k} | {result['examples']} | {result['top_k_drop']:.3f} | {result['random_drop']:.3f} | "
              f"{result['top_k_beats_random']:.0%}")
    words = np.mean([len(spans) for spans in explanations])
    print(f"(test texts have {words:.1f} words on average)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
