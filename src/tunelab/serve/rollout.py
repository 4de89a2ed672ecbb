"""Candidate versions beside the live one, as the model registry names them (`shadow`, `canary`).

  shadow  gets a copy of each request the live model answered, once the live answer has been
          sent (tunelab.serve.recording runs the copy after the last byte), and never answers a
          client. Its copies run on a model thread and a bounded queue of their own
          (serve.shadow_max_queue), so live batches never wait behind them; a shadow batch starts
          only while the live batcher has nothing queued or running, so under sustained load the
          live model keeps the CPU; a shadow generation under way when live work arrives stops at
          its next token (counted as preempted, not logged). When the queue is
          full a copy is dropped and counted (tunelab_shadow_requests{outcome="dropped"}) rather
          than making anything wait. Its answers go to the prediction log with role `shadow`,
          its version and the live request's id, for `tunelab models compare`.
  canary  answers `share` of the requests for the served model itself (not registered adapters or
          models). The split is a stable hash of a key the client chooses: the
          `X-Tunelab-Route-Key` header, else the request's `user` field, else the request body
          itself; the same key always lands on the same side, and raising the share only moves
          more keys to the canary (sticky). Its rows in the log have role `canary`.

A generative shadow reads the live model's prompt token ids, so it must share the live
tokenizer (a candidate retrained from the live run does); classifiers read the text. A version
of another kind than the served model is refused (logged, counted), as a hot swap to it would be.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from tunelab.config import ServeConfig
from tunelab.serve.batching import DynamicBatcher, QueueFull
from tunelab.serve.metrics import ServerMetrics
from tunelab.serve.recording import RequestRecord
from tunelab.serve.registry import entry_kind

log = logging.getLogger("tunelab.serve")
ROUTE_KEY_HEADER = "x-tunelab-route-key"
ROLES = ("shadow", "canary")


def canary_point(key: str) -> float:
    """Where a key falls in [0, 1): the first 8 bytes of its SHA-256 (the same on every server)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2 ** 64


def route_key(request, headers) -> str:
    """The client's key: the X-Tunelab-Route-Key header, the `user` field, or the request body."""
    return (headers.get(ROUTE_KEY_HEADER) or getattr(request, "user", None)
            or request.model_dump_json(exclude_none=True))


class Rollout:
    """The shadow and canary models a server holds now, loaded when the registry names them."""

    def __init__(self, cfg: ServeConfig, metrics: ServerMetrics, process: Callable[[Any, list], list],
                 live_batcher: DynamicBatcher):
        """`process`: the service's model call (key, payloads) -> results, run on the shadow's own
        thread; `live_batcher`: the live model's, whose work always comes first."""
        self.cfg, self.metrics = cfg, metrics
        self.shadow = None  # LiveModel
        self.canary = None  # LiveModel
        self.canary_share = 0.0
        # a shadow batch starts only while the live batcher is idle: under sustained load the live
        # model keeps the CPU, and the shadow's queue fills and drops copies instead. (Not a
        # low-priority thread besides: one starved while holding the GIL would stall the event loop.)
        self.batcher = DynamicBatcher(self._run_batch, max_batch_size=cfg.max_batch_size,
                                      max_wait_ms=cfg.max_wait_ms, max_queue=cfg.shadow_max_queue, after=live_batcher)
        self.process = process
        # a shadow generation under way stops at its next token when live work arrives (its copies
        # count as preempted): a batch of generations lasts long enough to slow the live one
        self._generating: dict[int, Any] = {}  # id -> GenerationJob (a dataclass: not hashable)
        self._lock = threading.Lock()
        live_batcher.on_enqueue.append(self._preempt)
        self._copies: set[asyncio.Task] = set()
        self.prediction_log = None  # where the shadow's answers go: set by the app once the log is open

    def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        """Finish the copies under way (their answers are logged), then stop the shadow's thread."""
        if self._copies:
            await asyncio.gather(*list(self._copies), return_exceptions=True)
        await self.batcher.stop()

    def _run_batch(self, key, payloads: list) -> list:
        """The service's model call, on the shadow's thread, its generations open to preemption."""
        jobs = [job for _, job, _ in payloads] if key[0] == "generate" else []
        with self._lock:
            self._generating.update((id(job), job) for job in jobs)
        try:
            return self.process(key, payloads)
        finally:
            with self._lock:
                for job in jobs:
                    self._generating.pop(id(job), None)

    def _preempt(self) -> None:
        with self._lock:
            for job in self._generating.values():
                job.cancelled.set()

    # which models

    async def sync(self, data: dict[str, Any], live, load: Callable[[dict[str, Any]], Any]) -> None:
        """Hold the models the registry's `shadow` and `canary` name (`load(entry)` loads one off
        the event loop); drop those it no longer names."""
        canary = data.get("canary") or {}
        self.canary_share = float(canary.get("share", 0.0))
        for role in ROLES:
            wanted = (data.get(role) or {}).get("version")
            held = getattr(self, role)
            if (held.version if held else None) == wanted:
                continue
            if wanted is None:
                setattr(self, role, None)
                log.info("%s %s stopped", role, held.version)
                continue
            entry = next((e for e in data["versions"] if e.get("version") == wanted), None)
            refused = self.refusal(entry, live) if entry else ("missing", f"{wanted} is not registered")
            if refused is not None:
                self.metrics.swaps_refused.labels(refused[0]).inc()
                log.error("not serving %s as the %s: %s", wanted, role, refused[1])
                setattr(self, role, None)
                continue
            model = await asyncio.to_thread(load, entry)
            if role == "shadow" and live.backend.task != "classification" \
                    and model.backend.vocab_size != live.backend.vocab_size:
                self.metrics.swaps_refused.labels("tokenizer").inc()
                log.error("not serving %s as the shadow: its tokenizer is not the live model's", wanted)
                setattr(self, role, None)
                continue
            setattr(self, role, model)
            log.info("%s: %s%s", role, wanted, f" ({self.canary_share:.0%} of the traffic)" if role == "canary" else "")

    def refusal(self, entry: dict[str, Any], live) -> tuple[str, str] | None:
        kind = entry_kind(entry)
        if kind != live.backend.task:
            return "task", f"{entry['version']} is a {kind} run and this server serves a {live.backend.task} model"
        return None

    # the canary

    def canary_for(self, request, headers):
        """The canary model when this request's key falls in its share, else None."""
        canary = self.canary
        if canary is None or canary_point(route_key(request, headers)) >= self.canary_share:
            return None
        self.metrics.canary_requests.inc()
        return canary

    # the shadow

    def copy_after_sent(self, record: RequestRecord, kind: str, inputs: list, joined: Callable[[list[str]], str]) -> None:
        """Have the shadow answer a copy of this request once its live answer is sent. `kind`:
        classify (inputs: the texts the live model read) or generate (inputs: the live jobs)."""
        shadow = self.shadow
        if shadow is None:
            return

        def start() -> None:
            task = asyncio.get_running_loop().create_task(self._answer_copy(record, shadow, kind, inputs, joined))
            self._copies.add(task)
            task.add_done_callback(self._copies.discard)

        record.after_sent.append(start)

    async def _answer_copy(self, record: RequestRecord, shadow, kind: str, inputs: list, joined) -> None:
        started = time.perf_counter()
        try:
            if kind == "classify":
                answers = await asyncio.gather(*self._enqueue_all(
                    ("classify", shadow.serial), [(shadow, text, None) for text in inputs]))
                labels = [label for label, _ in answers]
                fields = {"output": joined(labels), "prompt_tokens": None, "completion_tokens": 0}
                if len(answers) == 1:
                    label, probabilities = answers[0]
                    fields.update(label=label, confidence=probabilities[label], probabilities=probabilities)
            else:
                jobs = [dataclasses.replace(job, streamer=None, cancelled=threading.Event(), adapter=None)
                        for job in inputs]
                results = await asyncio.gather(*self._enqueue_all(
                    ("generate", shadow.serial), [(shadow, job, None) for job in jobs], batchable=jobs[0].greedy))
                if any(job.cancelled.is_set() for job in jobs):  # cut short by live work: not an answer
                    self.metrics.shadow_requests.labels("preempted").inc()
                    return
                fields = {"output": joined([t for r in results for t in r.texts]),
                          "prompt_tokens": sum(r.prompt_tokens for r in results),
                          "completion_tokens": sum(sum(r.completion_tokens) for r in results)}
            status, outcome = 200, "answered"
        except QueueFull:
            self.metrics.shadow_requests.labels("dropped").inc()
            return
        except Exception as exc:  # noqa: BLE001 (the shadow's fault never reaches a client; logged and counted)
            log.error("the shadow %s failed on a copy of %s: %s", shadow.version, record.request_id, exc)
            fields, status, outcome = {}, 500, "failed"
        self.metrics.shadow_requests.labels(outcome).inc()
        if self.prediction_log is not None:
            self.prediction_log.log({**fields, "ts": time.time(), "request_id": record.request_id, "endpoint": record.endpoint,
                        "model_version": shadow.version, "role": "shadow", "input": record.fields.get("input"),
                        "task": record.fields.get("task"), "status": status, "outcome": outcome,
                        "latency_ms": (time.perf_counter() - started) * 1000})

    def _enqueue_all(self, key, payloads: list, *, batchable: bool = True) -> list[asyncio.Future]:
        futures = []
        try:
            for payload in payloads:
                futures.append(self.batcher.enqueue(key, payload, batchable=batchable))
        except QueueFull:
            for future in futures:
                future.cancel()
            raise
        return futures
