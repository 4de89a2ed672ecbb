"""The one place models and tokenizers are loaded from: a hub id (when online), a local
Hugging Face directory, or `default` for the embedded encoder."""
from __future__ import annotations

from pathlib import Path

from tunelab.errors import TunelabError

DEFAULT = "default"


def resolve_model_path(name_or_path: str) -> str:
    if name_or_path == DEFAULT:
        from tunelab.examples import default_model_path
        return str(default_model_path())
    return name_or_path


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer
    resolved = resolve_model_path(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(resolved)
    except (OSError, ValueError) as exc:
        local = Path(resolved).exists()
        fix = ("check that the directory holds tokenizer.json or tokenizer_config.json" if local else
               "give a local directory, or go online once (HF_HUB_OFFLINE=0) so the hub copy is cached")
        raise TunelabError(f"cannot load tokenizer '{name_or_path}' ({str(exc).splitlines()[0][:160]})",
                           fix=fix) from None
