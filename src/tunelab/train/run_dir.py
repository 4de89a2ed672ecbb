"""The run directory `tunelab train` writes, and RunDir, the one reader of it.

Writing (process 0, at the end of a run): the weights or adapter and tokenizer
(`save_pretrained`), config.yaml (the resolved config), manifest.json (base model, task,
labels, task prefixes, data hashes, versions, timings) and the model card README.md.

Reading: every other stage (eval, serve, monitor, export, the registry) asks RunDir, never the
files: what the task is, its labels and prefixes, the base model an adapter belongs on, the data
it was trained on and the test split held out beside it, its evaluation report. A directory that
tunelab did not write (any Hugging Face model directory) answers from its config.json and
adapter_config.json where it can.
"""
from __future__ import annotations

import json
import resource
import subprocess
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from tunelab.errors import TunelabError
from tunelab.files import manifest, sha256_of, write_json, write_text
from tunelab.train.model_card import model_card, remote_model_card

CLASSIFICATION = "classification"
EVAL_REPORT = Path("eval") / "report.json"


class RunDir:
    """Read-only view of a run directory (or any model directory); files are read once, lazily."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        """The run directory at `path`; a one-sentence error when there is none."""
        run = cls(path)
        if not run.path.is_dir():
            raise TunelabError("run directory not found", where=str(path),
                               fix="give the output directory of `tunelab train`")
        return run

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # the files, as written

    @cached_property
    def manifest(self) -> dict[str, Any]:
        return _read_json(self.path / "manifest.json") or {}

    @cached_property
    def config(self) -> dict[str, Any]:
        """The resolved config.yaml of the run ({} for a directory tunelab did not train)."""
        path = self.path / "config.yaml"
        if not path.is_file():
            return {}
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise TunelabError(f"config.yaml is not readable YAML ({exc})", where=str(path),
                               fix="restore the file `tunelab train` wrote") from None
        return loaded if isinstance(loaded, dict) else {}

    @cached_property
    def adapter_config(self) -> dict[str, Any] | None:
        return _read_json(self.path / "adapter_config.json")

    @cached_property
    def model_config(self) -> dict[str, Any] | None:
        return _read_json(self.path / "config.json")

    @property
    def train_config(self) -> dict[str, Any]:
        return self.config.get("train") or {}

    # what the run is

    @property
    def is_run(self) -> bool:
        """Written by `tunelab train` (its manifest names the stage)."""
        return self.manifest.get("stage") == "train"

    @property
    def remote(self) -> dict[str, Any] | None:
        """A run trained by an OpenAI-compatible fine-tuning API (train.provider openai): the job
        as last seen ({provider, base_url, job_id, status, fine_tuned_model, ...}); None for a
        run trained here."""
        remote = self.manifest.get("remote")
        return remote if isinstance(remote, dict) else None

    @property
    def endpoint(self) -> str | None:
        """`endpoint:URL#MODEL` of a remote run's fine-tuned model, which `tunelab eval` asks
        through the endpoint instead of loading weights; None for a local run. A remote run whose
        job has not succeeded has no model yet: one sentence saying so."""
        remote = self.remote
        if remote is None:
            return None
        if not remote.get("fine_tuned_model"):
            raise TunelabError(f"the remote job {remote.get('job_id')} has no fine-tuned model yet (status "
                               f"{remote.get('status')})", where=str(self.path),
                               fix="follow it to the end with `tunelab train ... --resume`, then evaluate")
        return f"endpoint:{remote['base_url']}#{remote['fine_tuned_model']}"

    @property
    def is_adapter(self) -> bool:
        return self.adapter_config is not None

    @property
    def task(self) -> str:
        """The training task (classification, sft, dpo, ...): the manifest's, else what the
        saved model configs say (a sequence-classification head, or a causal LM)."""
        if self.manifest.get("task"):
            return self.manifest["task"]
        if self.adapter_config is not None:
            return CLASSIFICATION if self.adapter_config.get("task_type") == "SEQ_CLS" else "sft"
        architectures = (self.model_config or {}).get("architectures") or []
        return CLASSIFICATION if any(a.endswith("ForSequenceClassification") for a in architectures) else "sft"

    @property
    def is_classifier(self) -> bool:
        return self.task == CLASSIFICATION

    @property
    def labels(self) -> list[str] | None:
        """A classifier's labels in head order: the manifest's, else config.json's id2label."""
        if not self.is_classifier:
            return None
        if self.manifest.get("labels"):
            return list(self.manifest["labels"])
        id2label = (self.model_config or {}).get("id2label") or {}
        return [id2label[k] for k in sorted(id2label, key=int)] if id2label else None

    @property
    def prefixes(self) -> dict[str, str]:
        """Task name -> the prefix training put before that task's inputs (multi-task runs)."""
        return dict(self.manifest.get("task_prefixes") or {})

    @property
    def tasks(self) -> list[str]:
        """The named tasks of a multi-task run (train.mix), in order; [] for a single-task run."""
        named = [s["task"] for s in self.training_sources() if s["task"]]
        return named or list(self.prefixes)

    def prefix(self, task: str | None = None) -> str:
        """The prefix training put before the inputs of `task`. Without a task: the run's only
        prefix (a single-task run was trained with it on every input), else none; a run trained
        with several prefixes cannot guess, so the input must name its task."""
        prefixes = self.prefixes
        if task is None:
            if len(prefixes) > 1:
                raise TunelabError(f"this run was trained on several tasks with their own input prefixes "
                                   f"({', '.join(sorted(prefixes))}), so an input must name its task",
                                   where=str(self.path), fix="name the task of each input (meta.task in data, "
                                                             "`task` or `model: RUN:TASK` in a request)")
            return next(iter(prefixes.values()), "")
        known = set(self.tasks) | set(prefixes)
        if known and task not in known:
            raise TunelabError(f"unknown task {task!r}; this run was trained on {', '.join(sorted(known))}",
                               where=str(self.path), fix="name one of those tasks")
        return prefixes.get(task, "")

    @property
    def adapter_base(self) -> str | None:
        """The base model an adapter loads onto, as adapter_config.json names it."""
        return (self.adapter_config or {}).get("base_model_name_or_path")

    @property
    def base_model(self) -> str | None:
        """The base model (absolute path or hub id) the run started from: for an adapter the model
        it loads onto, else the manifest's resolved base."""
        if self.adapter_base:
            return self.adapter_base
        base = self.manifest.get("base_model")
        return (base.get("path") or base.get("id")) if isinstance(base, dict) else base

    @property
    def base_model_id(self) -> str | None:
        """The base model as the user named it (hub id or path as typed)."""
        base = self.manifest.get("base_model")
        return base.get("id") if isinstance(base, dict) else (base or self.adapter_base)

    @property
    def grader(self) -> str | None:
        """The grader JSON a reinforcement fine-tuning run was rewarded by, kept beside its
        weights (train/rft.py writes it), else None."""
        path = self.path / "grader.json"
        return str(path) if path.is_file() else None

    @property
    def max_length(self) -> int:
        """Inputs longer than this were truncated in training: later stages truncate alike (an
        export records its run's in its manifest)."""
        return int(self.manifest.get("max_length") or self.train_config.get("max_length") or 512)

    @property
    def training_seconds(self) -> float | None:
        return self.manifest.get("wall_time_s")

    @property
    def manifest_sha256(self) -> str | None:
        path = self.path / "manifest.json"
        return sha256_of(path) if path.is_file() else None

    @property
    def version(self) -> str:
        """A version for a run served without a registry: its name and a hash of its manifest."""
        digest = self.manifest_sha256
        digest = digest[:8] if digest else "unversioned"
        return f"{self.path.resolve().name}-{digest}"

    def missing_model_files(self) -> list[str]:
        """What this directory lacks to be loaded as a model: config.json and weights (or an
        adapter's config and weights), and a tokenizer; [] when nothing is missing."""
        names = {p.name for p in self.path.iterdir()} if self.path.is_dir() else set()
        if self.is_adapter:
            wanted = {"adapter weights (adapter_model.safetensors)": {"adapter_model.safetensors", "adapter_model.bin"}}
        else:
            wanted = {"config.json": {"config.json"},
                      "model weights (model.safetensors)": {"model.safetensors", "model.safetensors.index.json",
                                                            "pytorch_model.bin", "pytorch_model.bin.index.json"}}
        wanted["a tokenizer (tokenizer.json or tokenizer_config.json)"] = {"tokenizer.json", "tokenizer_config.json"}
        return [what for what, files in wanted.items() if not files & names]

    # an export of it (`tunelab export`)

    @property
    def export_format(self) -> str | None:
        """"onnx" or "gguf" for a directory `tunelab export --format` wrote, "merged" for a merged
        adapter, None for anything else."""
        if self.manifest.get("stage") != "export":
            return None
        return self.manifest.get("format") or (self.manifest.get("config") or {}).get("format") or "merged"

    @property
    def source_run(self) -> "RunDir | None":
        """The run an export was made from (its test split, training data and baselines), or
        None when this directory is no export."""
        source = self.manifest.get("source_run") if self.export_format else None
        return RunDir(source) if source else None

    # its data

    def data_path(self, recorded: str) -> str:
        """A data path from config.yaml as it can be opened here: relative paths are relative to
        the directory training ran in, which may not be this one."""
        path = Path(recorded)
        if path.is_absolute() or path.exists() or not self.manifest.get("workdir"):
            return recorded
        moved = Path(self.manifest["workdir"]) / path
        return str(moved) if moved.exists() else recorded

    def training_sources(self) -> list[dict[str, Any]]:
        """What the run trained on, in order: {"data": path, "task": name or None, "eval_data": ...}
        for train.data, each of train.stages, or each train.mix entry."""
        train = self.train_config
        if train.get("mix"):
            from tunelab.train.data import mix_task_names
            entries = [_Entry(m) for m in train["mix"]]
            return [{"data": self.data_path(e.data), "task": name, "eval_data": None}
                    for e, name in zip(entries, mix_task_names(entries))]
        if train.get("stages"):
            return [{"data": self.data_path(s["data"]), "task": None, "eval_data": None} for s in train["stages"]]
        if train.get("data"):
            eval_data = train.get("eval_data")
            return [{"data": self.data_path(train["data"]), "task": None,
                     "eval_data": self.data_path(eval_data) if eval_data else None}]
        return []

    def training_records(self) -> list[dict[str, Any]]:
        """The training examples exactly as the run saw them (stages concatenated, a mixture
        mixed and prefixed, each sampled as train.max_train_examples sampled it)."""
        from tunelab.train.data import load_training_data
        train = self.train_config
        seed, limit = train.get("seed", 42), train.get("max_train_examples")
        sources = self.training_sources()
        if not sources:
            raise TunelabError("the run's config.yaml names no training data", where=str(self.path / "config.yaml"),
                               fix="evaluate a run directory written by `tunelab train`")
        if train.get("mix"):
            mix = [_Entry({**m, "data": s["data"]}) for m, s in zip(train["mix"], sources)]
            return load_training_data(None, None, mix, seed).sample(limit, seed).train
        records = []
        for source in sources:
            records += load_training_data(source["data"], None, None, seed).sample(limit, seed).train
        return records

    def test_sources(self) -> list[dict[str, Any]]:
        """The prepared directories whose test.jsonl `tunelab data prepare` held out beside the
        training data: [{"path": directory, "task": name or None}], one per mixture task (else
        the first training source's)."""
        sources = self.training_sources()
        if self.task == "rft" and self.train_config.get("stages"):
            sources = sources[-1:]  # sft then rft: the rft stage's prompts are what the final weights face
        elif not any(s["task"] for s in sources):
            sources = sources[:1]
        return [{"path": source["data"], "task": source["task"]} for source in sources
                if (Path(source["data"]) / "test.jsonl").is_file()]

    def held_out_data(self) -> str | None:
        """The data a monitor compares traffic with: train.eval_data when set (a held-out file),
        else the first training source (a prepared directory's val/test splits)."""
        sources = self.training_sources()
        if not sources:
            return None
        return sources[0]["eval_data"] or sources[0]["data"]

    # what later stages wrote into it

    @property
    def eval_report_path(self) -> Path:
        return self.path / EVAL_REPORT

    @cached_property
    def eval_report(self) -> dict[str, Any] | None:
        return _read_json(self.eval_report_path)


class _Entry:
    """A train.mix entry from config.yaml, with the attributes train.data's mixing reads."""

    def __init__(self, entry: dict[str, Any]):
        self.data = entry["data"]
        self.task = entry.get("task")
        self.prefix = entry.get("prefix")
        self.weight = entry.get("weight", 1.0)


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file written by tunelab or transformers; None when absent, an error when broken."""
    if not path.is_file():
        return None
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TunelabError(f"{path.name} is not readable JSON ({exc})", where=str(path),
                           fix="restore the file, or re-run the stage that wrote it") from None
    return loaded if isinstance(loaded, dict) else None


WEIGHT_SUFFIXES = (".safetensors", ".bin")


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
    import torch
    peak = {"host_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available():
        peak["gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


def write_run_files(run_dir: Path, *, config: dict[str, Any], base_model: str, resolved_base: str, task: str,
                    method: str, data_sources: dict[str, str], seed: int, wall_time_s: float,
                    trainable: tuple[int, int], final_metrics: dict[str, Any], stages: list[dict[str, Any]],
                    prefixes: dict[str, str], labels: list[str] | None, interrupted: bool,
                    loss_mask: str | None) -> None:
    """loss_mask: how an SFT run's loss mask was found (assistant_spans.RENDERED_SPANS, ...); None otherwise."""
    write_text(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    outputs = {p.name: p for p in run_dir.iterdir() if p.is_file() and p.suffix in (".safetensors", ".json")
               and p.name != "manifest.json"}
    extra = {
        "base_model": {"id": base_model, "path": resolved_base, "sha256": model_fingerprint(resolved_base)},
        "task": task, "method": method, "seed": seed, "labels": labels, "task_prefixes": prefixes,
        "datasets": data_sources, "git_commit": git_commit(), "wall_time_s": round(wall_time_s, 1),
        "peak_memory": peak_memory_mb(), "parameters": {"trainable": trainable[0], "total": trainable[1]},
        "final_metrics": final_metrics, "stages": stages, "interrupted": interrupted, "loss_mask": loss_mask,
        # relative data paths in config.yaml are relative to this directory (RunDir.data_path)
        "workdir": str(Path.cwd()),
    }
    write_text(run_dir / "README.md", model_card(base_model, task, method, data_sources, final_metrics, trainable,
                                                 labels, prefixes, run_dir))
    write_json(run_dir / "manifest.json", manifest(stage="train", inputs={}, outputs=outputs, config=config,
                                                   extra=extra))


def write_remote_run_files(run_dir: Path, *, config: dict[str, Any], base_model: str, task: str, method: str,
                           data_sources: dict[str, str], uploaded: dict[str, Path], seed: int, wall_time_s: float,
                           final_metrics: dict[str, Any], remote: dict[str, Any], interrupted: bool) -> None:
    """A run trained by a fine-tuning API (train.provider openai): no weights, the job instead.
    config.yaml and the model card as for a local run; the manifest records the job as last seen
    (manifest.remote, which RunDir.remote and RunDir.endpoint read) and the training files sent."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    extra = {"base_model": {"id": base_model, "path": None, "sha256": None}, "task": task, "method": method,
             "seed": seed, "labels": None, "task_prefixes": {}, "datasets": data_sources, "git_commit": git_commit(),
             "wall_time_s": round(wall_time_s, 1), "final_metrics": final_metrics, "stages": [],
             "interrupted": interrupted, "remote": remote, "workdir": str(Path.cwd())}
    write_text(run_dir / "README.md", remote_model_card(run_dir.name, base_model, task, method, remote))
    write_json(run_dir / "manifest.json", manifest(stage="train", inputs={}, outputs=uploaded, config=config,
                                                   extra=extra))


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
