"""Claims: (1) with dynamic batching, `tunelab serve` answers 32 concurrent clients >= 3x faster
(requests/s) than the same server with batching off, with identical answers (greedy); (2) a
request answered from the response cache takes under 5 ms at p99, measured at the client over
loopback; (3) with 8 LoRA adapters of the served base and 32 clients whose requests interleave
the adapters, batches that mix adapters (PEFT's mixed-adapter batches, serve.mix_adapters=true)
answer >= 2x faster than batches of one adapter at a time (serve.mix_adapters=false), with
identical answers; (4) with a shadow version on (tunelab models shadow: a copy of each request
answered after the live answer is sent, on its own queue and model thread), the live p50 latency
at 8 clients is within 10% of the same server's with the shadow off (p50 on / p50 off <= 1.10),
and the live answers are the same. (The shadow yields: its batches start only while the live
batcher is idle and its generations stop when live work arrives, so under sustained load it
answers a sample of the copies; the benchmark prints how many were answered, preempted and
dropped. Measured 2026-12-02 on 2 shared cores: 1.095 and 1.008; docs/loop.md has the figures.)

All servers are `tunelab serve` processes on 127.0.0.1 serving the same tiny Llama (tests/
tiny_models.py, built here, no download), on CPU; only serve.max_batch_size/max_wait_ms differ
(batching off: batches of one, no wait), or, for (3), only serve.mix_adapters (both batch up to
32 requests, wait 5 ms; the adapters are seeded random LoRA adapters, registered with
serve.adapters and loaded before the clients start). The response cache is off for the
throughput runs (every prompt is distinct anyway). The load average is printed before and after:
the machine may be shared. Clients: 32 asyncio tasks sharing one HTTP client, each sending its
share of the requests back to back. Bounded: --requests requests per server, --timeout seconds each.
For (4) one server runs throughout with a registry of two versions (the tiny Llama live, another
seed of it as the candidate); rounds alternate shadow off and on (switched through the registry
while it serves, as `tunelab models shadow` does), so load on a shared machine falls on both alike.
Run: python benchmarks/bench_serve.py [--requests N] [--concurrency C] [--max-tokens T] [--part P]
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
from serve_helpers import free_port, random_lora, wait_ready  # noqa: E402

ADAPTERS = 8


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


def body(prompt: str, max_tokens: int, model: str = "tiny") -> dict:
    return {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0}


async def load(base: str, prompts: list[str], max_tokens: int, concurrency: int, timeout: float,
               models: list[str] | None = None):
    """(answers in prompt order, per-request latencies in s, wall seconds) for `concurrency`
    clients; prompt i goes to models[i] (default: the served model)."""
    answers: list[str | None] = [None] * len(prompts)
    latencies: list[float] = []
    queue = list(range(len(prompts)))[::-1]
    async with httpx2.AsyncClient(base_url=base, timeout=timeout,
                                  limits=httpx2.Limits(max_connections=concurrency)) as client:
        async def worker():
            while queue:
                index = queue.pop()
                started = time.perf_counter()
                model = models[index] if models else "tiny"
                response = await client.post("/v1/chat/completions", json=body(prompts[index], max_tokens, model))
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


def throughput(model: Path, work: Path, overrides: list[str], prompts: list[str], args,
               models: list[str] | None = None, label: str = ""):
    server, base = start_server(model, work, overrides)
    try:
        asyncio.run(load(base, prompts[:8], args.max_tokens, 8, args.timeout, models[:8] if models else None))
        calls_before, requests_before = batch_totals(base)
        result = asyncio.run(load(base, prompts, args.max_tokens, args.concurrency, args.timeout, models))
        calls, requests = (now - before for now, before in zip(batch_totals(base), (calls_before, requests_before)))
        print(f"  {label or 'server'}: {calls:.0f} model calls, {requests / max(calls, 1):.1f} requests per call")
        return result
    finally:
        server.terminate()
        server.wait(timeout=60)


def batch_totals(base: str) -> tuple[float, float]:
    """(model calls, requests in them) so far: the server's tunelab_batch_size histogram."""
    totals = {}
    for line in httpx2.get(f"{base}/metrics", timeout=30).text.splitlines():
        if line.startswith(("tunelab_batch_size_count", "tunelab_batch_size_sum")):
            totals[line.split()[0]] = float(line.split()[1])
    return totals.get("tunelab_batch_size_count", 0.0), totals.get("tunelab_batch_size_sum", 0.0)


def model_calls(model: Path, adapters: dict[str, Path], prompts: list[str], models: list[str], args) -> dict:
    """The same work without HTTP, straight through the transformers backend on one thread:
    windows of `concurrency` requests in arrival order, each one mixed batch, or one batch per
    adapter in it. (answers, seconds) of each, to tell the model's share of the speed-up from
    the server's."""
    import torch

    from tunelab.serve.backend import GenerationJob
    from tunelab.serve.transformers_backend import TransformersGenerator
    torch.set_num_threads(1)
    backend = TransformersGenerator.load(model, adapter_slots=len(adapters))
    for name, path in adapters.items():
        backend.load_adapter(name, str(path))
    jobs = [GenerationJob(prompt_ids=backend.encode(backend.render_chat([{"role": "user", "content": prompt}]),
                                                    special_tokens=False), max_tokens=args.max_tokens, adapter=name)
            for prompt, name in zip(prompts, models)]
    windows = [jobs[k:k + args.concurrency] for k in range(0, len(jobs), args.concurrency)]
    timed = {}
    for label, split in [("one per batch", lambda window: [[j for j in window if j.adapter == name] for name in adapters]),
                         ("mixed batches", lambda window: [window])]:
        answers, started = {}, time.perf_counter()
        for window in windows:
            for batch in split(window):
                answers.update({id(job): result.texts[0] for job, result in zip(batch, backend.generate(batch))})
        timed[label] = ([answers[id(job)] for job in jobs], time.perf_counter() - started)
    return timed


def shadow_copies(base: str, outcome: str = "answered") -> float:
    """Copies the shadow has answered (or dropped: its queue was full) so far (the server's /metrics)."""
    for line in httpx2.get(f"{base}/metrics", timeout=30).text.splitlines():
        if line.startswith(f'tunelab_shadow_requests_total{{outcome="{outcome}"}}'):
            return float(line.split()[1])
    return 0.0


def switch_shadow(registry_path: Path, base: str, version: str | None, prompt: str, max_tokens: int) -> None:
    """Turn the shadow on or off in the registry and wait until the server acts on it: a request's
    copy is answered (on), or a request gets no copy (off)."""
    from tunelab.serve.registry import Registry
    Registry(registry_path).set_shadow(version)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(1.5)  # longer than the server's registry poll
        before = shadow_copies(base)
        httpx2.post(f"{base}/v1/chat/completions", json=body(prompt, max_tokens), timeout=60).raise_for_status()
        answered = time.monotonic() + 5  # the copy's own generation, nothing else being served
        while time.monotonic() < answered and shadow_copies(base) == before:
            time.sleep(0.1)
        if (shadow_copies(base) > before) == (version is not None):
            return
    raise SystemExit(f"the server did not turn the shadow {'on' if version else 'off'}")


def shadow_rounds(model: Path, candidate: Path, work: Path, prompts: list[str], args) -> dict:
    """{"shadow off" | "shadow on": (answers, latencies, wall)} over alternating rounds of one
    server at 8 clients."""
    from tunelab.serve.registry import Registry
    registry_path = work / "shadow-registry.json"
    Registry(registry_path).register(model)
    Registry(registry_path).register(candidate)
    server, base = start_server(model, work, ["serve.max_batch_size=8", "serve.max_wait_ms=5", "serve.cache_size=0",
                                              f"serve.registry={registry_path}", "serve.registry_poll_s=0.5"])
    results = {"shadow off": ([], [], 0.0), "shadow on": ([], [], 0.0)}
    try:
        asyncio.run(load(base, prompts[:8], args.max_tokens, 8, args.timeout))
        for _ in range(args.rounds):
            for name, version in (("shadow off", None), ("shadow on", "v2")):
                switch_shadow(registry_path, base, version, prompts[0], args.max_tokens)
                answers, latencies, wall = asyncio.run(load(base, prompts, args.max_tokens, 8, args.timeout))
                before = results[name]
                results[name] = (before[0] + answers, before[1] + latencies, before[2] + wall)
        print(f"shadow copies: {shadow_copies(base):.0f} answered, {shadow_copies(base, 'preempted'):.0f} "
              f"preempted (stopped when live work arrived), {shadow_copies(base, 'dropped'):.0f} dropped "
              f"(its queue full while the live model kept the CPU), the rest still queued, of "
              f"{args.rounds * len(prompts)} requests with the shadow on (metrics)")
    finally:
        server.terminate()
        server.wait(timeout=60)
    return results


def report(results: dict, requests: int) -> None:
    for name, (_, latencies, wall) in results.items():
        p50, p99 = percentiles(latencies)
        print(f"{name:<28} {requests / wall:8.1f} requests/s   p50 {p50:8.1f} ms   p99 {p99:8.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--cache-requests", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=300, help="Most seconds one load run may take.")
    parser.add_argument("--part", choices=["all", "batching", "adapters", "shadow"], default="all",
                        help="batching: claims 1 and 2; adapters: claim 3; shadow: claim 4.")
    parser.add_argument("--rounds", type=int, default=3, help="Alternating shadow off/on rounds (claim 4).")
    args = parser.parse_args()
    rng = random.Random(0)
    prompts = ["".join(rng.choices(string.ascii_lowercase + " ", k=rng.randint(5, 60))) for _ in range(args.requests)]
    load_before = os.getloadavg()
    passed = True
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, CPU; "
          f"{args.requests} distinct chat requests, max_tokens {args.max_tokens}, {args.concurrency} concurrent clients")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = build_model(work / "model")
        if args.part in ("all", "batching"):
            results = {name: throughput(model, work, overrides, prompts, args, label=name) for name, overrides in [
                ("batching off", ["serve.max_batch_size=1", "serve.max_wait_ms=0", "serve.cache_size=0"]),
                ("dynamic batching", [f"serve.max_batch_size={args.concurrency}", "serve.max_wait_ms=5",
                                      "serve.cache_size=0"])]}
            server, base = start_server(model, work, [])
            try:
                hit_latencies = cache_hits(base, prompts[0], args.max_tokens, args.cache_requests)
            finally:
                server.terminate()
                server.wait(timeout=60)
            report(results, args.requests)
            ratio = results["batching off"][2] / results["dynamic batching"][2]
            identical = results["dynamic batching"][0] == results["batching off"][0]
            hit_p50, hit_p99 = percentiles(hit_latencies)
            print(f"speed-up: {ratio:.2f}x; identical answers: {identical}")
            print(f"cache hits: {args.cache_requests} requests, p50 {hit_p50:.2f} ms, p99 {hit_p99:.2f} ms")
            ok = ratio >= 3 and identical and hit_p99 < 5
            print(f"{'PASS' if ok else 'FAIL'}: batching >= 3x batching off with identical answers; "
                  "cache-hit p99 < 5 ms")
            passed &= ok
        if args.part in ("all", "adapters"):
            adapters = {f"a{i}": random_lora(model, work / f"a{i}", 10 + i) for i in range(ADAPTERS)}
            names = list(adapters)
            models = [names[i % ADAPTERS] for i in range(args.requests)]  # consecutive requests: other adapters
            common = [f"serve.max_batch_size={args.concurrency}", "serve.max_wait_ms=5", "serve.cache_size=0",
                      f"serve.max_adapters={ADAPTERS}", *(f"serve.adapters.{n}={p}" for n, p in adapters.items())]
            results = {f"{ADAPTERS} adapters, {name}": throughput(model, work, common + [f"serve.mix_adapters={mix}"],
                                                                  prompts, args, models, name)
                       for name, mix in [("one per batch", "false"), ("mixed batches", "true")]}
            report(results, args.requests)
            alone, mixed = results.values()
            ratio = alone[2] / mixed[2]
            identical = alone[0] == mixed[0]
            print(f"mixed-adapter speed-up: {ratio:.2f}x; identical answers: {identical}")
            direct = model_calls(model, adapters, prompts, models, args)
            (one, one_s), (mix, mix_s) = direct["one per batch"], direct["mixed batches"]
            print(f"the model calls alone (no HTTP, one thread): one per batch {args.requests / one_s:.1f} requests/s, "
                  f"mixed {args.requests / mix_s:.1f} requests/s, speed-up {one_s / mix_s:.2f}x; answers equal the "
                  f"servers': {one == mix == mixed[0]}")
            ok = ratio >= 2 and identical
            print(f"{'PASS' if ok else 'FAIL'}: mixed-adapter batches >= 2x one adapter per batch with identical "
                  "answers")
            passed &= ok
        if args.part in ("all", "shadow"):
            from tiny_models import build_tiny_llama
            from transformers import AutoTokenizer
            candidate = build_tiny_llama(work / "candidate", AutoTokenizer.from_pretrained(model), hidden=64, layers=2,
                                         heads=4, max_positions=256, seed=5, tied=False)
            results = shadow_rounds(model, candidate, work, prompts, args)
            report({f"{name} (8 clients)": (a, l, w / args.rounds) for name, (a, l, w) in results.items()},
                   args.requests)
            (off_answers, off_latencies, _), (on_answers, on_latencies, _) = results["shadow off"], results["shadow on"]
            ratio = percentiles(on_latencies)[0] / percentiles(off_latencies)[0]
            identical = on_answers == off_answers
            print(f"live p50 with the shadow on / off: {ratio:.3f}; identical live answers: {identical}")
            ok = ratio <= 1.10 and identical
            print(f"{'PASS' if ok else 'FAIL'}: live p50 at 8 clients with a shadow within 10% of without, same answers")
            passed &= ok
    load_after = os.getloadavg()
    print(f"load average (1, 5, 15 min): before {', '.join(f'{x:.1f}' for x in load_before)}; "
          f"after {', '.join(f'{x:.1f}' for x in load_after)}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
