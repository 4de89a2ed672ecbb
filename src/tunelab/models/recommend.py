"""Which base model to fine-tune: every candidate priced for memory, time and money by the same
estimator `tunelab train` checks before it starts, then ranked by how well its size suits the data.

The numbers are estimates for choosing, not promises: see the assumptions named at each constant.
"""
from __future__ import annotations

import difflib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from tunelab.errors import TunelabError
from tunelab.models.memory import GB, count_parameters, estimate_training_memory, fits

# Model FLOPs utilisation: the share of the device's peak a training step reaches. 0.35 is
# typical of plain transformers/PEFT training on one GPU; 0.5 on CPU matches the STACK-NOTES
# MiniLM run (~0.1 TFLOPS achieved) if two AVX-512 cores peak near 0.2 TFLOPS.
MFU = {"cuda": 0.35, "cpu": 0.5}
# QLoRA dequantises each 4-bit weight before its matmul: assume it runs at 70% of LoRA's speed.
QLORA_SPEED = 0.7
# Hosted option: OpenAI fine-tuning of gpt-4o-mini, billed per training token (tokens in the
# training file times epochs) at $3.00 per million as published by OpenAI.
API_MODEL = "gpt-4o-mini-2024-07-18"
API_PRICE_PER_1K_TOKENS = 0.003
# The hosted option's score: data leaves the machine and the tuned model cannot be downloaded,
# evaluated locally or served by tunelab, so it ranks after local models within two doublings
# of the size that suits the data.
API_SCORE = 2.0
# QLoRA's 4-bit base costs some quality: half a doubling of size mismatch.
METHOD_PENALTY = {"full": 0.0, "lora": 0.0, "qlora": 0.5}


@dataclass(frozen=True)
class CatalogueModel:
    name: str               # what goes into the config's `model:` ("default" or a hub id)
    hub_id: str
    kind: str               # "classification" (encoders) or "generation" (decoders)
    config_class: str       # transformers config class the architecture numbers fill
    architecture: dict[str, Any] = field(repr=False)
    published_params: float = 0.0  # as stated on the model card; a test checks the config matches
    note: str = ""

    def config(self):
        import transformers
        return getattr(transformers, self.config_class)(**self.architecture)


def _llama(hidden, intermediate, layers, heads, kv_heads, vocab, tied, max_pos):
    return dict(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=vocab,
                tie_word_embeddings=tied, max_position_embeddings=max_pos)


GATED = "gated: accept Meta's licence on the hub first"
# Architecture numbers from each model's config.json on the Hugging Face hub.
CATALOGUE: dict[str, CatalogueModel] = {m.name: m for m in [
    CatalogueModel("default", "sentence-transformers/all-MiniLM-L6-v2", "classification", "BertConfig",
                   dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536, vocab_size=30522, max_position_embeddings=512,
                        type_vocab_size=2), 22.7e6, "embedded: works offline"),
    CatalogueModel("microsoft/deberta-v3-base", "microsoft/deberta-v3-base", "classification",
                   "DebertaV2Config",
                   dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, vocab_size=128100, max_position_embeddings=512,
                        type_vocab_size=0, relative_attention=True, position_buckets=256,
                        norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type=["p2c", "c2p"],
                        position_biased_input=False, max_relative_positions=-1), 184e6),
    CatalogueModel("answerdotai/ModernBERT-base", "answerdotai/ModernBERT-base", "classification",
                   "ModernBertConfig",
                   dict(hidden_size=768, num_hidden_layers=22, num_attention_heads=12,
                        intermediate_size=1152, vocab_size=50368, max_position_embeddings=8192,
                        global_attn_every_n_layers=3, local_attention=128), 149e6),
    CatalogueModel("HuggingFaceTB/SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct",
                   "generation", "LlamaConfig", _llama(576, 1536, 30, 9, 3, 49152, True, 8192), 135e6),
    CatalogueModel("HuggingFaceTB/SmolLM2-360M-Instruct", "HuggingFaceTB/SmolLM2-360M-Instruct",
                   "generation", "LlamaConfig", _llama(960, 2560, 32, 15, 5, 49152, True, 8192), 362e6),
    CatalogueModel("HuggingFaceTB/SmolLM2-1.7B-Instruct", "HuggingFaceTB/SmolLM2-1.7B-Instruct",
                   "generation", "LlamaConfig", _llama(2048, 8192, 24, 32, 32, 49152, True, 8192), 1.71e9),
    CatalogueModel("Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct", "generation",
                   "Qwen2Config", _llama(896, 4864, 24, 14, 2, 151936, True, 32768), 0.49e9),
    CatalogueModel("Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct", "generation",
                   "Qwen2Config", _llama(1536, 8960, 28, 12, 2, 151936, True, 32768), 1.54e9),
    CatalogueModel("Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-7B-Instruct", "generation",
                   "Qwen2Config", _llama(3584, 18944, 28, 28, 4, 152064, False, 32768), 7.61e9),
    CatalogueModel("meta-llama/Llama-3.2-1B-Instruct", "meta-llama/Llama-3.2-1B-Instruct",
                   "generation", "LlamaConfig", _llama(2048, 8192, 16, 32, 8, 128256, True, 131072),
                   1.24e9, GATED),
    CatalogueModel("meta-llama/Llama-3.2-3B-Instruct", "meta-llama/Llama-3.2-3B-Instruct",
                   "generation", "LlamaConfig", _llama(3072, 8192, 28, 24, 8, 128256, True, 131072),
                   3.21e9, GATED),
    CatalogueModel("meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct",
                   "generation", "LlamaConfig", _llama(4096, 14336, 32, 32, 8, 128256, False, 131072),
                   8.03e9, GATED),
    CatalogueModel("mistralai/Mistral-7B-Instruct-v0.3", "mistralai/Mistral-7B-Instruct-v0.3",
                   "generation", "MistralConfig", _llama(4096, 14336, 32, 32, 8, 32768, False, 32768),
                   7.25e9),
]}
API = "api"


@dataclass(frozen=True)
class Recommendation:
    name: str                     # the config's `model:` value, or "api" for the hosted option
    model_id: str
    feasible: bool
    score: float                  # smaller is better; see suited_params and size_mismatch
    reason: str
    method: str | None = None     # full, lora or qlora; None for the hosted option
    params: int | None = None
    trainable_params: int | None = None
    memory_gb: float | None = None
    batch_size: int | None = None
    max_length: int | None = None
    gradient_checkpointing: bool = False
    hours: float | None = None    # None for the hosted option: its queue decides
    cost_usd: float = 0.0


def suited_params(task: str, examples: int) -> float:
    """tunelab's rule of thumb (a heuristic, not a measured law) for the model size a number of
    examples can steer: for generation about 0.5B parameters for a few hundred examples, 1-2B
    for a few thousand, 8B near 100k; encoders for classification twenty times smaller
    (about 20M for 100 examples, 125M for 8,000). Growing as examples**0.46 fits those points."""
    scale = 2e6 if task == "classification" else 4e7
    return scale * max(examples, 1) ** 0.46


def size_mismatch(params: float, suited: float) -> float:
    """Doublings away from the suited size. Too large counts fully (it costs more and overfits
    small data); too small counts half (cheaper, and often good enough)."""
    doublings = math.log2(params / suited)
    return doublings if doublings > 0 else -0.5 * doublings


def recommend(*, task: str, examples: int, avg_tokens: int, epochs: float,
              device_memory_gb: float, device_tflops: float, price_per_gpu_hour: float,
              privacy: str, budget_usd: float | None = None,
              candidates: list[str] | None = None, device: str = "cuda", batch_size: int = 8,
              max_length: int | None = None, weight_bytes: int | None = None,
              api_price_per_1k_tokens: float = API_PRICE_PER_1K_TOKENS) -> list[Recommendation]:
    """Rank the catalogue (or `candidates`, names from it or "api") for this data and device:
    feasible first, then by score, then cost, then name.

    avg_tokens: tokens of one training sequence (prompt and answer; for DPO one of the pair).
    max_length: padded length for the memory estimate; default twice avg_tokens rounded up to
    64, for the long tail of lengths. weight_bytes: default 2 (bf16) on cuda, 4 on cpu.
    device: "cuda" or "cpu"; price_per_gpu_hour is the price of an hour of that device.
    """
    _check_inputs(task, examples, avg_tokens, epochs, privacy, device)
    weight_bytes = weight_bytes or (2 if device == "cuda" else 4)
    max_length = max_length or 64 * math.ceil(2 * avg_tokens / 64)
    suited = suited_params(task, examples)
    recs = []
    for name in _candidate_names(task, candidates):
        if name == API:
            if privacy == "any":
                recs.append(_price_api(task, examples, avg_tokens, epochs, budget_usd,
                                       api_price_per_1k_tokens))
            continue
        recs.append(_price_local(CATALOGUE[name], task=task, examples=examples,
                                 avg_tokens=avg_tokens, epochs=epochs,
                                 memory_bytes=device_memory_gb * GB, device_tflops=device_tflops,
                                 price=price_per_gpu_hour, budget=budget_usd, device=device,
                                 batch_size=batch_size, max_length=max_length,
                                 weight_bytes=weight_bytes, suited=suited))
    return sorted(recs, key=lambda r: (not r.feasible, round(r.score, 6), r.cost_usd, r.name))


def _candidate_names(task: str, candidates: list[str] | None) -> list[str]:
    kind = "classification" if task == "classification" else "generation"
    if candidates is None:
        return [n for n, m in CATALOGUE.items() if m.kind == kind] + [API]
    for name in candidates:
        if name != API and name not in CATALOGUE:
            close = difflib.get_close_matches(name, list(CATALOGUE) + [API], n=1, cutoff=0.4)
            raise TunelabError(f"'{name}' is not in the model catalogue",
                               fix=f"did you mean '{close[0]}'" if close else
                               f"choose from: {', '.join(list(CATALOGUE) + [API])}")
        if name != API and CATALOGUE[name].kind != kind:
            raise TunelabError(f"'{name}' is a {CATALOGUE[name].kind} model, not one for task {task}",
                               fix="leave it out of the candidates")
    return list(dict.fromkeys(candidates))


def _price_local(entry: CatalogueModel, *, task, examples, avg_tokens, epochs, memory_bytes,
                 device_tflops, price, budget, device, batch_size, max_length, weight_bytes,
                 suited) -> Recommendation:
    config = entry.config()
    limit = getattr(config, "max_position_embeddings", None) or max_length
    length = min(max_length, limit)
    estimate, plan_fits = _cheapest_fit(config, task, device, batch_size, length, weight_bytes,
                                        memory_bytes)
    inputs = estimate.inputs
    shape = count_parameters(config, task=task)
    flops = _training_flops(shape, method=inputs["method"], task=task,
                            checkpointing=inputs["gradient_checkpointing"],
                            tokens=examples * avg_tokens * epochs, avg_tokens=min(avg_tokens, limit))
    speed = device_tflops * 1e12 * MFU[device] * (QLORA_SPEED if inputs["method"] == "qlora" else 1)
    hours = flops / speed / 3600
    cost = hours * price
    score = size_mismatch(estimate.params, suited) + METHOD_PENALTY[inputs["method"]]
    within_budget = budget is None or cost <= budget
    if not plan_fits:
        reason = (f"does not fit: needs about {estimate.total_gb:.1f} GB even with "
                  f"{inputs['method']} at batch_size 1 with gradient checkpointing; "
                  f"{memory_bytes / GB:.0f} GB available")
    elif not within_budget:
        reason = f"about ${cost:,.2f}, over the ${budget:,.2f} budget"
    else:
        how = inputs["method"] + (f" at batch_size {inputs['batch_size']}"
                                  if inputs["batch_size"] != batch_size else "")
        how += " with gradient checkpointing" if inputs["gradient_checkpointing"] else ""
        reason = (f"{how} fits in {estimate.total_gb:.1f} of {memory_bytes / GB:.0f} GB; "
                  f"{_size_words(estimate.params, suited, examples)}")
    if length < max_length:
        reason += f"; truncates to {limit} tokens"
    if entry.note:
        reason += f"; {entry.note}"
    return Recommendation(
        name=entry.name, model_id=entry.hub_id, feasible=plan_fits and within_budget,
        score=score, reason=reason, method=inputs["method"], params=estimate.params,
        trainable_params=estimate.trainable_params, memory_gb=estimate.total_gb,
        batch_size=inputs["batch_size"], max_length=length,
        gradient_checkpointing=inputs["gradient_checkpointing"], hours=hours, cost_usd=cost)


def _cheapest_fit(config, task, device, batch_size, max_length, weight_bytes, memory_bytes):
    """The first method, in the order full, lora, qlora (quality first; QLoRA needs
    bitsandbytes on CUDA), that fits: at the asked batch, then with gradient checkpointing,
    then at halved batches with it. Returns the last one tried when nothing fits.
    On CUDA, transformers' default SDPA attention runs fused kernels that never store the
    seq x seq scores; on CPU we do not count on it."""
    methods = ["full", "lora"] + (["qlora"] if device == "cuda" else [])
    settings = [(batch_size, False)]
    b = batch_size
    while b >= 1:
        settings.append((b, True))
        b //= 2
    for method in methods:
        for b, checkpointing in settings:
            estimate = estimate_training_memory(
                config, task=task, method=method, batch_size=b, max_length=max_length,
                weight_bytes=weight_bytes, gradient_checkpointing=checkpointing,
                flash_attention=device == "cuda")
            if fits(estimate, memory_bytes):
                return estimate, True
    return estimate, False


def _training_flops(shape, *, method, task, checkpointing, tokens, avg_tokens) -> float:
    """Training FLOPs. Forward per token: 2 per matmul weight plus 2*layers*seq*hidden for
    attention (Kaplan et al. 2020, table 1). Backward: input gradients cost one forward and
    weight gradients another (hence the usual 6N), but frozen weights need no weight gradients,
    so adapters cost ~4N. Checkpointing adds a forward; DPO runs chosen and rejected sequences
    and a reference forward over both."""
    forward = 2 * shape.matmul_params + 2 * shape.num_blocks * avg_tokens * shape.hidden_size
    backward = forward * (2 if method == "full" else 1)
    per_token = forward + backward + (forward if checkpointing else 0)
    if task == "dpo":
        per_token = 2 * (per_token + forward)
    return per_token * tokens


def _size_words(params: float, suited: float, examples: int) -> str:
    ratio = params / suited
    if ratio > 2:
        return f"{ratio:.0f}x the size that suits {examples:,} examples"
    if ratio < 0.5:
        return f"small for {examples:,} examples (1/{1 / ratio:.0f} of the suited size), cheap"
    return f"size suits {examples:,} examples"


def _price_api(task, examples, avg_tokens, epochs, budget, price_per_1k) -> Recommendation:
    tokens = examples * avg_tokens * epochs * (2 if task == "dpo" else 1)
    cost = tokens / 1000 * price_per_1k
    within_budget = budget is None or cost <= budget
    reason = (f"hosted fine-tuning: {tokens / 1e6:,.2f}M training tokens at ${price_per_1k}/1k; "
              "data leaves the machine and the model stays with the provider")
    if not within_budget:
        reason = f"about ${cost:,.2f}, over the ${budget:,.2f} budget; " + reason
    return Recommendation(name=API, model_id=f"{API_MODEL} (hosted)", feasible=within_budget,
                          score=API_SCORE, reason=reason, cost_usd=cost)


def _check_inputs(task, examples, avg_tokens, epochs, privacy, device) -> None:
    choices = {"task": (task, ("sft", "dpo", "classification")),
               "privacy": (privacy, ("local", "any")), "device": (device, ("cuda", "cpu"))}
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise TunelabError(f"{name} '{value}' is not one of {', '.join(allowed)}",
                               fix=f"use {name} {allowed[0]}")
    for name, value in (("examples", examples), ("avg_tokens", avg_tokens), ("epochs", epochs)):
        if value <= 0:
            raise TunelabError(f"{name} must be above 0 (got {value})", fix=f"give a positive {name}")


def format_table(recs: list[Recommendation]):
    """A rich Table, best first, for the CLI."""
    from rich.table import Table
    table = Table(title="Base models, best first")
    for column in ("#", "model", "method", "memory", "time", "cost", "fits", "why"):
        table.add_column(column, justify="right" if column in ("#", "memory", "time", "cost") else "left",
                         overflow="fold")
    for rank, rec in enumerate(recs, 1):
        model = rec.name if rec.name == rec.model_id else f"{rec.name} ({rec.model_id})"
        table.add_row(
            str(rank), model, rec.method or "hosted",
            "-" if rec.memory_gb is None else f"{rec.memory_gb:.1f} GB",
            "-" if rec.hours is None else _duration(rec.hours),
            f"${rec.cost_usd:,.2f}", "yes" if rec.feasible else "no", rec.reason)
    return table


def _duration(hours: float) -> str:
    if hours < 1:
        return f"{max(hours * 60, 1):.0f} min"
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"


def to_json(recs: list[Recommendation]) -> str:
    """The ranking as a JSON list, best first, for scripts."""
    return json.dumps([{"rank": i, **asdict(r)} for i, r in enumerate(recs, 1)], indent=2)
