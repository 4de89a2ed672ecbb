"""Model backends behind the server: a transformers generator (batched greedy decoding with left
padding, per-request sampling, stop strings, streaming, several LoRA adapters of one base) and a
classifier (tunelab.evaluate.predict.classify with the run's task prefix). The vLLM generator
lives in vllm_backend.py and offers the same interface.

Every method that touches a model runs on the batcher's single model thread.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunelab.errors import TunelabError
from tunelab.models.load import adapter_base, resolve_model_path
from tunelab.train.run_dir import RunDir

RUN_ADAPTER = "run"  # PEFT name of the served run's own adapter, when the run is an adapter


def render_chat(tokenizer, messages: list[dict[str, str]]) -> str:
    """A chat request as the model's chat template renders it, ready for the assistant's reply."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer, text: str, *, special_tokens: bool) -> list[int]:
    """Token ids of a prompt: a rendered chat template already holds its special tokens; a raw
    prompt gets BOS like any transformers pipeline would give it; an empty one starts a text."""
    ids = tokenizer(text, add_special_tokens=special_tokens)["input_ids"]
    if not ids and tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id]
    return ids


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
    adapter: str | None = None  # PEFT adapter name; None: the run's default
    streamer: Any = None  # a TextIteratorStreamer the tokens are pushed to as they come
    cancelled: threading.Event | None = None  # set when the client went away

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Generation:
    texts: list[str]
    finish_reasons: list[str]  # "stop" (end token or stop string) or "length"
    completion_tokens: list[int]
    prompt_tokens: int


class StopOnText:
    """transformers StoppingCriteria: a row is done once its generated text contains one of its
    stop strings; every row is done once the request is cancelled. Per row, so a batch stops
    each request exactly where it would have stopped alone."""

    def __init__(self, tokenizer, prompt_length: int, stops_per_row: list[list[str]],
                 cancelled: threading.Event | None):
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length
        self.stops_per_row = stops_per_row
        self.cancelled = cancelled

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if self.cancelled is not None and self.cancelled.is_set():
            return done | True
        for row, stops in enumerate(self.stops_per_row):
            if stops:
                text = self.tokenizer.decode(input_ids[row, self.prompt_length:], skip_special_tokens=True)
                done[row] = any(stop in text for stop in stops)
        return done


def first_stop(text: str, stops: list[str]) -> int | None:
    """Index where the earliest stop string starts in text, or None."""
    found = [i for i in (text.find(stop) for stop in stops) if i >= 0]
    return min(found) if found else None


class TransformersGenerator:
    task = "generative"
    streams = True  # tokens can be relayed as they are generated

    def __init__(self, model, tokenizer, *, adapters: dict[str, str], default_adapter: str | None):
        self.model = model
        self.tokenizer = tokenizer
        self.adapters = adapters  # client model id -> PEFT adapter name
        self.default_adapter = default_adapter
        self.eos_ids = self._eos_ids()
        config = getattr(model, "config", None)
        self.context_length = getattr(config, "max_position_embeddings", None)
        self.supports_chat = bool(getattr(tokenizer, "chat_template", None))
        generation = model.generation_config
        # a request without temperature decodes as the model's generation config says (as vLLM does)
        self.default_temperature = (generation.temperature or 1.0) if generation.do_sample else 0.0

    @classmethod
    def load(cls, run_dir: str | Path, adapters: dict[str, str] | None = None) -> "TransformersGenerator":
        from transformers import AutoModelForCausalLM, AutoTokenizer
        run_dir = str(run_dir)
        base = adapter_base(run_dir)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = AutoModelForCausalLM.from_pretrained(resolve_model_path(base) if base else run_dir,
                                                     dtype="auto" if device == "cuda" else torch.float32).to(device)
        tokenizer = AutoTokenizer.from_pretrained(run_dir)
        tokenizer.padding_side = "left"  # batched greedy output must equal one-at-a-time output
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        named = {}
        if base or adapters:
            from peft import PeftModel
            sources = ([(RUN_ADAPTER, run_dir)] if base else []) + [
                (f"adapter_{i}", path) for i, path in enumerate((adapters or {}).values())]
            for name, path in sources:
                if adapter_base(path) is None:
                    raise TunelabError("not a LoRA adapter directory (no adapter_config.json)", where=str(path),
                                       fix="list adapter run directories under serve.adapters")
            model = PeftModel.from_pretrained(model, sources[0][1], adapter_name=sources[0][0])
            for name, path in sources[1:]:
                model.load_adapter(path, adapter_name=name)  # one copy of the base, one small adapter each
            named = {client: f"adapter_{i}" for i, client in enumerate(adapters or {})}
        return cls(model.eval(), tokenizer, adapters=named, default_adapter=RUN_ADAPTER if base else None)

    def _eos_ids(self) -> list[int]:
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return [eos] if isinstance(eos, int) else list(eos or [])

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return render_chat(self.tokenizer, messages)

    def encode(self, text: str, *, special_tokens: bool) -> list[int]:
        return encode_prompt(self.tokenizer, text, special_tokens=special_tokens)

    @torch.inference_mode()
    def generate(self, jobs: list[GenerationJob]) -> list[Generation]:
        """Jobs of one batch key: greedy jobs of one adapter together, or one sampling job."""
        try:
            self._activate(jobs[0].adapter)
            if self.default_adapter is None and jobs[0].adapter is None and self.adapters:
                with self.model.disable_adapter():  # the base model of a full run served with adapters
                    return self._generate(jobs)
            return self._generate(jobs)
        except Exception:
            if jobs[0].streamer is not None:
                jobs[0].streamer.end()  # a reader waiting for text must hear that none is coming
            raise

    def _activate(self, adapter: str | None) -> None:
        name = adapter or self.default_adapter
        if name is not None:
            self.model.set_adapter(name)

    def _generate(self, jobs: list[GenerationJob]) -> list[Generation]:
        sampling = not jobs[0].greedy
        copies = jobs[0].n if sampling else 1  # greedy choices are all the same: generate one
        padded = self.tokenizer.pad({"input_ids": [job.prompt_ids for job in jobs]}, return_tensors="pt")
        padded = {k: v.to(self.model.device) for k, v in padded.items()}
        prompt_length = padded["input_ids"].shape[1]
        stops = [job.stop for job in jobs for _ in range(copies)]
        criteria = StopOnText(self.tokenizer, prompt_length, stops, jobs[0].cancelled)
        kwargs: dict[str, Any] = {"do_sample": False}
        if sampling:
            job = jobs[0]
            if job.seed is not None:
                torch.manual_seed(job.seed)  # safe: only the model thread samples
            kwargs = {"do_sample": True, "temperature": job.temperature, "top_p": job.top_p, "top_k": 0,
                      "num_return_sequences": copies}
        output = self.model.generate(
            **padded, **kwargs, max_new_tokens=max(job.max_tokens for job in jobs), stopping_criteria=[criteria],
            pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.eos_ids or None,
            streamer=jobs[0].streamer)
        rows = output[:, prompt_length:].tolist()
        results = []
        for index, job in enumerate(jobs):
            choices = [self._finish(rows[index * copies + c], job) for c in range(copies)]
            if not sampling:
                choices = choices * job.n
            results.append(Generation(texts=[c[0] for c in choices], finish_reasons=[c[1] for c in choices],
                                      completion_tokens=[c[2] for c in choices], prompt_tokens=len(job.prompt_ids)))
        return results

    def _finish(self, ids: list[int], job: GenerationJob) -> tuple[str, str, int]:
        """(text, finish reason, tokens) of one generated row, cut at its end token, its own
        max_tokens (a batch generates up to the largest) and its first stop string."""
        ids = ids[:job.max_tokens]
        reason = "length"
        for position, token in enumerate(ids):
            if token in self.eos_ids:
                ids, reason = ids[:position], "stop"
                break
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cut = first_stop(text, job.stop)
        if cut is None:
            return text, reason, len(ids) + (reason == "stop")  # the end token was generated too
        used = next(k for k in range(1, len(ids) + 1)
                    if first_stop(self.tokenizer.decode(ids[:k], skip_special_tokens=True), job.stop) is not None)
        return text[:cut], "stop", used

    def streamer(self):
        """A streamer whose text the event loop reads with `async for` (create it on the loop)."""
        from transformers import AsyncTextIteratorStreamer
        return AsyncTextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)

    def warmup(self) -> None:
        self.generate([GenerationJob(prompt_ids=self.encode("warm up", special_tokens=True), max_tokens=2)])


class TransformersClassifier:
    task = "classification"
    supports_chat = True  # a chat completion is answered with the label
    context_length = None

    def __init__(self, model, tokenizer, *, prefix: str = "", max_length: int = 512):
        self.model = model
        self.tokenizer = tokenizer
        self.prefix = prefix
        self.max_length = max_length
        self.labels = [model.config.id2label[i] for i in range(model.config.num_labels)]

    @classmethod
    def load(cls, run_dir: str | Path) -> "TransformersClassifier":
        from tunelab.evaluate.predict import load_classifier
        model, tokenizer = load_classifier(str(run_dir))
        # longer inputs are truncated to what both the tokenizer and the position embeddings allow
        limits = [getattr(tokenizer, "model_max_length", None), getattr(model.config, "max_position_embeddings", None)]
        max_length = min([512] + [int(limit) for limit in limits if limit])
        return cls(model, tokenizer, prefix=RunDir(run_dir).prefix(), max_length=max_length)

    def encode(self, text: str, *, special_tokens: bool = True) -> list[int]:
        return self.tokenizer(self.prefix + text, add_special_tokens=special_tokens, truncation=True,
                              max_length=self.max_length)["input_ids"]

    def classify(self, texts: list[str]) -> list[tuple[str, dict[str, float]]]:
        from tunelab.evaluate.predict import classify
        predicted, probabilities = classify(self.model, self.tokenizer, texts, batch_size=len(texts) or 1,
                                            max_length=self.max_length, prefix=self.prefix)
        return [(self.labels[int(i)], {label: float(p) for label, p in zip(self.labels, row)})
                for i, row in zip(predicted, probabilities)]

    def warmup(self) -> None:
        self.classify(["warm up"])


def load_backend(run_dir: str | Path, *, engine: str = "transformers", adapters: dict[str, str] | None = None):
    """The backend for a run directory: a classifier or a generator (transformers or vLLM)."""
    if not Path(run_dir).is_dir():
        raise TunelabError("run directory not found", where=str(run_dir), fix="give a run directory from `tunelab train`")
    if RunDir(run_dir).is_classifier:
        if adapters:
            raise TunelabError("serve.adapters are for generative runs; a classification run is served alone",
                               where=str(run_dir))
        return TransformersClassifier.load(run_dir)
    if engine == "vllm":
        from tunelab.serve.vllm_backend import VllmGenerator
        return VllmGenerator.load(run_dir, adapters)
    return TransformersGenerator.load(run_dir, adapters)
