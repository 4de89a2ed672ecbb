"""Latency and throughput of a prediction function at several batch sizes, and the device the
figures were measured on (figures mean nothing without it)."""
from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def device_description(device: Any = None) -> str:
    """"cuda: <GPU name>" or "cpu: <processor>, N torch threads" for `device` (a torch device or
    its name; default: cuda when available)."""
    import torch
    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        return f"cuda: {torch.cuda.get_device_name(torch.device(device) if device is not None else None)}"
    threads = torch.get_num_threads()
    return f"cpu: {_processor_name()}, {threads} torch thread{'' if threads == 1 else 's'}"


def _processor_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown processor"


def measure_latency(predict_batch: Callable[[list], int | None], inputs: Sequence, *,
                    batch_sizes: Sequence[int] = (1, 8, 32), requests: int = 64,
                    clock: Callable[[], float] = time.perf_counter, device: Any = None) -> dict[str, Any]:
    """Time `predict_batch` (inputs -> generated tokens, or None when it generates none) serving
    `requests` requests at each batch size, taking inputs in turn (cycling when there are fewer).

    A request's latency is its batch's wall time: every request in a batch waits for the whole
    batch. Batches are always full, so at least `requests` requests are served (rounded up to a
    whole number of batches). One untimed call with the largest batch comes first, so one-off
    costs (allocation, kernel selection) are not charged to the first request. `device` is what
    the figures are reported against (the model's device; default: cuda when available).
    """
    if not inputs:
        raise ValueError("latency needs at least one input")
    if any(size < 1 for size in batch_sizes) or requests < 1:
        raise ValueError("batch sizes and requests must be at least 1")
    served = 0

    def next_batch(size: int) -> list:
        nonlocal served
        batch = [inputs[(served + k) % len(inputs)] for k in range(size)]
        served += size
        return batch

    predict_batch(next_batch(max(batch_sizes)))
    by_batch_size = {}
    for size in batch_sizes:
        samples_ms: list[float] = []
        tokens: list[int | None] = []
        for _ in range(math.ceil(requests / size)):
            batch = next_batch(size)
            started = clock()
            tokens.append(predict_batch(batch))
            samples_ms.extend([(clock() - started) * 1000.0] * size)
        by_batch_size[str(size)] = latency_summary(samples_ms, size, tokens)
    return {"device": device_description(device), "by_batch_size": by_batch_size}


def latency_summary(samples_ms: list[float], batch_size: int, tokens: list[int | None]) -> dict[str, Any]:
    """Percentiles of per-request latency and throughput, for requests served `batch_size` at a
    time (`samples_ms` holds each batch's time once per request in it)."""
    seconds = sum(samples_ms) / batch_size / 1000.0
    p50, p95, p99 = (float(v) for v in np.percentile(samples_ms, [50, 95, 99]))
    counted = None if any(t is None for t in tokens) else sum(tokens)
    return {"p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
            "requests_per_s": len(samples_ms) / seconds if seconds > 0 else None,
            "tokens_per_s": counted / seconds if counted is not None and seconds > 0 else None,
            "samples_ms": samples_ms}
