"""The one interface between the server and a model engine: the `Backend` protocol, the work it
is given (`GenerationJob`) and what it returns (`Generation`, `TokenLogprob`).

Engines implement it without inheriting from anything: the transformers generator
(transformers_backend.py), the transformers classifier (classifier_backend.py), the vLLM
generator (vllm_backend.py) and the ONNX Runtime classifier (onnx_backend.py). The batcher, the
service, the model pool and the handlers call nothing else, so a new engine is one more module
with these methods. Every method that touches a model runs on the batcher's single model thread.

A generator that can also serve LoRA adapters of its base (`AdapterHost`) has them loaded and
unloaded by name at runtime (tunelab.serve.pool decides which, and when) and answers a batch
whose jobs name different adapters in one call.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

RUN_ADAPTER = "run"  # engine name of the served run's own adapter, when the run is an adapter (kept unmerged)
GENERATIVE, CLASSIFICATION = "generative", "classification"


@dataclass
class TokenLogprob:
    """One token with its log-probability under the model and the most likely alternatives at
    its position (best first); the first token of a prompt has no logprob (nothing precedes it)."""
    token: int
    logprob: float | None
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class GenerationJob:
    """One request's generation: token ids of its prompt and how to decode."""
    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    n: int = 1
    adapter: str | None = None  # engine name of a loaded adapter (the pool sets it); None: the served run itself
    logprobs: int | None = None  # alternatives per token to return (0: the chosen token's only); None: none
    echo_logprobs: bool = False  # also the prompt tokens' logprobs (with `logprobs`)
    streamer: Any = None  # a streamer the tokens are pushed to as they come
    cancelled: threading.Event = field(default_factory=threading.Event)  # set when its client went away

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Generation:
    texts: list[str]
    finish_reasons: list[str]  # "stop" (end token or stop string) or "length"
    completion_tokens: list[int]
    prompt_tokens: int
    logprobs: list[list[TokenLogprob]] | None = None  # per choice, per generated token (job.logprobs)
    prompt_logprobs: list[TokenLogprob] | None = None  # per prompt token (job.echo_logprobs)


@runtime_checkable
class Backend(Protocol):
    """What the server needs from any loaded model; `task` says which of the two protocols below
    it also implements (the handlers branch on it, nothing else)."""

    task: Literal["generative", "classification"]
    streams: bool  # generate() pushes text to job.streamer as it is produced
    context_length: int | None  # prompt plus generated tokens, at most; None: unknown
    vocab_size: int  # token ids a request may send run from 0 to vocab_size - 1
    default_temperature: float  # what a request without temperature decodes with

    def encode(self, text: str, *, special_tokens: bool) -> list[int]:
        """Token ids of a text (with the tokenizer's special tokens around it when asked)."""

    def decode(self, ids: list[int]) -> str:
        """The text of token ids, special tokens left out."""

    def token_text(self, token: int) -> str:
        """How one token reads on its own (a special token as its name), for logprobs."""

    def warmup(self) -> None:
        """One small call, so the first request does not pay for lazy initialisation."""


@runtime_checkable
class GeneratorBackend(Backend, Protocol):
    """A generative model: chat rendering, generation, streaming."""

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """A conversation as the model's chat template renders it, ready for the reply."""

    def generate(self, jobs: list[GenerationJob]) -> list[Generation]:
        """The jobs of one batch key (greedy jobs together, each with its own adapter on an
        AdapterHost, or one sampling job), each cut at its own end token, max_tokens and stop
        strings, stopped early when its `cancelled` event is set."""

    def streamer(self) -> Any:
        """A streamer whose text the event loop reads with `async for` (create it on the loop);
        called only when `streams` is true."""


@runtime_checkable
class AdapterHost(Protocol):
    """A generator that also serves LoRA adapters of its base model, by engine name, loaded and
    unloaded while it serves (on the model thread, between batches)."""

    base_model: str  # the base the adapters must have been trained on (as PEFT recorded it)

    def load_adapter(self, name: str, path: str) -> None:
        """Load the adapter directory `path` under `name` (a name not loaded now)."""

    def unload_adapter(self, name: str) -> None:
        """Free a loaded adapter."""


@runtime_checkable
class ClassifierBackend(Backend, Protocol):
    """A sequence classifier."""

    labels: list[str]

    def classify(self, texts: list[str]) -> list[tuple[str, dict[str, float]]]:
        """(label, probability of every label) for each text, in order."""

    def explain(self, text: str, label: str, prefix: str) -> list[dict[str, Any]]:
        """Word attributions of `label` on `text` (read after `prefix`): [{token, start, end,
        score}], character offsets into `text`, positive scores pushing towards `label`."""


class TokenizerDecoding:
    """Decoding for engines with a Hugging Face tokenizer in `self.text_tokenizer`, the one the
    event loop encodes and decodes with."""

    text_tokenizer: Any

    def decode(self, ids: list[int]) -> str:
        return self.text_tokenizer.decode(ids, skip_special_tokens=True)

    def token_text(self, token: int) -> str:
        return self.text_tokenizer.decode([token], skip_special_tokens=False)


class TokenizerText(TokenizerDecoding):
    """The text half of a generator backend: chat rendering, encoding, decoding, one token's text.
    Generation tokenizes nothing on the model thread, so the engine's `self.tokenizer` serves both."""

    tokenizer: Any

    @property
    def text_tokenizer(self) -> Any:
        return self.tokenizer

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """A conversation as the tokenizer's chat template renders it, ready for the reply."""
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode(self, text: str, *, special_tokens: bool) -> list[int]:
        """A rendered chat template already holds its special tokens; a raw prompt gets BOS like
        any transformers pipeline would give it; an empty one starts a text."""
        ids = self.tokenizer(text, add_special_tokens=special_tokens)["input_ids"]
        if not ids and self.tokenizer.bos_token_id is not None:
            ids = [self.tokenizer.bos_token_id]
        return ids


class ClassifierText(TokenizerDecoding):
    """The text half of a classifier backend: inputs truncated to `self.max_length`, as the
    classifier reads them. `self.text_tokenizer` must be the event loop's own copy of the
    tokenizer: classifying pads and truncates with the model thread's, and a fast tokenizer's
    padding and truncation settings are state a concurrent call would change under it."""

    max_length: int

    def encode(self, text: str, *, special_tokens: bool = True) -> list[int]:
        return self.text_tokenizer(text, add_special_tokens=special_tokens, truncation=True,
                                   max_length=self.max_length)["input_ids"]


def first_stop(text: str, stops: list[str]) -> int | None:
    """Index where the earliest stop string starts in text, or None."""
    found = [i for i in (text.find(stop) for stop in stops) if i >= 0]
    return min(found) if found else None


def vocab_size(tokenizer, model_config=None) -> int:
    """Token ids a request may name: those the tokenizer can decode and the model can embed."""
    sizes = [len(tokenizer), getattr(model_config, "vocab_size", None)]
    return int(min(size for size in sizes if size))

