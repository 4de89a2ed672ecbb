"""The run directory beside the model: resolved config, manifest, model card; and the
environment for the experiment tracker."""
from __future__ import annotations

import os
import resource
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml

from tunelab.errors import TunelabError
from tunelab.files import manifest, sha256_of, write_json, write_text

WEIGHT_SUFFIXES = (".safetensors", ".bin")


def configure_tracking(tracking, run_dir: Path) -> str | None:
    """Point transformers' MLflow/TensorBoard callbacks where the config says; returns the URI.

    Set explicitly on every run, never inherited from an earlier run in the same process: the
    callbacks read these variables, and mlflow keeps a process-wide tracking URI and experiment
    that would otherwise send a second run to the first one's store."""
    if tracking.backend == "mlflow":
        import mlflow
        uri = tracking.uri or f"sqlite:///{(Path.cwd() / 'mlruns.db').resolve()}"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        os.environ["MLFLOW_EXPERIMENT_NAME"] = tracking.experiment
        mlflow.set_tracking_uri(uri)
        if int(os.environ.get("RANK", "0")) == 0:  # only the main process logs (and creates the experiment)
            try:
                mlflow.set_experiment(tracking.experiment)
            except Exception as exc:  # noqa: BLE001 (any store error: refuse before training, not after)
                why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                raise TunelabError(f"cannot open the MLflow tracking store {uri} ({why})",
                                   fix="check train.tracking.uri, or set train.tracking.backend=none") from None
        return uri
    if tracking.backend == "tensorboard":
        directory = tracking.uri or str(run_dir / "tensorboard")
        os.environ["TENSORBOARD_LOGGING_DIR"] = directory
        return directory
    return None


@contextmanager
def tracking_run(trainer):
    """One MLflow run open around a stage's training *and* its final evaluation. Left to itself,
    transformers' MLflowCallback ends its run at train end, and the evaluation after it then
    logs into a new, unnamed run; with a run already active the callback logs into that one and
    leaves ending it to us (FINISHED, or FAILED when an exception escapes)."""
    if "mlflow" not in (trainer.args.report_to or []) or not trainer.is_world_process_zero():
        yield
        return
    import mlflow
    with mlflow.start_run(run_name=trainer.args.run_name, nested=mlflow.active_run() is not None):
        yield


def model_fingerprint(name_or_path: str) -> str:
    """SHA-256 of a local model's config and weights; the hub commit for a cached hub model."""
    path = Path(name_or_path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES or p.name == "config.json")
        import hashlib
        digest = hashlib.sha256()
        for file in files:
            digest.update(sha256_of(file).encode())
        return digest.hexdigest()
    return "hub:" + name_or_path


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def peak_memory_mb() -> dict[str, float]:
    peak = {"host_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available():
        peak["gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


def write_run_files(run_dir: Path, *, config: dict[str, Any], base_model: str, resolved_base: str, task: str,
                    method: str, data_sources: dict[str, str], seed: int, wall_time_s: float,
                    trainable: tuple[int, int], final_metrics: dict[str, Any], stages: list[dict[str, Any]],
                    prefixes: dict[str, str], labels: list[str] | None, interrupted: bool) -> None:
    write_text(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    outputs = {p.name: p for p in run_dir.iterdir() if p.is_file() and p.suffix in (".safetensors", ".json")
               and p.name != "manifest.json"}
    extra = {
        "base_model": {"id": base_model, "path": resolved_base, "sha256": model_fingerprint(resolved_base)},
        "task": task, "method": method, "seed": seed, "labels": labels, "task_prefixes": prefixes,
        "datasets": data_sources, "git_commit": git_commit(), "wall_time_s": round(wall_time_s, 1),
        "peak_memory": peak_memory_mb(), "parameters": {"trainable": trainable[0], "total": trainable[1]},
        "final_metrics": final_metrics, "stages": stages, "interrupted": interrupted,
    }
    write_text(run_dir / "README.md", model_card(base_model, task, method, data_sources, final_metrics, trainable,
                                                 labels, prefixes, run_dir))
    write_json(run_dir / "manifest.json", manifest(stage="train", inputs={}, outputs=outputs, config=config,
                                                   extra=extra))


def model_card(base_model, task, method, data_sources, metrics, trainable, labels, prefixes, run_dir) -> str:
    adapter = (run_dir / "adapter_config.json").is_file()
    auto = "AutoModelForSequenceClassification" if task == "classification" else "AutoModelForCausalLM"
    if adapter:
        # an adapter directory has no config.json (one there makes transformers look for full weights),
        # so the head's size and label names are passed to the base model here
        head = ""
        if task == "classification" and labels:
            ids = dict(enumerate(labels))
            head = f", num_labels={len(ids)}, id2label={ids!r}, label2id={ {v: k for k, v in ids.items()}!r}"
        load = (f"from peft import AutoPeftModel{'ForSequenceClassification' if task == 'classification' else 'ForCausalLM'}"
                f"\nmodel = AutoPeftModel{'ForSequenceClassification' if task == 'classification' else 'ForCausalLM'}"
                f".from_pretrained(\"{run_dir}\"{head})")
    else:
        load = f"from transformers import {auto}\nmodel = {auto}.from_pretrained(\"{run_dir}\")"
    metric_lines = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
                             for k, v in metrics.items()) or "| (no validation data) | |"
    data_lines = "\n".join(f"- `{path}` (sha256 `{digest[:16]}…`)" for path, digest in data_sources.items())
    label_line = f"\nLabels: {', '.join(labels)}\n" if labels else ""
    prefix_line = ("\nTask prefixes (applied to inputs at serving time): "
                   + ", ".join(f"{k}: `{v}`" for k, v in prefixes.items()) + "\n") if prefixes else ""
    return f"""---
base_model: {base_model}
library_name: {'peft' if adapter else 'transformers'}
tags: [tunelab, {task}, {method}]
---
# Fine-tuned with tunelab

- base model: `{base_model}`
- task: {task}; method: {method}; trainable parameters: {trainable[0]:,} of {trainable[1]:,}
{label_line}{prefix_line}
## Data
{data_lines}

## Validation metrics (best checkpoint)
| metric | value |
|---|---|
{metric_lines}

## Use
```python
{load}
```
The full resolved configuration is in `config.yaml`; hashes, versions and timings in `manifest.json`;
every logged step in `metrics.jsonl`.
"""


def save_weights(trainer, directory: Path, *, merge_adapter: bool) -> None:
    """The trained model (or adapter) and tokenizer in `directory`, as save_pretrained writes them.

    merge_adapter: the run's adapter was trained on weights merged from an earlier adapter run,
    which exist nowhere on disk, so the adapter alone would load onto the wrong base. The merged
    full weights are saved instead: transformers, PEFT and vLLM load them with no tunelab code.
    Call it at the end of the run: merging replaces the adapter layers in place."""
    from peft import PeftModel
    model = trainer.accelerator.unwrap_model(trainer.model)
    if not (merge_adapter and isinstance(model, PeftModel)):
        trainer.save_model(str(directory))
        return
    merged = model.merge_and_unload()
    trainer.model = merged
    if trainer.is_world_process_zero():
        merged.save_pretrained(str(directory))
        trainer.processing_class.save_pretrained(str(directory))
