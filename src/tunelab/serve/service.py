"""The served model's life: loading and warm-up before the server is ready, the registry it is
served from, the model pool beside it (adapters and whole-run models registered at runtime), the
dynamic batcher in front of them, and hot swaps when the registry's live version changes.

A batch always runs on the backend its requests were checked against (the backend travels with
the job), so a swap never hands a request to a model that has not seen it validated; the old
backend is dropped once its last batch is done. A swap to a version this server cannot serve in
place (another kind of model, or a base its registered adapters do not fit) is refused: logged,
counted, and the current version keeps serving.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config import ServeConfig
from tunelab.errors import TunelabError
from tunelab.serve.backend import AdapterHost, Backend, GenerationJob
from tunelab.serve.batching import DynamicBatcher
from tunelab.serve.errors import load_failed
from tunelab.serve.metrics import ServerMetrics
from tunelab.serve.pool import ADAPTER, ModelPool, Registration, same_base
from tunelab.serve.registry import Claim, Registry, entry_kind, run_kind
from tunelab.serve.rollout import Rollout
from tunelab.train.run_dir import RunDir

log = logging.getLogger("tunelab.serve")
_loaded = itertools.count(1)


@dataclass
class LiveModel:
    backend: Backend
    version: str
    run_dir: str
    prefixes: dict[str, str] = field(init=False)  # task -> input prefix, read once for every request
    tasks: list[str] = field(init=False)  # the run's named tasks
    serial: int = field(init=False)  # this load of it (batches never mix two loaded models)

    def __post_init__(self) -> None:
        run = RunDir(self.run_dir)
        self.prefixes = run.prefixes
        self.tasks = sorted(set(run.tasks) | set(self.prefixes))
        self.serial = next(_loaded)

    @property
    def name(self) -> str:
        """The run's directory name: what /v1/models shows of it (never its path)."""
        return Path(self.run_dir).resolve().name


def load_backend(run_dir: str | Path, *, engine: str = "transformers", adapter_slots: int = 0) -> Backend:
    """The backend for a run directory: a classifier (transformers, or ONNX Runtime for an ONNX
    export) or a generator (transformers or vLLM) that can take `adapter_slots` LoRA adapters of
    its base beside it (0: none; an adapter run is then merged)."""
    if engine == "onnx":
        from tunelab.serve.onnx_backend import OnnxClassifierBackend
        return OnnxClassifierBackend.load(run_dir)
    run = RunDir.open(run_dir)
    if run.is_classifier:
        from tunelab.serve.classifier_backend import TransformersClassifier
        return TransformersClassifier.load(run_dir)
    if engine == "vllm":
        from tunelab.serve.vllm_backend import VllmGenerator
        return VllmGenerator.load(run_dir, adapter_slots=adapter_slots)
    from tunelab.serve.transformers_backend import TransformersGenerator
    return TransformersGenerator.load(run_dir, adapter_slots=adapter_slots)


def load_live(run_dir: str, version: str, cfg: ServeConfig, *, adapter_slots: int | None = None) -> LiveModel:
    """Load and warm a model (blocking: call it off the event loop); the served model has room
    for serve.max_adapters adapters, a pool model for none."""
    slots = cfg.max_adapters if adapter_slots is None else adapter_slots
    try:
        backend = load_backend(run_dir, engine=cfg.engine, adapter_slots=slots)
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
                 live: LiveModel | None = None, pool_only: bool = False):
        """pool_only: no served model; only the ids registered in the pool are answered (the jobs
        server registers each fine-tuned model as its job succeeds)."""
        self.cfg = cfg
        self.pool_only = pool_only
        self.model = model or cfg.model
        self.metrics = metrics
        self.live: LiveModel | None = live
        self.ready = False
        self.load_error: str | None = None
        self.server_id = uuid.uuid4().hex
        self.batcher = DynamicBatcher(self._process, max_batch_size=cfg.max_batch_size, max_wait_ms=cfg.max_wait_ms,
                                      max_queue=cfg.max_queue, on_batch=self._on_batch)
        vllm = "serve.engine is vllm, whose engine takes its share of GPU memory at start-up"
        self.pool = ModelPool(max_adapters=cfg.max_adapters, max_models=cfg.max_models, metrics=metrics,
                              load_model=self._load_pool_model, whole_models_refused=vllm if cfg.engine == "vllm" else None)
        self.rollout = Rollout(cfg, metrics, self._process, self.batcher)  # the registry's shadow and canary versions
        self._tasks: list[asyncio.Task] = []
        self._warm = self._attached = self._pooled = False
        self.served_name = "" if pool_only else cfg.model_name or (live.name if live else "tunelab")

    def open(self) -> None:
        """Load, warm and (with a registry) register the model now, before the server starts, so
        a bad run or a refused registry is one sentence instead of a server that never gets ready."""
        if self.pool_only:
            self.pool.bind(None, "")
            self._warm = self._pooled = True
            return
        self.live, self.served_name = open_model(self.cfg, self.model, self.server_id)
        self._warm = True
        self._attached = bool(self.cfg.registry)  # listed among the registry's servers until stop()
        self._open_pool()

    def _open_pool(self) -> None:
        """Bind the pool to the served model and register serve.adapters, loading as many as fit
        (no request is being served yet, so this thread may touch the model)."""
        self.pool.bind(self.live.backend, self.served_name)
        configured = []
        for name, path in self.cfg.adapters.items():
            if not isinstance(self.live.backend, AdapterHost) or not RunDir(path).is_adapter \
                    or not same_base(path, self.live.backend.base_model):
                base = getattr(self.live.backend, "base_model", self.live.run_dir)
                raise TunelabError(f"serve.adapters.{name} is not a LoRA adapter of the served model's base {base}",
                                   where=str(path), fix="serve adapters of one base together, or register other "
                                                        "runs as models of their own (serve.max_models)")
            configured.append(self.pool.register(name, path, source="config"))
        failures = self.pool.prepare(self.live.backend, configured[:self.cfg.max_adapters])
        if failures:
            raise TunelabError(f"cannot load the adapters in serve.adapters ({next(iter(failures.values()))})",
                               fix="check that each is a LoRA adapter directory from `tunelab train`")
        self._pooled = True

    async def start(self) -> None:
        self.batcher.start()
        self.rollout.start()
        self._tasks.append(asyncio.create_task(self._load_first(), name="tunelab-load"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.batcher.stop()
        await self.rollout.stop()
        if self._attached:
            await asyncio.to_thread(Registry(self.cfg.registry).detach, self.server_id)

    async def _load_first(self) -> None:
        try:
            if self.live is None and not self._pooled:
                await asyncio.to_thread(self.open)
            else:
                if not self._warm:
                    await asyncio.to_thread(self.live.backend.warmup)
                if not self._pooled:
                    await asyncio.to_thread(self._open_pool)
        except Exception as exc:  # noqa: BLE001 (reported by /ready; the process stays up for /health)
            self.load_error = str(exc)
            log.error("could not load the model: %s", exc)
            return
        self.ready = True
        if self.cfg.registry:
            await asyncio.to_thread(self._sync_models, Registry(self.cfg.registry))
            await self._sync_rollout(Registry(self.cfg.registry))
            self._tasks.append(asyncio.create_task(self._watch_registry(), name="tunelab-registry"))

    async def _watch_registry(self) -> None:
        """Poll the registry file's mtime (cheap); when it changed, swap in a new live version and
        take up the models registered or removed there."""
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
                removed = await asyncio.to_thread(self._sync_models, registry)
                if removed:
                    await self._sweep()
                await self._sync_rollout(registry)
            except Exception as exc:  # noqa: BLE001 (keep serving the old version; say why)
                log.error("could not take up the registry's changes: %s", exc)

    async def _sync_rollout(self, registry: Registry) -> None:
        """Hold the shadow and canary versions the registry names now."""
        data = await asyncio.to_thread(registry.load)
        await self.rollout.sync(data, self.live,
                                lambda entry: load_live(entry["path"], entry["version"], self.cfg, adapter_slots=0))

    def _sync_models(self, registry: Registry) -> bool:
        """Serve the registry's models; whether any was removed (its adapter is to be freed)."""
        before = {r.model_id for r in self.pool.registrations()}
        self.pool.sync({m["id"]: m["path"] for m in registry.models()}, source="registry")
        return bool(before - {r.model_id for r in self.pool.registrations()})

    def refusal(self, entry: dict[str, Any]) -> tuple[str, str] | None:
        """(reason label, sentence) when this server cannot serve `entry` in place, else None."""
        kind = entry_kind(entry)
        if kind != self.live.backend.task:
            return "task", (f"{entry['version']} is a {kind} run and this server serves a "
                            f"{self.live.backend.task} model")
        adapters = [r for r in self.pool.registrations() if r.kind == ADAPTER]
        if adapters:
            base = RunDir(entry["path"]).adapter_base or entry["path"]
            misfits = [r.model_id for r in adapters if not same_base(r.path, base)]
            if misfits:
                return "base", (f"{entry['version']} is not on the base of the registered adapters "
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
        self.pool.bind(self.live.backend, self.served_name)  # its adapters load again on first use
        self.metrics.model_swaps.inc()
        log.info("now serving %s", entry["version"])
        return True

    # the pool, as the admin routes change it (a jobs server in this process calls pool.register)

    async def register(self, model_id: str, run_dir: str) -> Registration:
        """Serve `run_dir` as `model_id` now and, with a registry, on every server of the registry
        from now on (recorded there); TunelabError when it cannot be served here."""
        if not self.cfg.registry:
            return self.pool.register(model_id, run_dir, source="api")
        registration = self.pool.register(model_id, run_dir, source="registry")
        try:
            await asyncio.to_thread(Registry(self.cfg.registry).add_model, model_id, run_dir)
        except Exception:
            self.pool.unregister(model_id)
            raise
        return registration

    async def unregister(self, model_id: str) -> Registration | None:
        registration = self.pool.unregister(model_id)
        if self.cfg.registry:
            await asyncio.to_thread(Registry(self.cfg.registry).remove_model, model_id)
        if registration is not None:
            await self._sweep()
        return registration

    async def _sweep(self) -> None:
        """Free removed adapters now, between batches (requests queued for one load it again)."""
        if self.live is not None and isinstance(self.live.backend, AdapterHost):
            backend = self.live.backend
            await self.batcher.call(lambda: self.pool.sweep(backend))

    def _load_pool_model(self, registration: Registration) -> LiveModel:
        return load_live(registration.path, registration.version, self.cfg, adapter_slots=0)

    # model calls: each goes through the batcher and runs on its model thread

    def enqueue_generation(self, live: LiveModel, job: GenerationJob,
                           registration: Registration | None = None) -> asyncio.Future:
        """Greedy jobs of one loaded model share batches whatever adapter they name, unless
        serve.mix_adapters is off (then each adapter batches alone). A registered model of its
        own is `live` itself: its jobs name no adapter."""
        adapter = registration if registration is not None and registration.kind == ADAPTER else None
        key = ("generate", live.serial) if self.cfg.mix_adapters else (
            "generate", live.serial, adapter.serial if adapter else None)
        future = self.batcher.enqueue(key, (live, job, adapter), batchable=job.greedy and job.streamer is None)
        self.metrics.queue_depth.set(self.batcher.depth)
        return future

    def enqueue_classification(self, live: LiveModel, text: str) -> asyncio.Future:
        future = self.batcher.enqueue(("classify", live.serial), (live, text, None))
        self.metrics.queue_depth.set(self.batcher.depth)
        return future

    def enqueue_explanation(self, live: LiveModel, text: str, label: str, prefix: str) -> asyncio.Future:
        """Attributions run on the model thread like any model call, one request at a time (each
        is already a batch of integration steps)."""
        future = self.batcher.enqueue(("explain", live.serial), (live, (text, label, prefix), None), batchable=False)
        self.metrics.queue_depth.set(self.batcher.depth)
        return future

    def _on_batch(self, size: int) -> None:  # on the event loop, as each batch leaves the queue
        self.metrics.batch_size.observe(size)
        self.metrics.queue_depth.set(self.batcher.depth)

    def _process(self, key: Hashable, payloads: list[tuple[LiveModel, Any, Registration | None]]) -> list[Any]:
        backend = payloads[0][0].backend
        if key[0] == "classify":
            return backend.classify([item for _, item, _ in payloads])
        if key[0] == "explain":
            return [backend.explain(*item) for _, item, _ in payloads]
        results: list[Any] = []
        for chunk in adapter_chunks(payloads, self.cfg.max_adapters):
            adapters = list({id(r): r for _, _, r in chunk if r is not None}.values())
            failed = self.pool.prepare(backend, adapters) if adapters else {}
            runnable = [job for _, job, r in chunk if r is None or r.serial not in failed]
            for _, job, r in chunk:
                job.adapter = r.engine_name if r is not None else None
            answers = iter(backend.generate(runnable) if runnable else [])
            results += [load_failed(r.model_id, failed[r.serial]) if r is not None and r.serial in failed
                        else next(answers) for _, _, r in chunk]
        return results


def adapter_chunks(payloads: list, limit: int) -> list[list]:
    """A batch cut, in order, into parts that each need at most `limit` adapters loaded at once."""
    chunks: list[list] = []
    names: set[int] = set()
    for payload in payloads:
        adapter = payload[2]
        if not chunks or (adapter is not None and adapter.serial not in names and len(names) >= limit):
            chunks.append([])
            names = set()
        if adapter is not None:
            names.add(adapter.serial)
        chunks[-1].append(payload)
    return chunks
