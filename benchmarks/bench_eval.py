"""Claim: `tunelab eval` generates answers >= 4x faster than one-at-a-time `model.generate`,
with exactly the same answers (greedy; batches of prompts sorted by length, left-padded).

Measured side by side in one run on the same model and prompts: a randomly initialised 2-layer
Llama-style model with a character-level chat tokenizer (tests/tiny_models.py, built here, no
download), its weights drawn wide enough that answers differ from prompt to prompt and about half
stop at the end-of-turn token before the limit, on CPU with one torch thread. Each side runs
twice, alternating, and keeps its faster time.
Run: python benchmarks/bench_eval.py [--prompts N] [--batch-size B] [--max-new-tokens T]
"""
from __future__ import annotations

import argparse
import random
import string
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tests/tiny_models.py


def build_model(out: Path, hidden: int, seed: int = 0) -> Path:
    """The tests' tiny Llama, re-drawn with std 0.2 (the default 0.02 answers every prompt with the
    same character) and its end-of-turn logit raised so answers have varied lengths."""
    import torch
    from tiny_models import build_task_tokenizer, build_tiny_llama
    from transformers import AutoModelForCausalLM
    tokenizer = build_task_tokenizer(out)
    build_tiny_llama(out, tokenizer, hidden=hidden, layers=2, max_positions=256, seed=seed, tied=False)
    model = AutoModelForCausalLM.from_pretrained(out)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
        model.lm_head.weight[tokenizer.eos_token_id] *= 1.5
    model.save_pretrained(out)
    return out


def make_conversations(n: int, seed: int = 0) -> list[dict]:
    """User turns of 1 to 120 characters (uniform): a wide spread, so length sorting matters."""
    rng = random.Random(seed)
    return [{"messages": [{"role": "user", "content": "".join(rng.choices(string.ascii_lowercase + " ",
                                                                          k=rng.randint(1, 120)))},
                          {"role": "assistant", "content": "-"}]} for _ in range(n)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=96)
    args = parser.parse_args()
    import torch

    from tunelab.evaluate.generate import generate_answers, generate_one_at_a_time, load_generator, prompt_texts
    from tunelab.evaluate.latency import device_description
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer = load_generator(str(build_model(Path(tmp) / "model", args.hidden)), device="cpu")
    prompts = prompt_texts(tokenizer, make_conversations(args.prompts))
    generate_answers(model, tokenizer, prompts[:args.batch_size], max_new_tokens=args.max_new_tokens,
                     batch_size=args.batch_size)  # warm-up, untimed
    # alternate, twice each, and keep each side's best: noise on a shared machine only slows
    sequential_s = batched_s = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        sequential = generate_one_at_a_time(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens)
        sequential_s = min(sequential_s, time.perf_counter() - started)
        started = time.perf_counter()
        batched = generate_answers(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens,
                                   batch_size=args.batch_size)
        batched_s = min(batched_s, time.perf_counter() - started)

    tokens = sum(sequential.new_tokens)
    stopped = sum(n < args.max_new_tokens for n in sequential.new_tokens)
    identical = batched.texts == sequential.texts and batched.new_tokens == sequential.new_tokens
    differing = sum(a != b for a, b in zip(batched.texts, sequential.texts))
    ratio = sequential_s / batched_s
    print(f"device: {device_description('cpu')}")
    print(f"{len(prompts)} prompts, {tokens:,} answer tokens ({stopped} answers stopped before "
          f"{args.max_new_tokens} tokens, {len(set(sequential.texts))} distinct answers)")
    print(f"one at a time        {sequential_s:7.2f} s = {tokens / sequential_s:8.1f} tokens/s")
    print(f"batched (batch {args.batch_size:>3})  {batched_s:7.2f} s = {tokens / batched_s:8.1f} tokens/s")
    print(f"speed-up: {ratio:.2f}x; identical answers: {identical} ({differing} differ)")
    passed = ratio >= 4 and identical
    print(f"{'PASS' if passed else 'FAIL'}: batched >= 4x one-at-a-time and identical answers")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
