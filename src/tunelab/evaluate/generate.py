"""Greedy answers and reference log-likelihoods of a causal language model or run directory.

Batched generation must give exactly the answers one-at-a-time `model.generate` gives: prompts
are left-padded (so every answer starts right after its own prompt) and sorted by length (so a
batch holds prompts of similar length and little padding); `generate_one_at_a_time` is the
reference the tests and benchmarks/bench_eval.py hold the batched path to.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunelab.errors import TunelabError
from tunelab.models.load import adapter_base, load_model, load_tokenizer

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@dataclass
class GenerationResult:
    texts: list[str]       # each answer, cut at its first end-of-turn/eos token
    new_tokens: list[int]  # tokens each answer took, its end-of-turn token included


def load_generator(path: str, *, device: str | None = None):
    """(model, tokenizer) ready to generate: a run directory from `tunelab train` (full model, or
    LoRA adapter merged onto its base) or any Hugging Face causal-LM directory, in eval mode on
    `device` (default: cuda when available), tokenizer left-padding with a pad token."""
    model = load_model(path, "sft")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    has_tokenizer = any((Path(path) / name).is_file() for name in TOKENIZER_FILES)
    tokenizer = load_tokenizer(path if has_tokenizer else adapter_base(path) or path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        # Padding positions are masked out, so any token serves; eos is the one every model has.
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def prompt_texts(tokenizer, conversations: list[dict[str, Any]]) -> list[str]:
    """Each record's messages but the final assistant reply, rendered by the chat template up to
    the start of the assistant's turn."""
    if not tokenizer.chat_template:
        raise TunelabError("the tokenizer has no chat template, so chat records cannot be turned into prompts",
                           fix="use a tokenizer with a chat_template (the one `tunelab train` saved with the run)")
    return [tokenizer.apply_chat_template(_history(record, i), tokenize=False, add_generation_prompt=True)
            for i, record in enumerate(conversations)]


def _history(record: dict[str, Any], index: int) -> list[dict[str, str]]:
    messages = record.get("messages") or []
    if not messages or messages[-1].get("role") != "assistant":
        raise TunelabError("the record does not end with an assistant message (the reference answer)",
                           where=f"record {index + 1}",
                           fix="give canonical chat records ending with the assistant's reply")
    return messages[:-1]


def stop_token_ids(model, tokenizer) -> list[int]:
    """Tokens that end an answer: the tokenizer's eos plus every eos the model's generation config
    names (chat models often end a turn with a token that is not the tokenizer's eos)."""
    configured = model.generation_config.eos_token_id
    configured = configured if isinstance(configured, list) else [configured]
    ids = [tokenizer.eos_token_id, *configured]
    return sorted({i for i in ids if i is not None})


def _adds_special_tokens(tokenizer, texts: list[str]) -> bool:
    """Whether tokenizing should add the tokenizer's special tokens: not when the chat template
    already wrote them (a second BOS shifts every position), as apply_chat_template decides."""
    bos = tokenizer.bos_token
    return not (bos and texts and all(t.startswith(bos) for t in texts))


def _decode_answer(tokenizer, generated: list[int], stops: set[int]) -> tuple[str, int]:
    end = next((i for i, token in enumerate(generated) if token in stops), None)
    kept = generated if end is None else generated[:end]
    return tokenizer.decode(kept, skip_special_tokens=True), len(generated) if end is None else end + 1


def _greedy(model, tokenizer, encoded, max_new_tokens: int, stops: list[int]) -> list[list[int]]:
    """Token ids each row generated after the (left-padded) prompt."""
    encoded = {k: v.to(model.device) for k, v in encoded.items()}
    out = model.generate(**encoded, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                         eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)
    return out[:, encoded["input_ids"].shape[1]:].tolist()


@torch.inference_mode()
def generate_answers(model, tokenizer, prompts: list[str], *, max_new_tokens: int = 128,
                     batch_size: int = 32) -> GenerationResult:
    """Greedy answers to `prompts`, in order, generated `batch_size` prompts at a time."""
    if not prompts:
        return GenerationResult([], [])
    special = _adds_special_tokens(tokenizer, prompts)
    stops = stop_token_ids(model, tokenizer)
    ids = tokenizer(prompts, add_special_tokens=special)["input_ids"]
    # Longest first: a batch of similar lengths wastes little on padding, and if anything runs out
    # of memory it is the first batch, not the last.
    order = sorted(range(len(prompts)), key=lambda i: -len(ids[i]))
    texts: list[str] = [""] * len(prompts)
    counts: list[int] = [0] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        encoded = tokenizer.pad({"input_ids": [ids[i] for i in chunk]}, padding_side="left", return_tensors="pt")
        for i, generated in zip(chunk, _greedy(model, tokenizer, encoded, max_new_tokens, stops)):
            texts[i], counts[i] = _decode_answer(tokenizer, generated, set(stops))
    return GenerationResult(texts, counts)


@torch.inference_mode()
def generate_one_at_a_time(model, tokenizer, prompts: list[str], *, max_new_tokens: int) -> GenerationResult:
    """Plain `model.generate` on each prompt alone: the reference batched generation must equal."""
    special = _adds_special_tokens(tokenizer, prompts)
    stops = stop_token_ids(model, tokenizer)
    texts, counts = [], []
    for prompt in prompts:
        encoded = tokenizer(prompt, add_special_tokens=special, return_tensors="pt")
        text, count = _decode_answer(tokenizer, _greedy(model, tokenizer, encoded, max_new_tokens, stops)[0],
                                     set(stops))
        texts.append(text)
        counts.append(count)
    return GenerationResult(texts, counts)


def _reply_tokens(tokenizer, record: dict[str, Any], index: int, stops: set[int]) -> tuple[list[int], int]:
    """(token ids of the whole conversation, where the reply starts): the reply is what the chat
    template writes after the prompt, up to and including its end-of-turn token."""
    prompt = tokenizer.apply_chat_template(_history(record, index), tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(record["messages"], tokenize=False)
    special = _adds_special_tokens(tokenizer, [prompt])
    if full.startswith(prompt):
        encoded = tokenizer(full, add_special_tokens=special, return_offsets_mapping=True)
        ids = encoded["input_ids"]
        # The first token that ends after the prompt's text: offsets, not a separate tokenisation
        # of the prompt, because a tokenizer may merge across the prompt/reply boundary.
        start = next((i for i, (_, end) in enumerate(encoded["offset_mapping"]) if end > len(prompt)), len(ids))
    else:
        # A template that renders history differently once the reply is there (some drop earlier
        # reasoning): score the reply the template would follow the prompt with, plus the stop.
        ids, start = _continued(tokenizer, prompt, record["messages"][-1]["content"], stops)
    end = next((i + 1 for i in range(start, len(ids)) if ids[i] in stops), len(ids))
    return ids[:end], start


def _continued(tokenizer, prompt: str, reply: str, stops: set[int]) -> tuple[list[int], int]:
    """(token ids of the prompt text, the reply after it and an end token; where the reply starts)."""
    ids = tokenizer(prompt, add_special_tokens=_adds_special_tokens(tokenizer, [prompt]))["input_ids"]
    end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else min(stops)
    return ids + tokenizer(reply, add_special_tokens=False)["input_ids"] + [end], len(ids)


@torch.inference_mode()
def _score(model, pad_id: int, sequences: list[list[int]], starts: list[int],
           batch_size: int) -> tuple[list[float], list[int]]:
    """Mean log-probability of tokens starts[k]: of each sequence (each predicted from the tokens
    before it) and how many there were."""
    means, counts = [0.0] * len(sequences), [0] * len(sequences)
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    for begin in range(0, len(order), batch_size):
        chunk = order[begin:begin + batch_size]
        width = max(len(sequences[i]) for i in chunk)
        # Right padding: the real tokens keep positions 0..n-1, exactly as when scored alone.
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            ids[row, :len(sequences[i])] = torch.tensor(sequences[i])
            mask[row, :len(sequences[i])] = 1
        logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits.float()
        log_probs = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None].to(model.device))[..., 0]
        for row, i in enumerate(chunk):
            first = max(starts[i], 1)  # the first token has nothing before it to be predicted from
            scored = log_probs[row, first - 1:len(sequences[i]) - 1]
            counts[i] = scored.numel()
            means[i] = scored.mean().item() if counts[i] else 0.0
    return means, counts


def reference_log_likelihood(model, tokenizer, conversations: list[dict[str, Any]], *,
                             batch_size: int = 16) -> tuple[list[float], list[int]]:
    """(mean log-likelihood per token, token count) of each record's final assistant reply, its
    end-of-turn token included, given the conversation before it."""
    prompt_texts(tokenizer, conversations[:1])  # the chat-template check, once
    stops = set(stop_token_ids(model, tokenizer))
    pairs = [_reply_tokens(tokenizer, record, i, stops) for i, record in enumerate(conversations)]
    return _score(model, tokenizer.pad_token_id, [p[0] for p in pairs], [p[1] for p in pairs], batch_size)


def reply_log_likelihood(model, tokenizer, prompts: list, replies: list[str], *,
                         batch_size: int = 16) -> tuple[list[float], list[int]]:
    """(mean log-likelihood per token, token count) of each reply given its prompt, as preference
    training formats the pair: after a conversational prompt (messages), the reply as the
    assistant's turn of the chat template, its end-of-turn token included (as
    reference_log_likelihood scores a reply); after a string prompt, the plain text continuing it,
    then the end token."""
    stops = set(stop_token_ids(model, tokenizer))
    sequences, starts = [], []
    for index, (prompt, reply) in enumerate(zip(prompts, replies)):
        if isinstance(prompt, list):
            record = {"messages": [*prompt, {"role": "assistant", "content": reply}]}
            if not sequences:
                prompt_texts(tokenizer, [record])  # the chat-template check, once
            ids, start = _reply_tokens(tokenizer, record, index, stops)
        else:
            ids, start = _continued(tokenizer, prompt, reply, stops)
        sequences.append(ids)
        starts.append(start)
    return _score(model, tokenizer.pad_token_id, sequences, starts, batch_size)


def text_log_likelihood(model, tokenizer, texts: list[str], *, batch_size: int = 16,
                        max_length: int = 512) -> tuple[list[float], list[int]]:
    """(mean log-likelihood per token, token count) of plain texts, truncated to `max_length`
    tokens; every token after the first is scored. A text of a single token scores no tokens
    (count 0, mean 0.0) and so weighs nothing in the corpus figures."""
    if not texts:
        return [], []
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    return _score(model, tokenizer.pad_token_id, ids, [1] * len(ids), batch_size)


def corpus_log_likelihood(loglik_means: list[float], token_counts: list[int]) -> float:
    """Mean log-likelihood per token over all examples' tokens together."""
    total = sum(token_counts)
    if total == 0:
        raise ValueError("no tokens were scored")
    return sum(m * n for m, n in zip(loglik_means, token_counts)) / total


def corpus_perplexity(loglik_means: list[float], token_counts: list[int]) -> float:
    """exp(-(sum of log-likelihoods) / (sum of tokens)): perplexity of the corpus as one text."""
    return math.exp(-corpus_log_likelihood(loglik_means, token_counts))
