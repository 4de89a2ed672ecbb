"""The one place models and tokenizers are loaded from: a hub id (when online), a local
Hugging Face directory, a previous tunelab run directory, or `default` for the embedded encoder."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError

DEFAULT = "default"
OFFLINE_FIX = "give a local directory, or go online once (HF_HUB_OFFLINE=0) so the hub copy is cached"


def resolve_model_path(name_or_path: str) -> str:
    """The embedded default's directory, a local path made absolute (so what is recorded from it,
    in a manifest or PEFT's adapter_config.json, loads from any working directory), or a hub id
    as given."""
    if name_or_path == DEFAULT:
        from tunelab.examples import default_model_path
        return str(default_model_path())
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.exists() else name_or_path


def adapter_base(path: str | Path) -> str | None:
    """The base model of a PEFT adapter directory, or None when `path` is not one."""
    from tunelab.train.run_dir import RunDir
    return RunDir(path).adapter_base


def check_adapter_base(adapter_dir: str | Path, base: str) -> None:
    """An adapter's base must be where its adapter_config.json says: name the missing path,
    rather than letting the hub loader report a misleading 'repo id' error."""
    if Path(base).is_absolute() or base.startswith((".", "~")) or Path(base).exists():
        if not Path(base).expanduser().exists():
            raise TunelabError(f"the base model of this adapter is not at {base}", where=str(adapter_dir),
                               fix="put the base model back at that path, or edit base_model_name_or_path in "
                                   "adapter_config.json to where it is now")


def _why(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer
    resolved = resolve_model_path(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(resolved)
    except (OSError, ValueError) as exc:
        local = Path(resolved).exists()
        fix = "check that the directory holds tokenizer.json or tokenizer_config.json" if local else OFFLINE_FIX
        raise TunelabError(f"cannot load tokenizer '{name_or_path}' ({_why(exc)})", fix=fix) from None


def load_model_config(name_or_path: str):
    """The model's config only (no weights): what the pre-flight memory estimate needs."""
    from transformers import AutoConfig
    resolved = resolve_model_path(name_or_path)
    base = adapter_base(resolved)
    if base is not None:
        check_adapter_base(resolved, base)
    try:
        return AutoConfig.from_pretrained(base or resolved)
    except (OSError, ValueError) as exc:
        raise TunelabError(f"cannot load the config of model '{name_or_path}' ({_why(exc)})", fix=OFFLINE_FIX) from None


def load_model_skeleton(name_or_path: str, task: str, *, labels: list[str] | None = None):
    """The model's structure on the meta device (shapes, no weights, no memory): what the checks of
    the method (LoRA targets, blocks to train) need before the weights are loaded."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    config = load_model_config(name_or_path)
    auto = AutoModelForCausalLM
    if task == "classification":
        config.num_labels = len(labels or [0, 1])
        auto = AutoModelForSequenceClassification
    try:
        with torch.device("meta"):
            return auto.from_config(config)
    except ValueError:
        kind = "sequence-classification" if task == "classification" else "causal language-model"
        raise TunelabError(f"model type '{config.model_type}' has no {kind} head, so it cannot be trained "
                           f"for task {task}", where=name_or_path,
                           fix="use an encoder (such as 'default') for classification and a decoder for sft "
                               "and dpo") from None


@contextmanager
def _quiet_new_head(new_head_expected: bool):
    """An encoder loaded for classification gets a new head by design; transformers' load report
    saying its weights are missing is noise there (size mismatches still raise)."""
    from transformers.utils import logging as hf_logging
    verbosity = hf_logging.get_verbosity()
    if new_head_expected:
        hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def load_model(name_or_path: str, task: str, *, labels: list[str] | None = None,
               quantization_config: Any = None, dtype: Any = None):
    """The one model loader of every stage: a model for `task` ("classification": a sequence
    classifier with a head for `labels`, by default the run's own; anything else a causal LM).
    A run directory holding an adapter is loaded onto its base and merged, so training goes on
    from its weights and evaluation sees what serving sees."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from tunelab.train.run_dir import RunDir
    resolved = resolve_model_path(name_or_path)
    run = RunDir(resolved)
    base = run.adapter_base
    if base is not None:
        check_adapter_base(resolved, base)
    if task == "classification" and labels is None:
        labels = run.labels or ["LABEL_0", "LABEL_1"]
    kwargs: dict[str, Any] = {}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    if task == "classification":
        kwargs.update(num_labels=len(labels), id2label=dict(enumerate(labels)),
                      label2id={label: i for i, label in enumerate(labels)})
        auto = AutoModelForSequenceClassification
    else:
        auto = AutoModelForCausalLM
    try:
        with _quiet_new_head(task == "classification"):
            if base is None:
                return auto.from_pretrained(resolved, **kwargs)
            from peft import PeftModel
            model = PeftModel.from_pretrained(auto.from_pretrained(base, **kwargs), resolved)
            return model.merge_and_unload()
    except (OSError, ValueError) as exc:
        if base is not None and not Path(base).exists():
            raise TunelabError(f"cannot load the adapter's base model '{base}': it is not a directory here, and "
                               f"loading it as a hub id failed ({_why(exc)})", where=str(resolved),
                               fix="run from the directory training ran in, or set base_model_name_or_path in "
                                   "adapter_config.json to the base model's absolute path") from None
        local = Path(resolved).exists()
        fix = "check that the directory holds config.json and model weights" if local else OFFLINE_FIX
        raise TunelabError(f"cannot load model '{name_or_path}' ({_why(exc)})", fix=fix) from None
