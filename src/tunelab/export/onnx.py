"""`tunelab export RUN --format onnx [--int8]`: a classification run as an ONNX graph that ONNX
Runtime runs on CPU, with its tokenizer, labels, task prefixes and truncation length.

The graph is traced with `torch.onnx.export` (the dynamo exporter; dynamic batch and sequence
axes), and with --int8 its weights are quantised by ONNX Runtime's `quantize_dynamic` (int8
weights, activations quantised at run time). An adapter run is first merged onto its base by
`export.merge`, which checks the merge on logits. Nothing is kept before the file that will be
served is shown to answer as the PyTorch classifier does on the run's test split:

- float32: every logit within the tolerance (default 1e-4) and every label the same;
- int8: labels agree on at least INT8_MIN_AGREEMENT of the examples and accuracy drops by at
  most INT8_MAX_ACCURACY_DROP (int8 logits move by up to a few tenths: recorded, not gated).

The files are built in a hidden sibling directory and moved into place after the checks pass
(`export.checks.staged_output`); the manifest records the source run, the format and the checks with
their figures. Generative runs are refused: they export to GGUF.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.errors import TunelabError
from tunelab.export.checks import check_destination, staged_output
from tunelab.export.onnx_runtime import OnnxClassifier, inference_session, require
from tunelab.files import manifest, write_json, write_text
from tunelab.train.run_dir import RunDir

MODEL_FILE = "model.onnx"
FP32_TOLERANCE = 1e-4  # ONNX Runtime fuses attention and layer norm: sums reordered, ~1e-6 apart in fp32
INT8_MIN_AGREEMENT = 0.97  # the int8 model answers as the float model on at least 97% of the test split ...
INT8_MAX_ACCURACY_DROP = 0.01  # ... and loses at most one point of accuracy on it
TRACE_TEXTS = ["a sample sentence to trace the graph with", "short"]  # two lengths: padding is traced too


@dataclass
class OnnxExportResult:
    run_dir: Path
    out_dir: Path
    message: str
    checks: dict[str, Any] = field(default_factory=dict)


def run(run_dir: str | Path, *, int8: bool = False, out_dir: str | Path | None = None,
        tolerance: float | None = None) -> OnnxExportResult:
    run = RunDir.open(run_dir)
    missing = run.missing_model_files()
    if missing:
        raise TunelabError(f"the run directory lacks {' and '.join(missing)}, so there is no model to export",
                           where=str(run.path), fix="export a complete run directory written by `tunelab train`")
    if not run.is_classifier:
        raise TunelabError(f"ONNX export covers classifiers, and this run is a {run.task} (generative) model",
                           where=str(run.path), fix="export it with --format gguf (llama.cpp, Ollama) or --merge "
                                                    "(transformers), or serve the run as it is")
    require("onnx", "onnxscript", "onnxruntime")  # torch.onnx's exporter, and the runtime the checks use
    out_dir = Path(out_dir) if out_dir else run.path / ("onnx-int8" if int8 else "onnx")
    check_destination(out_dir, "onnx")
    where, texts, y_true = held_out_split(run)
    limit = FP32_TOLERANCE if tolerance is None else tolerance

    from tunelab.evaluate.predict import classifier_logits, load_classifier
    from tunelab.models.load import load_tokenizer
    with tempfile.TemporaryDirectory(prefix="tunelab-onnx-") as scratch:
        source, merge_check = model_source(run, Path(scratch))
        model, tokenizer = load_classifier(str(source))
        graph = Path(scratch) / "model-fp32.onnx"
        export_graph(model, tokenizer, graph)
        if int8:
            graph = quantize(graph, Path(scratch) / "model-int8.onnx")
        reference = classifier_logits(model, tokenizer, texts, max_length=run.max_length)
        with staged_output(out_dir) as stage:
            shutil.copyfile(graph, stage / MODEL_FILE)
            tokenizer.save_pretrained(str(stage))
            # checked as it will be served: the written graph and tokenizer, through the loader serving uses
            exported = OnnxClassifier(inference_session(stage / MODEL_FILE), load_tokenizer(str(stage)),
                                      run.labels, run.max_length)
            checks = compare(reference, exported.logits(texts), y_true, int8=int8, tolerance=limit, data=where)
            refuse_failed(checks, run.path, int8)
            outputs = {p.name: p for p in stage.iterdir() if p.is_file()}
            write_text(stage / "README.md", model_card(run, out_dir, int8, checks))
            write_json(stage / "manifest.json", manifest(
                stage="export", inputs=source_files(run), outputs=outputs,
                config={"format": "onnx", "int8": int8, "tolerance": limit},
                extra={"format": "onnx", "model_file": MODEL_FILE, "int8": int8, "source_run": str(run.path.resolve()),
                       "task": run.task, "labels": run.labels, "task_prefixes": run.prefixes,
                       "max_length": run.max_length, "base_model": {"id": run.base_model_id, "path": run.base_model},
                       "merge_check": merge_check, "checks": checks}))
    return OnnxExportResult(run.path, out_dir, summary(out_dir, int8, checks), checks)


def held_out_split(run: RunDir) -> tuple[str, list[str], np.ndarray]:
    """(where, texts with their task prefixes, true label indices) of the test split(s) held out
    beside the run's training data: what the export is checked on."""
    from tunelab.evaluate.classification import label_indices
    from tunelab.evaluate.run import input_prefixes, test_records
    if not run.test_sources():
        raise TunelabError("the export is checked on the run's test split, and no test.jsonl was found beside its "
                           "training data", where=str(run.path),
                           fix="put the prepared directory the run was trained on back where config.yaml's "
                               "train.data names it")
    where, records = test_records(run, None)
    if "text" not in records[0]:
        raise TunelabError("the run's test split does not hold classification records (text, label)", where=where,
                           fix="export a classification run trained on `tunelab data prepare` output")
    texts = [prefix + r["text"] for prefix, r in zip(input_prefixes(run, records), records)]
    return where, texts, label_indices(records, run.labels or [], where)


def model_source(run: RunDir, scratch: Path) -> tuple[Path, dict[str, Any] | None]:
    """The directory holding the full classifier: the run, or for an adapter run its merge onto
    the base (checked on logits by export.merge), written to scratch."""
    if not run.is_adapter:
        return run.path, None
    from tunelab.export import merge
    merged = merge.run(run.path, merge=True, out_dir=scratch / "merged")
    return merged.out_dir, {"max_abs_logit_diff": merged.max_abs_diff, "tolerance": merged.tolerance}


def export_graph(model, tokenizer, path: Path) -> None:
    """The classifier's logits as an ONNX graph with dynamic batch and sequence axes, taking the
    tokenizer's inputs (input_ids, attention_mask, token_type_ids where it makes them) as int64."""
    import inspect

    import torch
    accepted = inspect.signature(model.forward).parameters
    names = [n for n in tokenizer.model_input_names if n in accepted]

    class Logits(torch.nn.Module):  # positional inputs in, the logits tensor out (no ModelOutput)
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(**dict(zip(names, inputs))).logits

    sample = tokenizer(TRACE_TEXTS, padding=True, return_tensors="pt")
    axes = {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")}
    try:
        with quiet_exporter(), torch.no_grad():
            torch.onnx.export(Logits().eval(), tuple(sample[n] for n in names), str(path), input_names=names,
                              output_names=["logits"], dynamic_shapes=(tuple(axes for _ in names),), dynamo=True,
                              external_data=False, verbose=False)
    except (torch.onnx.errors.OnnxExporterError, RuntimeError, TypeError, ValueError) as exc:
        why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise TunelabError(f"torch.onnx cannot export this {model.config.model_type} classifier ({why})",
                           fix="serve the run with serve.engine=transformers instead") from None


def quantize(graph: Path, out: Path) -> Path:
    """Dynamic int8 quantisation (ONNX Runtime): int8 weights, activations quantised per batch."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    with quiet_exporter():
        quantize_dynamic(str(graph), str(out), weight_type=QuantType.QInt8)
    return out


@contextmanager
def quiet_exporter():
    """torch.onnx and the quantiser log advice meant for their developers (torchvision absent,
    pre-processing suggested) to their loggers and as warnings: not for our users' terminals."""
    loggers = [logging.getLogger(), logging.getLogger("torch.onnx")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def compare(reference: np.ndarray, exported: np.ndarray, y_true: np.ndarray, *, int8: bool, tolerance: float,
            data: str) -> dict[str, Any]:
    """The export's answers against the PyTorch classifier's on the same texts, with the
    thresholds they are held to and whether they pass."""
    ours, theirs = exported.argmax(axis=1), reference.argmax(axis=1)
    pytorch_accuracy, onnx_accuracy = float((theirs == y_true).mean()), float((ours == y_true).mean())
    checks = {"data": data, "examples": int(len(y_true)),
              "max_abs_logit_diff": float(np.abs(reference - exported).max()),
              "label_agreement": float((ours == theirs).mean()),
              "accuracy": {"pytorch": pytorch_accuracy, "onnx": onnx_accuracy,
                           "delta": onnx_accuracy - pytorch_accuracy}}
    if int8:
        checks["thresholds"] = {"min_label_agreement": INT8_MIN_AGREEMENT,
                                "max_accuracy_drop": INT8_MAX_ACCURACY_DROP}
        passed = (checks["label_agreement"] >= INT8_MIN_AGREEMENT
                  and pytorch_accuracy - onnx_accuracy <= INT8_MAX_ACCURACY_DROP)
    else:
        checks["thresholds"] = {"max_abs_logit_diff": tolerance, "min_label_agreement": 1.0}
        passed = checks["max_abs_logit_diff"] <= tolerance and checks["label_agreement"] == 1.0  # NaN fails too
    checks["passed"] = bool(passed)
    return checks


def refuse_failed(checks: dict[str, Any], run_dir: Path, int8: bool) -> None:
    if checks["passed"]:
        return
    n, agreement = checks["examples"], checks["label_agreement"]
    if int8:
        drop = -checks["accuracy"]["delta"]
        raise TunelabError(f"the int8 model agrees with the PyTorch classifier on {agreement:.1%} of {n:,} test "
                           f"examples (at least {INT8_MIN_AGREEMENT:.0%} required) and its accuracy is "
                           f"{drop * 100:+.1f} points lower (at most {INT8_MAX_ACCURACY_DROP * 100:g} allowed), "
                           "so nothing was written", where=str(run_dir),
                           fix="export without --int8 (float32 ONNX keeps the run's answers)")
    raise TunelabError(f"the ONNX model's logits differ from the PyTorch classifier's by up to "
                       f"{checks['max_abs_logit_diff']:.3g} (tolerance {checks['thresholds']['max_abs_logit_diff']:g}) "
                       f"and its labels agree on {agreement:.1%} of {n:,} test examples, so nothing was written",
                       where=str(run_dir), fix="serve the run with serve.engine=transformers, or report this as a bug")


def source_files(run: RunDir) -> dict[str, Path]:
    names = ("manifest.json", "config.json", "model.safetensors", "adapter_config.json", "adapter_model.safetensors")
    return {name: run.path / name for name in names if (run.path / name).is_file()}


def summary(out_dir: Path, int8: bool, checks: dict[str, Any]) -> str:
    accuracy = checks["accuracy"]
    kind = "int8 ONNX" if int8 else "float32 ONNX"
    return (f"{kind} classifier saved to {out_dir}; on {checks['examples']:,} test examples its labels agree with "
            f"the PyTorch model's on {checks['label_agreement']:.2%} (max logit difference "
            f"{checks['max_abs_logit_diff']:.2g}), accuracy {accuracy['onnx']:.2%} vs {accuracy['pytorch']:.2%} "
            f"({accuracy['delta'] * 100:+.2f} points)")


def model_card(run: RunDir, out_dir: Path, int8: bool, checks: dict[str, Any]) -> str:
    accuracy = checks["accuracy"]
    return f"""---
library_name: onnx
tags: [tunelab, classification, onnx{', int8' if int8 else ''}]
---
# ONNX export of `{run.path.resolve()}`

{'Dynamic int8' if int8 else 'Float32'} ONNX graph of the run's classifier (labels: {', '.join(run.labels or [])}),
with its tokenizer. Inputs are truncated at {run.max_length} tokens, as in training; task prefixes
(manifest.json `task_prefixes`) go before each text.

Checked on {checks['examples']:,} test examples ({checks['data']}) before saving: labels agree with
the PyTorch model on {checks['label_agreement']:.2%}, largest logit difference
{checks['max_abs_logit_diff']:.2g}, accuracy {accuracy['onnx']:.2%} (PyTorch {accuracy['pytorch']:.2%}).

```bash
tunelab serve {out_dir} serve.engine=onnx   # /v1/classify on CPU
tunelab eval {out_dir}                      # the report compares it with the run
```

```python
from tunelab.export.onnx_runtime import OnnxClassifier
classifier = OnnxClassifier.load("{out_dir}")
indices, probabilities = classifier.predict(["{(next(iter(run.prefixes.values()), ''))}an example text"])
```
"""
