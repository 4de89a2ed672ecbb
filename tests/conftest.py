"""Tests run offline, deterministically, on tiny local assets."""
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

ASSETS = Path(__file__).parent / "assets"
sys.path.insert(0, str(Path(__file__).parent))  # tests/tiny_models.py importable as `tiny_models`

import torch  # noqa: E402

# One intra-op thread: tiny models gain nothing from two, and two threads spinning against any
# other process on a 2-core machine make a few-second training run take a minute.
torch.set_num_threads(1)


@pytest.fixture
def tiny_tokenizer_path() -> Path:
    """A 512-token byte-level BPE whose chat template keeps each assistant turn's end token
    inside its {% generation %} span (built by tests/assets/make_tiny_tokenizer.py)."""
    return ASSETS / "tiny-chat-tokenizer"


@pytest.fixture
def write_jsonl(tmp_path):
    """Write rows (dicts, or raw strings/bytes written verbatim as lines) to a JSONL file."""
    import json

    def write(name: str, rows) -> Path:
        path = tmp_path / name
        with path.open("wb") as f:
            for row in rows:
                if isinstance(row, bytes):
                    f.write(row + b"\n")
                elif isinstance(row, str):
                    f.write(row.encode() + b"\n")
                else:
                    f.write(json.dumps(row).encode() + b"\n")
        return path

    return write
