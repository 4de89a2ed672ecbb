"""Prometheus metrics of one server (prometheus-client, a CollectorRegistry per app so that two
apps in one process, as in the tests, never share counters)."""
from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ServerMetrics:
    def __init__(self, max_batch_size: int):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tunelab_requests", "HTTP requests answered.", ["endpoint", "status"], registry=r)
        self.latency = Histogram("tunelab_request_latency_seconds", "Time from request to the last byte of "
                                 "the response.", ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.first_token = Histogram("tunelab_time_to_first_token_seconds", "Time from request to the first "
                                     "generated text sent (the whole answer, when not streaming).",
                                     buckets=LATENCY_BUCKETS, registry=r)
        self.generated_tokens = Counter("tunelab_generated_tokens", "Tokens generated.", registry=r)
        self.batch_size = Histogram("tunelab_batch_size", "Requests per model call.",
                                    buckets=_batch_buckets(max_batch_size), registry=r)
        self.queue_depth = Gauge("tunelab_queue_depth", "Requests waiting for the model.", registry=r)
        self.cache_hits = Counter("tunelab_cache_hits", "Requests answered from the response cache.", registry=r)
        self.cache_misses = Counter("tunelab_cache_misses", "Cacheable requests the cache did not hold.",
                                    registry=r)
        self.guard_blocks = Counter("tunelab_guard_blocks", "Requests refused by the input guard.", ["reason"],
                                    registry=r)
        self.model_swaps = Counter("tunelab_model_swaps", "Live model versions swapped in without a restart.",
                                   registry=r)
        self.swaps_refused = Counter("tunelab_model_swaps_refused", "Live versions not swapped in: another task, "
                                     "or a base the registered adapters do not fit.", ["reason"], registry=r)
        # the model pool (labels: kind = adapter or model); a first request for an unloaded one
        # waits for its load, so tunelab_model_load_seconds is that request's extra latency
        self.model_loads = Counter("tunelab_model_loads", "Registered adapters and models loaded.", ["kind"],
                                   registry=r)
        self.model_evictions = Counter("tunelab_model_evictions", "Loaded adapters and models unloaded to make "
                                       "room for another (least recently used first).", ["kind"], registry=r)
        self.model_load_seconds = Histogram("tunelab_model_load_seconds", "Time to load a registered adapter or "
                                            "model.", ["kind"], buckets=LATENCY_BUCKETS, registry=r)
        self.model_load_failures = Counter("tunelab_model_load_failures", "Registered adapters and models that "
                                           "failed to load.", ["kind"], registry=r)
        self.models_loaded = Gauge("tunelab_models_loaded", "Registered adapters and models loaded now.", ["kind"],
                                   registry=r)
        self.feedback = Counter("tunelab_feedback", "Feedback records stored (POST /v1/feedback), by what they "
                                "carry (label, corrected, rating, preferred, comment).", ["field"], registry=r)
        self.canary_requests = Counter("tunelab_canary_requests", "Requests answered by the canary version.",
                                       registry=r)
        self.shadow_requests = Counter("tunelab_shadow_requests", "Copies of answered requests sent to the shadow "
                                       "version, by outcome (answered, failed, preempted: stopped when live work "
                                       "arrived, dropped: its queue was full).", ["outcome"], registry=r)
        self.abandoned = Counter("tunelab_abandoned_requests", "Requests whose client left before the answer; "
                                 "their work was dropped.", registry=r)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _batch_buckets(max_batch_size: int) -> tuple[float, ...]:
    sizes, size = [], 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    return tuple(sizes + [max_batch_size])


class RequestMetricsMiddleware:
    """Counts every HTTP request by route and status and times it to the last body byte (so a
    streamed answer is timed to its end, not to its headers)."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_and_measure(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self._observe(scope, status["code"], started)

        try:
            await self.app(scope, receive, send_and_measure)
        except Exception:
            self._observe(scope, 500, started)
            raise

    def _observe(self, scope: Scope, status: int, started: float) -> None:
        endpoint = route_template(scope)
        if endpoint is None:  # FastAPI's own routes (/openapi.json, /docs) are plain Starlette routes
            known = {getattr(route, "path", None) for route in getattr(scope.get("app"), "routes", ())}
            endpoint = scope["path"] if scope["path"] in known else "unmatched"  # bounded label values
        self.metrics.requests.labels(endpoint, str(status)).inc()
        self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)


def route_template(scope: Scope) -> str | None:
    return getattr(scope.get("route"), "path", None)
