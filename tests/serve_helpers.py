"""Fixtures and helpers of the serving tests: a tiny Llama run with two (and eight) LoRA
adapters of it and another full run, a tiny BERT classification run (with a task prefix in its
manifest), a ServeConfig for them, a live uvicorn server on a free loopback port, the answer a
run gives when served alone, and the one wait-until-ready every serving test and the serving
benchmark use. Everything is built locally, seeded, in kilobytes.

Its fixtures reach every test through tests/conftest.py's `pytest_plugins`; test modules import
the plain helpers they use by name (`from serve_helpers import live_server, wait_ready`).
"""
from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

ASSETS = Path(__file__).resolve().parent / "assets"
LABELS = ["negative", "neutral", "positive"]
PREFIX = "review: "


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_llama_run(tmp_path_factory) -> Path:
    """A generative run: the char-level chat tokenizer and a seeded random Llama (untied head,
    so greedy answers differ from prompt to prompt instead of repeating one token)."""
    from tiny_models import build_task_tokenizer, build_tiny_llama
    out = tmp_path_factory.mktemp("served-llama")
    build_tiny_llama(out, build_task_tokenizer(out), hidden=64, layers=2, heads=4, max_positions=256, seed=0,
                     tied=False)
    return out


@pytest.fixture(scope="session")
def lora_adapters(tiny_llama_run, tmp_path_factory) -> dict[str, Path]:
    """Two LoRA adapters of the tiny Llama, randomly initialised (not the zero init) so each
    changes the answers."""
    return {name: random_lora(tiny_llama_run, tmp_path_factory.mktemp(f"adapter-{name}"), seed)
            for seed, name in enumerate(["support", "legal"], start=1)}


def random_lora(base: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter of `base`, randomly initialised from `seed` (not the zero init, so it
    changes the answers), saved with the base's tokenizer, so it is also a run of its own that
    `tunelab serve` can serve alone."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"],
                                      init_lora_weights=False))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def eight_adapters(tiny_llama_run, tmp_path_factory) -> dict[str, Path]:
    """Eight LoRA adapters of the tiny Llama (seeds 10-17): a0 ... a7."""
    return {f"a{i}": random_lora(tiny_llama_run, tmp_path_factory.mktemp(f"adapter-a{i}"), 10 + i) for i in range(8)}


@pytest.fixture(scope="session")
def other_llama_run(tiny_llama_run, tmp_path_factory) -> Path:
    """Another full run with the same tokenizer and another seed: a model of its own, not an
    adapter of the served base."""
    from tiny_models import build_tiny_llama
    from transformers import AutoTokenizer
    return build_tiny_llama(tmp_path_factory.mktemp("other-llama"), AutoTokenizer.from_pretrained(tiny_llama_run),
                            hidden=64, layers=2, heads=4, max_positions=256, seed=5, tied=False)


def answered_alone(run_dir, conversations: list, max_tokens: int) -> list[str]:
    """The greedy answers a run gives chat requests, one at a time, when it is the only model
    served: the run loaded as `tunelab serve RUN` loads it (an adapter run stays an adapter of
    its base)."""
    from tunelab.serve.backend import GenerationJob
    from tunelab.serve.service import load_backend
    backend = load_backend(run_dir, adapter_slots=1)
    answers = []
    for messages in conversations:
        ids = backend.encode(backend.render_chat(messages), special_tokens=False)
        answers.append(backend.generate([GenerationJob(prompt_ids=ids, max_tokens=max_tokens)])[0].texts[0])
    return answers


@pytest.fixture(scope="session")
def tiny_classifier_run(tmp_path_factory) -> Path:
    """A classification run: a tiny BERT with a 3-label head and the manifest fields serving
    reads (task, labels, task prefix)."""
    return tiny_classifier(tmp_path_factory.mktemp("served-bert"), seed=0)


@pytest.fixture(scope="session")
def other_classifier_run(tmp_path_factory) -> Path:
    """Another classification run like tiny_classifier_run, of another seed (other answers)."""
    return tiny_classifier(tmp_path_factory.mktemp("other-bert"), seed=1)


def tiny_classifier(out: Path, seed: int) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
    tokenizer = AutoTokenizer.from_pretrained(ASSETS / "tiny-chat-tokenizer")
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
                        num_labels=3, id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)})
    torch.manual_seed(seed)
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "manifest.json").write_text(json.dumps({"stage": "train", "task": "classification", "labels": LABELS,
                                                   "task_prefixes": {"sentiment": PREFIX}}))
    return out


def wait_ready(server, process=None, timeout: float = 120):
    """Wait until `GET /ready` answers 200 (the model is loaded and warm). `server`: a base URL,
    or an in-process client with `.get` (Starlette's TestClient). Fails at once when `process`
    (a `tunelab serve` Popen) exits first, with what it printed. Returns `server`."""
    import httpx2
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"the server exited with code {process.returncode}:\n{output}")
        try:
            ready = server.get("/ready") if hasattr(server, "get") else httpx2.get(f"{server}/ready", timeout=2)
            if ready.status_code == 200:
                return server
        except httpx2.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{server} was not ready within {timeout:.0f} s")


def wait_until(condition, what: str, guard_s: float = 60) -> None:
    """Poll until `condition()` holds; the deadline only keeps a broken server from hanging the
    run (tests assert on what happened, never on how long it took)."""
    deadline = time.monotonic() + guard_s
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


class LiveServer:
    """uvicorn serving an app on 127.0.0.1 in a background thread."""

    def __init__(self, app):
        import uvicorn
        self.app = app
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    timeout_graceful_shutdown=10))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, timeout: float = 60) -> "LiveServer":
        self.thread.start()
        wait_ready(self.base_url, timeout=timeout)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def flush_log(self) -> None:
        flush_log(self.app)


def flush_log(app) -> None:
    """Wait until every request answered so far is in the app's prediction log."""
    app.state.served.prediction_log.flush()


@contextmanager
def live_server(cfg, **app_options):
    from tunelab.serve.app import create_app
    server = LiveServer(create_app(cfg, **app_options)).start()
    server.cfg = cfg
    try:
        yield server
    finally:
        server.stop()


def serve_config(model, tmp_path, *, guard: dict | None = None, **overrides):
    """A ServeConfig for a test: `model` served, a prediction log in tmp_path, no registry, a
    short batching wait; `guard` and the other keyword arguments are ServeConfig fields."""
    from tunelab.config import ServeConfig
    values = {"model": str(model), "prediction_log": str(tmp_path / "predictions.db"), "registry": None,
              "max_wait_ms": 5.0, **overrides}
    return ServeConfig(**values, guard=guard or {})
