"""The served model's life: loading and warm-up before the server is ready, the dynamic batcher
in front of it, and hot swaps when the model registry's live version changes.

A batch always runs on the backend its requests were checked against (the backend travels with
the job), so a swap never hands a request to a model that has not seen it validated; the old
backend is dropped once its last batch is done.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.serve.backends import load_backend
from tunelab.serve.batching import DynamicBatcher
from tunelab.serve.metrics import ServerMetrics

log = logging.getLogger("tunelab.serve")


@dataclass
class ServeSettings:
    """Everything the server needs, as plain values (run.py builds it from the config)."""
    model: str | None = None  # run directory; None: the registry's live version
    registry: str | None = None  # registry file polled for live-version changes; None: no hot swap
    model_name: str | None = None  # model id clients pass (default: the run directory's name)
    adapters: dict[str, str] = field(default_factory=dict)
    engine: str = "transformers"
    max_batch_size: int = 8
    max_wait_ms: float = 10.0
    max_queue: int = 256
    cache_size: int = 1024
    default_max_tokens: int = 128
    max_request_bytes: int = 65_536
    max_tokens_limit: int = 512
    redact_pii: bool = True
    block_injection: bool = True
    prediction_log: str | None = "predictions.db"
    retention_days: float | None = 30
    api_keys: list[str] = field(default_factory=list)
    registry_poll_s: float = 1.0


@dataclass
class LiveModel:
    backend: Any
    version: str
    run_dir: str


def local_version(run_dir: str | Path) -> str:
    """A version for a run served without a registry: its name and a hash of its manifest."""
    from tunelab.train.run_dir import RunDir
    return RunDir(run_dir).version


def load_live(run_dir: str, version: str, settings: ServeSettings) -> LiveModel:
    """Load and warm a model (blocking: call it off the event loop)."""
    backend = load_backend(run_dir, engine=settings.engine, adapters=settings.adapters)
    backend.warmup()
    return LiveModel(backend, version, run_dir)


def initial_model(settings: ServeSettings) -> tuple[str, str]:
    """(run directory, version) to serve first: the registry's live version, else settings.model."""
    if settings.registry:
        from tunelab.serve.registry import Registry
        live = Registry(settings.registry).live()
        if live is not None:
            return live["path"], live["version"]
    if settings.model is None:
        from tunelab.errors import TunelabError
        raise TunelabError("no model to serve", fix="pass a run directory, or promote a version in the registry "
                                                    "with `tunelab models promote VERSION`")
    return settings.model, local_version(settings.model)


class ModelService:
    def __init__(self, settings: ServeSettings, metrics: ServerMetrics, live: LiveModel | None = None):
        self.settings = settings
        self.metrics = metrics
        self.live: LiveModel | None = live
        self.ready = False
        self.load_error: str | None = None
        self.batcher = DynamicBatcher(self._process, max_batch_size=settings.max_batch_size,
                                      max_wait_ms=settings.max_wait_ms, max_queue=settings.max_queue,
                                      on_batch=metrics.batch_size.observe)
        self._tasks: list[asyncio.Task] = []
        first = live.run_dir if live else (settings.model or "")
        self.served_name = settings.model_name or (Path(first).resolve().name if first else "tunelab")

    async def start(self) -> None:
        self.batcher.start()
        self._tasks.append(asyncio.create_task(self._load_first(), name="tunelab-load"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.batcher.stop()

    async def _load_first(self) -> None:
        try:
            if self.live is None:
                run_dir, version = initial_model(self.settings)
                if not self.settings.model_name:
                    self.served_name = Path(run_dir).resolve().name
                self.live = await asyncio.to_thread(load_live, run_dir, version, self.settings)
            else:
                await asyncio.to_thread(self.live.backend.warmup)
        except Exception as exc:  # noqa: BLE001 (reported by /ready; the process stays up for /health)
            self.load_error = str(exc)
            log.error("could not load the model: %s", exc)
            return
        self.ready = True
        if self.settings.registry:
            self._tasks.append(asyncio.create_task(self._watch_registry(), name="tunelab-registry"))

    async def _watch_registry(self) -> None:
        """Poll the registry file's mtime (cheap) and swap in a new live version when it changes."""
        from tunelab.serve.registry import Registry
        registry = Registry(self.settings.registry)
        seen = registry.mtime()
        while True:
            await asyncio.sleep(self.settings.registry_poll_s)
            mtime = registry.mtime()
            if mtime == seen:
                continue
            seen = mtime
            try:
                await self.swap_to(registry.live())
            except Exception as exc:  # noqa: BLE001 (keep serving the old version; say why)
                log.error("could not swap in the registry's live version: %s", exc)

    async def swap_to(self, entry: dict[str, Any] | None) -> bool:
        if entry is None or self.live is None or entry["version"] == self.live.version:
            return False
        log.info("loading %s (%s) to replace %s", entry["version"], entry["path"], self.live.version)
        self.live = await asyncio.to_thread(load_live, entry["path"], entry["version"], self.settings)
        self.metrics.model_swaps.inc()
        log.info("now serving %s", entry["version"])
        return True

    # model calls: each goes through the batcher and runs on its model thread

    def enqueue_generation(self, live: LiveModel, job, *, batchable: bool) -> asyncio.Future:
        key = ("generate", live.version, job.adapter)
        future = self.batcher.enqueue(key, (live, job), batchable=batchable)
        self.metrics.queue_depth.set(self.batcher.depth)
        return future

    async def classify(self, live: LiveModel, text: str) -> tuple[str, dict[str, float]]:
        future = self.batcher.enqueue(("classify", live.version), (live, text))
        self.metrics.queue_depth.set(self.batcher.depth)
        return await future

    def _process(self, key: Hashable, payloads: list[tuple[LiveModel, Any]]) -> list[Any]:
        self.metrics.queue_depth.set(self.batcher.depth)
        backend = payloads[0][0].backend
        items = [item for _, item in payloads]
        return backend.classify(items) if key[0] == "classify" else backend.generate(items)
