"""The model pool: the one place that knows which model ids a server answers beside its served
model, and which of them are loaded.

An id is registered with a run directory and becomes one of two kinds, decided then:

  adapter  a LoRA adapter of the served model's base. It is loaded into the served backend (an
           AdapterHost) by name on the model thread, just before the first batch that needs it,
           so a request for a registered but unloaded adapter loads it; at most
           `serve.max_adapters` are loaded at once and the least recently used one is unloaded to
           make room (never one the batch at hand needs). Requests for different adapters share
           a batch.
  model    any other run (a full fine-tune, an adapter of another base, a classifier): its own
           backend, loaded (off the event loop) by its first request, at most `serve.max_models`
           at once, least recently used dropped first.

Ids come from `serve.adapters` at start-up, from the model registry's `models` (a server
watching the registry picks up `tunelab models register RUN --id ID`), from the admin routes,
and from anything in the process holding the service (`service.pool.register(model_id,
run_dir)`: what a jobs server calls when a fine-tune succeeds). Registering an id again with
another run replaces it; unregistering stops new requests at once and frees the model once the
requests already accepted for it are answered. Safe to call from any thread.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError
from tunelab.serve.backend import AdapterHost
from tunelab.serve.schemas import MODEL_ID_PATTERN
from tunelab.train.run_dir import RunDir

log = logging.getLogger("tunelab.serve")
ADAPTER, MODEL = "adapter", "model"
MODEL_ID = re.compile(MODEL_ID_PATTERN)
# OpenAI's fine-tuned model names (ft:BASE:SUFFIX:JOBID, and :ckpt-step-N for a checkpoint), which
# the jobs server registers in process; ':' is otherwise kept for ID:TASK
FINE_TUNED_ID = re.compile(r"^ft:[A-Za-z0-9._-]{1,128}(?::[A-Za-z0-9._-]{0,64}){1,4}$")
_serials = itertools.count(1)


def check_model_id(model_id: str, *, where: str | None = None) -> None:
    if not isinstance(model_id, str) or not (MODEL_ID.match(model_id) or FINE_TUNED_ID.match(model_id)):
        raise TunelabError(f"model id {model_id!r} is not usable", where=where,
                           fix="use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit")


def same_base(adapter_dir: str | Path, base: str) -> bool:
    """Whether an adapter was trained on `base` (paths compared resolved, hub ids as written)."""
    from tunelab.models.load import resolve_model_path
    recorded = RunDir(adapter_dir).adapter_base
    return recorded is not None and resolve_model_path(recorded) == resolve_model_path(base)


@dataclass(eq=False)
class Registration:
    """One registered id: the run it serves and how (`kind`), where it was registered from
    (config, registry, api) and a serial unique in this process (a replaced id gets a new one)."""
    model_id: str
    path: str
    kind: str
    source: str
    task: str  # generative or classification
    prefixes: dict[str, str]  # the run's task prefixes (an adapter's own, not the served run's)
    tasks: list[str]  # the run's named tasks
    version: str  # the run's version (its name and manifest hash), as a model of its own answers with it
    serial: int = field(default_factory=lambda: next(_serials))
    removed: bool = False  # unregistered: no new requests; freed once the accepted ones are answered

    @property
    def engine_name(self) -> str:
        """The adapter's name inside the backend (PEFT names cannot hold every id character)."""
        return f"adapter_{self.serial}"

    @property
    def root(self) -> str:
        """The run directory's name: what /v1/models shows of it (never its path)."""
        return Path(self.path).name

    @property
    def cache_tag(self) -> str:
        """Part of the response cache key: a replaced id never answers from its old run's cache."""
        return f"{self.model_id}#{self.serial}"


class ModelPool:
    def __init__(self, *, max_adapters: int, max_models: int, metrics, load_model: Callable[[Registration], Any],
                 whole_models_refused: str | None = None):
        """`load_model(registration) -> LiveModel` loads a whole-run model (blocking; called on a
        worker thread). `whole_models_refused`: why this server cannot serve whole-run models
        (None: it can)."""
        self.max_adapters, self.max_models = max_adapters, max_models
        self.metrics = metrics
        self.load_model = load_model
        self.whole_models_refused = whole_models_refused
        self.host = None  # the served backend adapters are loaded into
        self.served_name = ""
        self._lock = threading.Lock()
        self._registered: dict[str, Registration] = {}
        self._adapters: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # host -> OrderedDict[serial, reg]
        self._models: OrderedDict[int, Any] = OrderedDict()  # serial -> LiveModel, least recently used first
        self._loading: dict[int, asyncio.Future] = {}  # event loop only

    def bind(self, backend, served_name: str) -> None:
        """The served backend (at start-up and after each hot swap: the new one starts with no
        adapter loaded; each is loaded again by the first batch that needs it)."""
        with self._lock:
            self.host, self.served_name = backend, served_name
        self._update_gauges()

    # what is registered

    def register(self, model_id: str, run_dir: str | Path, *, source: str = "api") -> Registration:
        """Serve `run_dir` under `model_id` (replacing what the id served); TunelabError, with
        nothing changed, when it cannot be served here."""
        check_model_id(model_id, where=str(run_dir))
        if model_id == self.served_name:
            raise TunelabError(f"'{model_id}' is the served model's own id", where=str(run_dir),
                               fix="register the run under another id")
        try:
            path = Path(run_dir).expanduser().resolve()
            run = RunDir(path)
            usable = path.is_dir() and (run.is_adapter or (path / "config.json").is_file() or bool(run.manifest))
        except (OSError, ValueError):  # a path no filesystem can hold (a NUL byte, too long)
            usable = False
        if not usable:
            raise TunelabError("not a run or model directory (no adapter_config.json or config.json)",
                               where=str(run_dir), fix="register the output directory of `tunelab train`")
        kind = self._kind(run, str(run_dir))
        about = ("classification" if run.is_classifier else "generative", run.prefixes,
                 sorted(set(run.tasks) | set(run.prefixes)), run.version)
        with self._lock:
            old = self._registered.get(model_id)
            if old is not None and old.path == str(path) and old.kind == kind:
                return old
            registration = Registration(model_id, str(path), kind, source, *about)
            self._registered[model_id] = registration
            if old is not None:
                self._retire(old)
        log.info("registered %s (%s) from %s", model_id, kind, source)
        self._update_gauges()
        return registration

    def _kind(self, run: RunDir, where: str) -> str:
        if run.is_adapter and isinstance(self.host, AdapterHost) and same_base(run.path, self.host.base_model):
            if self.max_adapters < 1:
                raise TunelabError("it is an adapter of the served base, and serve.max_adapters is 0", where=where,
                                   fix="set serve.max_adapters to the number of adapters to keep loaded")
            return ADAPTER
        if self.whole_models_refused:
            raise TunelabError(f"it is not an adapter of the served base, and {self.whole_models_refused}",
                               where=where, fix="serve it from a server of its own")
        if self.max_models < 1:
            raise TunelabError("it is not an adapter of the served base, and serve.max_models is 0, so it cannot "
                               "be served as a model of its own", where=where,
                               fix="set serve.max_models, or serve it from a server of its own")
        return MODEL

    def unregister(self, model_id: str) -> Registration | None:
        """Stop serving `model_id` (None when it was not registered)."""
        with self._lock:
            registration = self._registered.pop(model_id, None)
            if registration is not None:
                self._retire(registration)
        self._update_gauges()
        return registration

    def _retire(self, registration: Registration) -> None:  # under the lock
        registration.removed = True
        self._models.pop(registration.serial, None)  # queued requests keep their backend until answered

    def sync(self, wanted: dict[str, str], *, source: str) -> None:
        """Make the ids registered from `source` those of `wanted` (id -> run directory); one that
        cannot be served here is logged and left out."""
        for registration in self.registrations():
            if registration.source == source and wanted.get(registration.model_id) != registration.path:
                self.unregister(registration.model_id)
        for model_id, path in wanted.items():
            current = self.get(model_id)
            if current is not None and (current.source != source or current.path == str(Path(path).resolve())):
                if current.source != source:
                    log.warning("%s: registered from %s already; the %s entry is ignored", model_id, current.source,
                                source)
                continue
            try:
                self.register(model_id, path, source=source)
            except TunelabError as exc:
                log.error("cannot serve %s: %s", model_id, exc)

    def get(self, model_id: str) -> Registration | None:
        return self._registered.get(model_id)

    def registrations(self) -> list[Registration]:
        with self._lock:
            return list(self._registered.values())

    def is_loaded(self, registration: Registration) -> bool:
        with self._lock:
            if registration.kind == ADAPTER:
                return registration.serial in self._adapters.get(self.host, ()) if self.host is not None else False
            return registration.serial in self._models

    def loaded_model(self, registration: Registration):
        """The loaded model of a MODEL registration, or None."""
        with self._lock:
            return self._models.get(registration.serial)

    # adapters: on the model thread, before each batch

    def prepare(self, host, registrations: list[Registration]) -> dict[int, Exception]:
        """Load into `host` the adapters a batch needs that are not loaded (unloading the least
        recently used others beyond max_adapters) and unload removed ones it does not need.
        Returns the adapters that failed to load, by serial (their requests fail alone)."""
        needed = {r.serial: r for r in registrations}
        with self._lock:
            loaded = self._adapters.setdefault(host, OrderedDict())
            stale = [s for s, r in loaded.items() if r.removed and s not in needed]
        for serial in stale:
            self._unload(host, loaded, serial, evicted=False)
        failures: dict[int, Exception] = {}
        for serial, registration in needed.items():
            if serial in loaded:
                with self._lock:
                    loaded.move_to_end(serial)
                continue
            while len(loaded) >= self.max_adapters:
                victim = next((s for s in loaded if s not in needed), None)
                if victim is None:  # cannot happen: batches hold at most max_adapters adapters
                    break
                self._unload(host, loaded, victim, evicted=True)
            started = time.perf_counter()
            try:
                host.load_adapter(registration.engine_name, registration.path)
            except Exception as exc:  # noqa: BLE001 (a bad adapter fails its own requests, not the server)
                log.error("could not load adapter %s from %s: %s", registration.model_id, registration.path, exc)
                self.metrics.model_load_failures.labels(ADAPTER).inc()
                failures[serial] = exc
                continue
            self.metrics.model_load_seconds.labels(ADAPTER).observe(time.perf_counter() - started)
            self.metrics.model_loads.labels(ADAPTER).inc()
            with self._lock:
                loaded[serial] = registration
        self._update_gauges()
        return failures

    def sweep(self, host) -> None:
        """Unload the removed adapters (on the model thread, between batches)."""
        self.prepare(host, [])

    def _unload(self, host, loaded: OrderedDict, serial: int, *, evicted: bool) -> None:
        with self._lock:
            registration = loaded.pop(serial)
        host.unload_adapter(registration.engine_name)
        if evicted:
            self.metrics.model_evictions.labels(ADAPTER).inc()
            log.info("unloaded adapter %s (least recently used)", registration.model_id)

    # whole-run models: on the event loop

    async def model(self, registration: Registration):
        """The loaded model of a MODEL registration, loading it first (one load, however many
        requests wait for it; a client that leaves does not stop it)."""
        with self._lock:
            live = self._models.get(registration.serial)
            if live is not None:
                self._models.move_to_end(registration.serial)
                return live
        loading = self._loading.get(registration.serial)
        if loading is None:
            loading = asyncio.ensure_future(self._load(registration))
            self._loading[registration.serial] = loading
        return await asyncio.shield(loading)

    async def _load(self, registration: Registration):
        started = time.perf_counter()
        try:
            live = await asyncio.to_thread(self.load_model, registration)
        except Exception:
            self.metrics.model_load_failures.labels(MODEL).inc()
            raise
        finally:
            self._loading.pop(registration.serial, None)
        self.metrics.model_load_seconds.labels(MODEL).observe(time.perf_counter() - started)
        self.metrics.model_loads.labels(MODEL).inc()
        with self._lock:
            if not registration.removed:
                self._models[registration.serial] = live
                while len(self._models) > self.max_models:
                    self._models.popitem(last=False)  # its memory goes once its queued requests are answered
                    self.metrics.model_evictions.labels(MODEL).inc()
        self._update_gauges()
        return live

    def _update_gauges(self) -> None:
        with self._lock:
            adapters = len(self._adapters.get(self.host, ())) if self.host is not None else 0
            models = len(self._models)
        self.metrics.models_loaded.labels(ADAPTER).set(adapters)
        self.metrics.models_loaded.labels(MODEL).set(models)
