"""Tests run offline, deterministically, on tiny local assets."""
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

import torch  # noqa: E402

ASSETS = Path(__file__).parent / "assets"

# Fixture modules: their fixtures are available to every test without importing them by name.
# (pytest puts tests/, this file's directory, on sys.path, so helper modules import by name.)
pytest_plugins = ["serve_helpers", "ray_helpers", "jobs_helpers"]

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
    """`write(name, rows)`: cli_helpers.write_jsonl into this test's tmp_path."""
    from cli_helpers import write_jsonl as write_rows

    return lambda name, rows: write_rows(tmp_path / name, rows)
