"""The served model's life: loading and warm-up before the server is ready, the registry it is
served from, the dynamic batcher in front of it, and hot swaps when the registry's live version
changes.

A batch always runs on the backend its requests were checked against (the backend travels with
the job), so a swap never hands a request to a model that has not seen it validated; the old
backend is dropped once its last batch is done. A swap to a version this server cannot serve in
place (another kind of model, or a base its serve.adapters do not fit) is refused: logged,
counted, and the current version keeps serving.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config import ServeConfig
from tunelab.errors import TunelabError
from tunelab.serve.backend import Backend, GenerationJob
from tunelab.serve.batching import DynamicBatcher
from tunelab.serve.metrics import ServerMetrics
from tunelab.serve.registry import Claim, Registry, entry_kind, run_kind
from tunelab.train.run_dir import RunDir

log = logging.getLogger("tunelab.serve")


@dataclass
class LiveModel:
    backend: Backend
    version: str
    run_dir: str
    prefixes: dict[str, str] = field(init=False)  # task -> input prefix, read once for every request
    tasks: list[str] = field(init=False)  # the run's named tasks

    def __post_init__(self) -> None:
        run = RunDir(self.run_dir)
        self.prefixes = run.prefixes
        self.tasks = sorted(set(run.tasks) | set(self.prefixes))

    @property
    def name(self) -> str:
        """The run's directory name: what /v1/models shows of it (never its path)."""
        return Path(self.run_dir).resolve().name


def load_backend(run_dir: str | Path, *, engine: str = "transformers", adapters: dict[str, str] | None = None) -> Backend:
    """The backend for a run directory: a classifier or a generator (transformers or vLLM)."""
    run = RunDir.open(run_dir)
    if run.is_classifier:
        if adapters:
            raise TunelabError("serve.adapters are for generative runs; a classification run is served alone",
                               where=str(run_dir))
        from tunelab.serve.classifier_backend import TransformersClassifier
        return TransformersClassifier.load(run_dir)
    if engine == "vllm":
        from tunelab.serve.vllm_backend import VllmGenerator
        return VllmGenerator.load(run_dir, adapters)
    from tunelab.serve.transformers_backend import TransformersGenerator
    return TransformersGenerator.load(run_dir, adapters)


def load_live(run_dir: str, version: str, cfg: ServeConfig) -> LiveModel:
    """Load and warm a model (blocking: call it off the event loop)."""
    try:
        backend = load_backend(run_dir, engine=cfg.backend, adapters=cfg.adapters)
        backend.warmup()
    except TunelabError:
        raise
    except (OSError, ValueError, RuntimeError) as exc:
        why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise TunelabError(f"cannot load the model to serve ({why})", where=str(run_dir),
                           fix="check that it is a run directory from `tunelab train`") from None
    return LiveModel(backend, version, str(run_dir))


def open_model(cfg: ServeConfig, model: str | None, server_id: str) -> tuple[LiveModel, str]:
    """(the loaded model, the name clients call it by): the run given, or the registry's live
    version. With a registry, the run is registered (and made live) only once it has loaded, and
    a server that would step on another one's registry is refused before anything loads."""
    model = model or cfg.model
    if model is not None and not Path(model).is_dir():
        raise TunelabError("run directory not found", where=model, fix="give a run directory from `tunelab train`")
    if not cfg.registry:
        if model is None:
            raise TunelabError("no model to serve", fix="pass a run directory, or set serve.registry to serve its "
                                                        "live version")
        live = load_live(model, RunDir(model).version, cfg)
        return live, cfg.model_name or live.name
    registry = Registry(cfg.registry)
    claim = Claim(server_id, cfg.model_name, run_kind(model) if model else None, model, cfg.promote)
    planned = registry.plan(claim)
    path = planned["path"] if planned else model
    live = load_live(path, planned["version"] if planned else "unregistered", cfg)
    entry, name = registry.attach(claim, loaded=path)
    live.version = entry["version"]
    return live, name


class ModelService:
    def __init__(self, cfg: ServeConfig, metrics: ServerMetrics, *, model: str | None = None,
                 live: LiveModel | None = None):
        self.cfg = cfg
        self.model = model or cfg.model
        self.metrics = metrics
        self.live: LiveModel | None = live
        self.ready = False
        self.load_error: str | None = None
        self.server_id = uuid.uuid4().hex
        self.batcher = DynamicBatcher(self._process, max_batch_size=cfg.max_batch_size, max_wait_ms=cfg.max_wait_ms,
                                      max_queue=cfg.max_queue, on_batch=self._on_batch)
        self._tasks: list[asyncio.Task] = []
        self._warm = self._attached = False
        self.served_name = cfg.model_name or (live.name if live else "tunelab")

    def open(self) -> None:
        """Load, warm and (with a registry) register the model now, before the server starts, so
        a bad run or a refused registry is one sentence instead of a server that never gets ready."""
        self.live, self.served_name = open_model(self.cfg, self.model, self.server_id)
        self._warm = True
        self._attached = bool(self.cfg.registry)  # listed among the registry's servers until stop()

    async def start(self) -> None:
        self.batcher.start()
        self._tasks.append(asyncio.create_task(self._load_first(), name="tunelab-load"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.batcher.stop()
        if self._attached:
            await asyncio.to_thread(Registry(self.cfg.registry).detach, self.server_id)

    async def _load_first(self) -> None:
        try:
            if self.live is None:
                await asyncio.to_thread(self.open)
            elif not self._warm:
                await asyncio.to_thread(self.live.backend.warmup)
        except Exception as exc:  # noqa: BLE001 (reported by /ready; the process stays up for /health)
            self.load_error = str(exc)
            log.error("could not load the model: %s", exc)
            return
        self.ready = True
        if self.cfg.registry:
            self._tasks.append(asyncio.create_task(self._watch_registry(), name="tunelab-registry"))

    async def _watch_registry(self) -> None:
        """Poll the registry file's mtime (cheap) and swap in a new live version when it changes."""
        registry = Registry(self.cfg.registry)
        seen = registry.mtime()
        while True:
            await asyncio.sleep(self.cfg.registry_poll_s)
            mtime = registry.mtime()
            if mtime == seen:
                continue
            seen = mtime
            try:
                await self.swap_to(registry.live())
            except Exception as exc:  # noqa: BLE001 (keep serving the old version; say why)
                log.error("could not swap in the registry's live version: %s", exc)

    def refusal(self, entry: dict[str, Any]) -> tuple[str, str] | None:
        """(reason label, sentence) when this server cannot serve `entry` in place, else None."""
        kind = entry_kind(entry)
        if kind != self.live.backend.task:
            return "task", (f"{entry['version']} is a {kind} run and this server serves a "
                            f"{self.live.backend.task} model")
        if self.cfg.adapters:
            from tunelab.serve.transformers_backend import same_base
            base = RunDir(entry["path"]).adapter_base or entry["path"]
            misfits = [name for name, path in self.cfg.adapters.items() if not same_base(path, base)]
            if misfits:
                return "base", (f"{entry['version']} is not on the base of serve.adapters "
                                f"({', '.join(misfits)}), so they could not be served with it")
        return None

    async def swap_to(self, entry: dict[str, Any] | None) -> bool:
        if entry is None or self.live is None or entry["version"] == self.live.version:
            return False
        refused = self.refusal(entry)
        if refused is not None:
            self.metrics.swaps_refused.labels(refused[0]).inc()
            log.error("not swapping to %s: %s; still serving %s", entry["version"], refused[1], self.live.version)
            return False
        log.info("loading %s (%s) to replace %s", entry["version"], entry["path"], self.live.version)
        self.live = await asyncio.to_thread(load_live, entry["path"], entry["version"], self.cfg)
        self.metrics.model_swaps.inc()
        log.info("now serving %s", entry["version"])
        return True

    # model calls: each goes through the batcher and runs on its model thread

    def enqueue_generation(self, live: LiveModel, job: GenerationJob) -> asyncio.Future:
        future = self.batcher.enqueue(("generate", live.version, job.adapter), (live, job),
                                      batchable=job.greedy and job.streamer is None)
        self.metrics.queue_depth.set(self.batcher.depth)
        return future

    def enqueue_classification(self, live: LiveModel, text: str) -> asyncio.Future:
        future = self.batcher.enqueue(("classify", live.version), (live, text))
        self.metrics.queue_depth.set(self.batcher.depth)
        return future

    def enqueue_explanation(self, live: LiveModel, text: str, label: str, prefix: str) -> asyncio.Future:
        """Attributions run on the model thread like any model call, one request at a time (each
        is already a batch of integration steps)."""
        future = self.batcher.enqueue(("explain", live.version), (live, (text, label, prefix)), batchable=False)
        self.metrics.queue_depth.set(self.batcher.depth)
        return future

    def _on_batch(self, size: int) -> None:  # on the event loop, as each batch leaves the queue
        self.metrics.batch_size.observe(size)
        self.metrics.queue_depth.set(self.batcher.depth)

    def _process(self, key: Hashable, payloads: list[tuple[LiveModel, Any]]) -> list[Any]:
        backend = payloads[0][0].backend
        items = [item for _, item in payloads]
        if key[0] == "explain":
            return [backend.explain(*item) for item in items]
        return backend.classify(items) if key[0] == "classify" else backend.generate(items)
