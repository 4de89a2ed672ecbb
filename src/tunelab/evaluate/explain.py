"""Why a classifier predicted what it did: token attributions with captum's Integrated Gradients,
and a deletion test that measures whether they are faithful.

`explain` attributes one prediction to the words of its input with
`captum.attr.LayerIntegratedGradients` on the model's input-embedding layer. The baseline is the
same sequence with every content token replaced by the pad token (special tokens such as [CLS]
and [SEP] kept), and the attributed output is the target label's log-odds, log p / (1 - p), so:

- a positive score pushes the prediction towards the target (the predicted label by default),
  a negative one away from it;
- the scores of a text add up (up to the integration error, which shrinks with `steps`) to the
  target's log-odds on the text minus those on the all-pad baseline: they are in nats and
  comparable across texts, which is what lets the eval report add them up per class.
  (Log-odds rather than log p: log p saturates at 0 when the baseline is already confidently
  the target label, and then every word would score about 0.)

Word pieces are merged into the words the tokenizer's pre-tokenizer split the text into (the
fast tokenizer's `word_ids`), their scores summed; `start`/`end` are character offsets into the
text as given (a run's task prefix is added before attributing and left out of the result).
Tokens past `max_length` are truncated away, as the model never sees them, and are not listed.

Precision: `precision="auto"` (the default) integrates in bfloat16 (torch autocast) where the
device computes it natively (a CPU with AVX512-BF16 or AMX, a CUDA GPU with bf16) and in float32
elsewhere, where bf16 would be emulated and slower. On MiniLM fine-tuned for sentiment, 40 test
texts at 16 steps, bf16 left the attributions as they were in float32 (median integration error
0.6% against 0.7%, Spearman rank correlation with a 64-step float32 run 0.999 for both, the top-3
words the same) at half the time or less (benchmarks/bench_explain.py prints both). On a CPU the
bf16 integration also swaps the model's SDPA attention for the eager one while it runs: the CPU's
SDPA backward in bf16 took 40% of an explanation's time, the eager matmuls' a fraction of it.

`deletion_test` is the faithfulness check: deleting the top-k attributed words from each text
should lower the predicted label's probability more than deleting k random words.
"""
from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from tunelab.errors import TunelabError

# captum's Gauss-Legendre rule needs far fewer steps than its default 50: on MiniLM fine-tuned for
# sentiment the median integration error is 9.6% at 8 steps, 0.7% at 16, 0.01% at 32
# (benchmarks/bench_explain.py); the eval report prints it, so a sharper model shows it needs more
DEFAULT_STEPS = 16

Precision = Literal["auto", "fp32", "bf16"]


@dataclass
class Explanation:
    label: int                    # index of the label explained
    spans: list[dict[str, Any]]   # {"token", "start", "end", "score"} in text order
    change: float | None          # the label's log-odds on the text minus on the baseline
    integration_error: float | None  # |sum of every token's score - change| (captum's convergence delta)
    precision: str = "fp32"          # what the integration ran in: fp32 or bf16


def explain(model, tokenizer, text: str, *, target: int | str | None = None, steps: int = DEFAULT_STEPS,
            prefix: str = "", max_length: int = 512, merge_subwords: bool = True,
            precision: Precision = "auto") -> list[dict[str, Any]]:
    """Attributions of `model`'s prediction on `text`: [{"token", "start", "end", "score"}, ...]
    in text order. `target` is a label index or name; None explains the predicted label."""
    return attribute(model, tokenizer, text, target=target, steps=steps, prefix=prefix, max_length=max_length,
                     merge_subwords=merge_subwords, measure_error=False, precision=precision).spans


def attribute(model, tokenizer, text: str, *, target: int | str | None = None, steps: int = DEFAULT_STEPS,
              prefix: str = "", max_length: int = 512, merge_subwords: bool = True,
              measure_error: bool = True, precision: Precision = "auto") -> Explanation:
    """`explain`, with the label explained and (measure_error: two more forward passes) how far
    the integration is from exact."""
    if not getattr(tokenizer, "is_fast", False):
        raise TunelabError("explanations need a fast tokenizer (for character offsets)",
                           where=getattr(tokenizer, "name_or_path", None) or "tokenizer",
                           fix="save the run with a tokenizer that has a tokenizer.json")
    encoded = tokenizer(prefix + text, truncation=True, max_length=max_length, return_offsets_mapping=True,
                        return_special_tokens_mask=True, return_tensors="pt")
    offsets = encoded.pop("offset_mapping")[0].tolist()
    special = encoded.pop("special_tokens_mask")[0].bool()
    word_ids = encoded.word_ids(0)
    device = next(model.parameters()).device
    inputs = {name: tensor.to(device) for name, tensor in encoded.items()}
    if bool(special.all()):  # nothing but special tokens (or nothing at all): no word to attribute
        return Explanation(_target_index(model, inputs, target) if special.numel() else 0, [], 0.0, 0.0)
    label = _target_index(model, inputs, target)
    used = resolve_precision(precision, device)
    with integration_precision(model, used, device):
        scores, delta = integrated_gradients(model, inputs, special.to(device), label, steps, _pad_id(tokenizer),
                                             measure_error)
    spans = _spans(text, len(prefix), offsets, word_ids, special.tolist(), scores, merge_subwords)
    if delta is None:
        return Explanation(label, spans, None, None, used)
    return Explanation(label, spans, round(sum(scores) - delta, 6), round(abs(delta), 6), used)


def resolve_precision(precision: str, device: torch.device) -> str:
    """"fp32" or "bf16". auto: bf16 where `device` computes it natively, fp32 elsewhere (an
    emulated bf16 is slower than fp32 and no more faithful)."""
    if precision not in ("auto", "fp32", "bf16"):
        raise TunelabError(f"unknown explanation precision {precision!r}", fix="use auto, fp32 or bf16")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        # torch's own CPU capability probes (the ones its CPU autocast relies on)
        probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return "bf16" if any(probe is not None and probe() for probe in probes) else "fp32"
    return "fp32"


@contextmanager
def integration_precision(model, precision: str, device: torch.device) -> Iterator[None]:
    """Run the block in `precision`: as it is for fp32; under bf16 autocast for bf16, on a CPU with
    the model's attention switched from SDPA to eager until the block ends (the CPU SDPA kernel's
    backward is the slow part of a bf16 integration; the eager matmuls are not)."""
    if precision == "fp32":
        yield
        return
    previous = getattr(model.config, "_attn_implementation", None)
    swap = device.type == "cpu" and previous == "sdpa" and hasattr(model, "set_attn_implementation")
    if swap:
        model.set_attn_implementation("eager")
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    finally:
        if swap:
            model.set_attn_implementation(previous)


def integrated_gradients(model, inputs: dict[str, torch.Tensor], special: torch.Tensor, target: int, steps: int,
                         pad_id: int, measure_error: bool = True) -> tuple[list[float], float | None]:
    """Per-token attributions (summed over the embedding dimension) of the target's log-odds, and
    captum's convergence delta (their sum minus the exact change from baseline to input)."""
    from captum.attr import LayerIntegratedGradients
    input_ids = inputs["input_ids"]
    others = {name: tensor for name, tensor in inputs.items() if name != "input_ids"}
    names = tuple(others)

    def log_odds(ids, *extra):
        logits = model(input_ids=ids, **dict(zip(names, extra))).logits.float()
        return target_log_odds(logits)

    baseline = torch.where(special, input_ids, torch.full_like(input_ids, pad_id))
    attribution = LayerIntegratedGradients(log_odds, model.get_input_embeddings())
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():  # callers may be inside inference_mode / no_grad
            result = attribution.attribute(input_ids, baselines=baseline, target=target,
                                           additional_forward_args=tuple(others[n] for n in names),
                                           n_steps=steps, internal_batch_size=steps,
                                           return_convergence_delta=measure_error)
    finally:
        model.train(was_training)
    values, delta = result if measure_error else (result, None)
    return values.sum(dim=-1)[0].detach().float().cpu().tolist(), None if delta is None else float(delta.sum())


def target_log_odds(logits: torch.Tensor) -> torch.Tensor:
    """Each label's log-odds, log p / (1 - p), from logits [batch, labels]: the logit minus the
    log-sum-exp of the other labels' logits. Unlike log p, which flattens out at 0 as p nears 1,
    it keeps growing with the evidence, so a baseline the model already assigns to the label
    (an all-pad sequence often is) still leaves the words that add evidence something to show."""
    others = logits.unsqueeze(1).expand(-1, logits.shape[-1], -1)
    own = torch.eye(logits.shape[-1], dtype=torch.bool, device=logits.device)
    return logits - torch.logsumexp(others.masked_fill(own, float("-inf")), dim=-1)


def _target_index(model, inputs: dict[str, torch.Tensor], target: int | str | None) -> int:
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if isinstance(target, str):
        if target not in labels:
            raise TunelabError(f"unknown label {target!r} to explain", fix=f"choose one of {', '.join(labels)}")
        return labels.index(target)
    if target is not None:
        if not 0 <= int(target) < len(labels):
            raise TunelabError(f"label index {target} is out of range", fix=f"give 0 to {len(labels) - 1}")
        return int(target)
    with torch.no_grad():
        return int(model(**inputs).logits[0].argmax())


def _pad_id(tokenizer) -> int:
    for token_id in (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return 0


def _spans(text: str, shift: int, offsets, word_ids, special, scores, merge: bool) -> list[dict[str, Any]]:
    """Token (or word) spans of `text` with their summed scores; prefix and special tokens left out."""
    spans: list[dict[str, Any]] = []
    last_word = None
    for (start, end), word, is_special, score in zip(offsets, word_ids, special, scores):
        start, end = max(start - shift, 0), end - shift
        if is_special or end <= 0 or end <= start:
            continue
        if merge and spans and word is not None and word == last_word:
            spans[-1]["end"] = end
            spans[-1]["score"] += score
        else:
            spans.append({"token": "", "start": start, "end": end, "score": score})
        last_word = word
    shown = []
    for span in spans:
        # byte-level BPE tokens carry the space before a word: the span is the word itself
        token = text[span["start"]:span["end"]]
        if not token.strip():
            continue
        start = span["start"] + len(token) - len(token.lstrip())
        end = span["end"] - (len(token) - len(token.rstrip()))
        shown.append({"token": text[start:end], "start": start, "end": end, "score": round(float(span["score"]), 6)})
    return shown


def top_spans(explanation: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The k spans that push hardest towards the explained label (ties: earlier first)."""
    return sorted(explanation, key=lambda span: -span["score"])[:k]


def delete_spans(text: str, spans: list[dict[str, Any]]) -> str:
    """`text` without the characters of `spans` (whitespace left as it is: tokenizers skip it)."""
    keep, position = [], 0
    for span in sorted(spans, key=lambda s: s["start"]):
        keep.append(text[position:span["start"]])
        position = max(position, span["end"])
    keep.append(text[position:])
    return "".join(keep)


def deletion_test(predict_proba, texts: list[str], explanations: list[list[dict[str, Any]]], targets: list[int],
                  *, k: int, seed: int = 0, random_draws: int = 5, prefixes: list[str] | None = None) -> dict[str, Any]:
    """Faithfulness by deletion: for each text with more than k words, the drop in the target's
    probability when its k top-attributed words are deleted, against the mean drop over
    `random_draws` deletions of k random words. `predict_proba(texts) -> probabilities` (rows);
    `prefixes` (one per text: a run's task prefix) are put before every text it is given.

    Returns the mean drops, the share of texts where the top-k deletion hurt more, and the
    texts counted; an explanation that tracks what the model uses gives a clearly larger drop."""
    rng = random.Random(seed)
    prefixes = prefixes or [""] * len(texts)
    rows, variants = [], []
    for index, (text, spans) in enumerate(zip(texts, explanations)):
        if len(spans) <= k:
            continue  # deleting every word tests nothing about which words matter
        variants.append(prefixes[index] + delete_spans(text, top_spans(spans, k)))
        variants += [prefixes[index] + delete_spans(text, rng.sample(spans, k)) for _ in range(random_draws)]
        rows.append(index)
    if not rows:
        return {"k": k, "examples": 0, "top_k_drop": None, "random_drop": None, "top_k_beats_random": None,
                "random_draws": random_draws}
    before = np.asarray(predict_proba([prefixes[i] + texts[i] for i in rows]))
    after = np.asarray(predict_proba(variants)).reshape(len(rows), 1 + random_draws, -1)
    chosen = np.asarray([targets[i] for i in rows])
    base = before[np.arange(len(rows)), chosen]
    top_drop = base - after[np.arange(len(rows)), 0, chosen]
    random_drop = base - after[np.arange(len(rows)), 1:, chosen].mean(axis=1)
    return {"k": k, "examples": len(rows), "top_k_drop": round(float(top_drop.mean()), 4),
            "random_drop": round(float(random_drop.mean()), 4),
            "top_k_beats_random": round(float((top_drop > random_drop).mean()), 4), "random_draws": random_draws}
