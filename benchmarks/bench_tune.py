"""Claim under test: `tunelab tune` finds a better configuration than the defaults within a fixed
budget. On the embedded sentiment corpus (example:sentiment) with the embedded MiniLM encoder,
full fine-tuning on a seeded sample of the training split:

- default: tunelab's defaults for this task and method (lr 5e-5, 3 epochs, batch 8, warm-up 5%);
- tuned: the best of TRIALS Optuna trials (TPE, Hyperband pruning) over lr [1e-5, 3e-4] (log),
  epochs [1, 3], batch size {8, 16, 32} and warm-up [0, 0.2], each scored by the eval stage on the
  validation sample.

Both are then scored once on a fixed, seeded 1,000-example sample of the test split, which the
search never saw: macro-F1 and the paired bootstrap interval of tuned - default (the eval
stage's comparison, the default run as a baseline).

Run: python benchmarks/bench_tune.py [--train 500] [--val 300] [--trials 5] [--out DIR]
(OMP_NUM_THREADS=1 on a shared machine). Writes DIR/results.json and prints the figures.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SPACE = {"lr": {"low": 1e-5, "high": 3e-4, "log": True}, "epochs": {"low": 1, "high": 3},
         "batch_size": {"choices": [8, 16, 32]}, "warmup": {"low": 0.0, "high": 0.2}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=500)
    parser.add_argument("--val", type=int, default=300)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "tune")
    args = parser.parse_args()
    from tunelab import tune
    from tunelab.config import load_config
    from tunelab.data import prepare
    from tunelab.evaluate import run as eval_run
    from tunelab.files import read_jsonl, write_json, write_jsonl
    from tunelab.progress import quiet_library_output
    from tunelab.train import run as train_run
    quiet_library_output()
    import datasets
    datasets.disable_progress_bars()

    started = time.time()
    corpus = args.out / "prepared"
    if not (corpus / "manifest.json").is_file():
        cfg = load_config(ROOT / "examples" / "sentiment.yaml").data
        prepare.run(cfg.model_copy(update={"inputs": ["example:sentiment"], "out_dir": str(corpus)}),
                    show_progress=False)
    data = args.out / "data"
    for split, n in (("train", args.train), ("val", args.val), ("test", args.test)):
        write_jsonl(data / f"{split}.jsonl", random.Random(0).sample(read_jsonl(corpus / f"{split}.jsonl"), n))
    common = [f"train.data={data}", "train.model=default", "train.method=full", "train.max_length=64",
              "train.tracking.backend=none", "train.seed=0", "eval.latency.batch_sizes=[1]", "eval.latency.requests=4"]

    default_dir = args.out / "default"
    if not (default_dir / "manifest.json").is_file():
        train_run.run(load_config(None, common + [f"train.output_dir={default_dir}"]))
    cfg = load_config(None, common + [f"tune.space={SPACE}", f"tune.trials={args.trials}",
                                      f"tune.output_dir={args.out / 'search'}"])
    result = tune.run(cfg, resume=True, log=lambda m: print(f"tune: {m}", flush=True))
    best_dir = result.results["best_run_dir"]

    settings = load_config(None, ["eval.robustness.perturbations=[]", "eval.latency.batch_sizes=[1]",
                                  "eval.latency.requests=4"]).eval
    settings.baselines = [str(default_dir)]
    settings.model, settings.data, settings.out_dir = best_dir, str(data / "test.jsonl"), str(args.out / "test-eval")
    report = eval_run.run(settings).report
    comparison = report["comparisons"][str(default_dir)]["macro_f1"]
    figures = {
        "budget": {"train_examples": args.train, "val_examples": args.val, "trials": args.trials},
        "test_examples": args.test, "space": SPACE,
        "default": {"macro_f1": report["baselines"][str(default_dir)]["macro_f1"]},
        "tuned": {"macro_f1": report["metrics"]["macro_f1"], "params": result.results["best"]["params"],
                  "val_macro_f1": result.results["best"]["value"]},
        "difference": {k: comparison[k] for k in ("difference", "ci_low", "ci_high", "verdict")},
        "trials": [{k: t[k] for k in ("number", "state", "value", "params", "seconds")} for t in result.results["trials"]],
        "wall_seconds": round(time.time() - started),
    }
    write_json(args.out / "results.json", figures)
    print(f"default config: test macro-F1 {figures['default']['macro_f1']:.3f}")
    print(f"best of {args.trials} trials {figures['tuned']['params']}: test macro-F1 {figures['tuned']['macro_f1']:.3f} "
          f"(validation {figures['tuned']['val_macro_f1']:.3f})")
    d = figures["difference"]
    print(f"tuned - default: {d['difference']:+.3f} (95% CI {d['ci_low']:+.3f} to {d['ci_high']:+.3f}), {d['verdict']}; "
          f"wall {figures['wall_seconds']} s")


if __name__ == "__main__":
    main()
