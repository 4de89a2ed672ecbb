"""One prediction-log row per request, whatever became of it.

`RecordRequests` is an ASGI middleware outside everything that can refuse a request (API keys,
body size, routing, validation, the handlers), so every request to a model route is logged,
answered or not, and so is every request refused or failed anywhere else (an unknown route, a
wrong method, a bad key); probes and the API description (health, ready, metrics, docs) are not.
It gives each request a `RequestRecord` the handlers fill in (model version, redacted input,
output, tokens...) and writes it when the response is complete, with the status sent (or the
one the handler set: 499 for a client that left) and an outcome:

  answered      2xx (from the model or the cache: see `cached`)
  blocked       refused by the input guard (`blocked_reason` says why)
  refused       any other 4xx: schema, limits, unknown model or route, API key, body size
  over_capacity 429: the queue was full
  abandoned     499: the client closed the connection before the answer; its work was dropped
  unavailable   503: the model is not loaded (yet)
  failed        5xx: a fault of the server
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from tunelab.serve.auth import OPEN_PATHS
from tunelab.serve.errors import CLIENT_CLOSED, printable

CHAT, COMPLETIONS, CLASSIFY, PREDICT = "/v1/chat/completions", "/v1/completions", "/v1/classify", "/predict"
MODEL_ROUTES = (CHAT, COMPLETIONS, CLASSIFY, PREDICT)
ID_PREFIX = {CHAT: "chatcmpl", COMPLETIONS: "cmpl"}
SCOPE_KEY = "tunelab.record"


def outcome(status: int, blocked_reason: str | None = None) -> str:
    if status < 400:
        return "answered"
    if blocked_reason:
        return "blocked"
    return {429: "over_capacity", CLIENT_CLOSED: "abandoned", 503: "unavailable"}.get(
        status, "failed" if status >= 500 else "refused")


@dataclass
class RequestRecord:
    """What the log keeps of one request; the handlers fill `fields` (predlog COLUMNS)."""
    endpoint: str
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    ts: float = field(default_factory=time.time)
    fields: dict[str, Any] = field(default_factory=dict)
    status: int | None = None  # set by a handler to override the status sent (499: the client left)
    after_sent: list = field(default_factory=list)  # called once a 2xx answer's last byte is sent (the shadow)

    @classmethod
    def new(cls, endpoint: str) -> "RequestRecord":
        return cls(endpoint, f"{ID_PREFIX.get(endpoint, 'req')}-{uuid.uuid4().hex}")

    def update(self, **values: Any) -> None:
        self.fields.update(values)

    def row(self, status: int) -> dict[str, Any]:
        return {**self.fields, "ts": self.ts, "request_id": self.request_id, "endpoint": self.endpoint,
                "status": status, "outcome": outcome(status, self.fields.get("blocked_reason")),
                "latency_ms": (time.perf_counter() - self.started) * 1000}


def record_of(scope) -> RequestRecord:
    """The record of the request being handled (RecordRequests put it in the ASGI scope)."""
    return scope[SCOPE_KEY]


class RecordRequests:
    """ASGI middleware: a RequestRecord per request, written to `log_holder.prediction_log` (an
    attribute, so the log can be opened when the app starts) when the request is over."""

    def __init__(self, app, log_holder):
        self.app = app
        self.log_holder = log_holder

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        path = printable(scope["path"])[:200]
        record = RequestRecord.new(path)
        scope[SCOPE_KEY] = record
        sent = {"status": None, "written": False}

        def write(status: int) -> None:
            if not sent["written"] and (path in MODEL_ROUTES or status >= 400):
                self.write(record, status)
            sent["written"] = True

        async def send_and_note(message) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                write(record.status or sent["status"])  # before the client has its answer, so a client
                # that reads the log right after the answer finds the request in it
                await send(message)
                if (record.status or sent["status"]) < 400:
                    for callback in record.after_sent:
                        callback()
                return
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception:
            sent["status"] = sent["status"] or 500
            raise
        finally:
            write(record.status or sent["status"] or CLIENT_CLOSED)

    def write(self, record: RequestRecord, status: int) -> None:
        prediction_log = self.log_holder.prediction_log
        if prediction_log is not None:
            prediction_log.log(record.row(status))
