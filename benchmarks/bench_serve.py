"""Claims: (1) with dynamic batching, `tunelab serve` answers 32 concurrent clients >= 3x faster
(requests/s) than the same server with batching off, with identical answers (greedy); (2) a
request answered from the response cache takes under 5 ms at p99, measured at the client over
loopback.

Both servers are `tunelab serve` processes on 127.0.0.1 serving the same tiny Llama (tests/
tiny_models.py, built here, no download), on CPU; only serve.max_batch_size/max_wait_ms differ
(batching off: batches of one, no wait). The response cache is off for the throughput runs (every
prompt is distinct anyway). Clients: 32 asyncio tasks sharing one HTTP client, each sending its
share of the requests back to back. Bounded: --requests requests per server, --timeout seconds each.
Run: python benchmarks/bench_serve.py [--requests N] [--concurrency C] [--max-tokens T]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tests/tiny_models.py, tests/serve_helpers.py
from serve_helpers import free_port, wait_ready  # noqa: E402


def build_model(out: Path) -> Path:
    from tiny_models import build_task_tokenizer, build_tiny_llama
    return build_tiny_llama(out, build_task_tokenizer(out), hidden=64, layers=2, heads=4, max_positions=256,
                            seed=0, tied=False)


def start_server(model: Path, work: Path, overrides: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tunelab.cli", "serve", str(model), "--port", str(port), "serve.model_name=tiny",
         f"serve.prediction_log={work / f'p{port}.db'}", f"serve.registry={work / f'r{port}.json'}", *overrides],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        # one torch thread per server: the clients share the same few cores, and a model this small
        # gains nothing from a second thread (both servers alike)
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        return server, wait_ready(base, server, timeout=180)
    except AssertionError as exc:
        server.kill()
        raise SystemExit(str(exc)) from None


def body(prompt: str, max_tokens: int) -> dict:
    return {"model": "tiny", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0}


async def load(base: str, prompts: list[str], max_tokens: int, concurrency: int, timeout: float):
    """(answers in prompt order, per-request latencies in s, wall seconds) for `concurrency` clients."""
    answers: list[str | None] = [None] * len(prompts)
    latencies: list[float] = []
    queue = list(range(len(prompts)))[::-1]
    async with httpx2.AsyncClient(base_url=base, timeout=timeout,
                                  limits=httpx2.Limits(max_connections=concurrency)) as client:
        async def worker():
            while queue:
                index = queue.pop()
                started = time.perf_counter()
                response = await client.post("/v1/chat/completions", json=body(prompts[index], max_tokens))
                latencies.append(time.perf_counter() - started)
                response.raise_for_status()
                answers[index] = response.json()["choices"][0]["message"]["content"]

        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout)
        return answers, latencies, time.perf_counter() - started


def cache_hits(base: str, prompt: str, max_tokens: int, count: int) -> list[float]:
    """Latency of `count` identical greedy requests after the first one filled the cache."""
    with httpx2.Client(base_url=base, timeout=30) as client:
        client.post("/v1/chat/completions", json=body(prompt, max_tokens)).raise_for_status()
        latencies = []
        for _ in range(count):
            started = time.perf_counter()
            client.post("/v1/chat/completions", json=body(prompt, max_tokens)).raise_for_status()
            latencies.append(time.perf_counter() - started)
        hits = [line for line in client.get("/metrics").text.splitlines() if line.startswith("tunelab_cache_hits_total")]
    assert hits and float(hits[0].split()[1]) == count, hits
    return latencies


def percentiles(latencies: list[float]) -> tuple[float, float]:
    return float(np.percentile(latencies, 50) * 1000), float(np.percentile(latencies, 99) * 1000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--cache-requests", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=300, help="Most seconds one load run may take.")
    args = parser.parse_args()
    rng = random.Random(0)
    prompts = ["".join(rng.choices(string.ascii_lowercase + " ", k=rng.randint(5, 60))) for _ in range(args.requests)]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = build_model(work / "model")
        results = {}
        for name, overrides in [("batching off", ["serve.max_batch_size=1", "serve.max_wait_ms=0", "serve.cache_size=0"]),
                                ("dynamic batching", [f"serve.max_batch_size={args.concurrency}",
                                                      "serve.max_wait_ms=5", "serve.cache_size=0"])]:
            server, base = start_server(model, work, overrides)
            try:
                asyncio.run(load(base, prompts[:8], args.max_tokens, 8, args.timeout))  # connections, first calls
                results[name] = asyncio.run(load(base, prompts, args.max_tokens, args.concurrency, args.timeout))
            finally:
                server.terminate()
                server.wait(timeout=60)
        server, base = start_server(model, work, [])
        try:
            hit_latencies = cache_hits(base, prompts[0], args.max_tokens, args.cache_requests)
        finally:
            server.terminate()
            server.wait(timeout=60)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, CPU; "
          f"{args.requests} distinct chat requests, max_tokens {args.max_tokens}, {args.concurrency} concurrent clients")
    for name, (_, latencies, wall) in results.items():
        p50, p99 = percentiles(latencies)
        print(f"{name:<17} {args.requests / wall:8.1f} requests/s   p50 {p50:8.1f} ms   p99 {p99:8.1f} ms")
    ratio = (args.requests / results["dynamic batching"][2]) / (args.requests / results["batching off"][2])
    identical = results["dynamic batching"][0] == results["batching off"][0]
    hit_p50, hit_p99 = percentiles(hit_latencies)
    print(f"speed-up: {ratio:.2f}x; identical answers: {identical}")
    print(f"cache hits: {args.cache_requests} requests, p50 {hit_p50:.2f} ms, p99 {hit_p99:.2f} ms")
    passed = ratio >= 3 and identical and hit_p99 < 5
    print(f"{'PASS' if passed else 'FAIL'}: batching >= 3x batching off with identical answers; cache-hit p99 < 5 ms")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
