"""Server-sent events in the OpenAI streaming shape: `data: {chunk}` lines, a last chunk with the
finish reason (and, when asked, one with the usage), then `data: [DONE]`.

Text is sent as the model produces it, except a tail that could be the start of a stop string:
that is held back until it is clear, so a stop string never reaches the client.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable

from starlette.responses import StreamingResponse

from tunelab.serve.backends import first_stop

Chunk = Callable[..., dict[str, Any]]


def sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


def chat_chunk(request_id: str, model: str, version: str) -> Chunk:
    created = int(time.time())

    def make(index: int = 0, text: str | None = None, finish: str | None = None, role: bool = False,
             usage: dict | None = None, with_usage: bool = False, choices: bool = True) -> dict[str, Any]:
        delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text is not None else {})
        chunk = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model,
                 "system_fingerprint": version,
                 "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}]
                 if choices else []}
        if with_usage:
            chunk["usage"] = usage
        return chunk

    return make


def completion_chunk(request_id: str, model: str, version: str) -> Chunk:
    created = int(time.time())

    def make(index: int = 0, text: str | None = None, finish: str | None = None, role: bool = False,
             usage: dict | None = None, with_usage: bool = False, choices: bool = True) -> dict[str, Any]:
        chunk = {"id": request_id, "object": "text_completion", "created": created, "model": model,
                 "system_fingerprint": version,
                 "choices": [{"index": index, "text": text or "", "finish_reason": finish, "logprobs": None}]
                 if choices else []}
        if with_usage:
            chunk["usage"] = usage
        return chunk

    return make


def wants_usage(request) -> bool:
    return bool(request.stream_options and request.stream_options.include_usage)


def event_stream(events) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def whole(make: Chunk, texts: list[str], reasons: list[str], usage, request) -> StreamingResponse:
    """An answer computed in one go (several choices, a classification), sent as a stream."""
    with_usage = wants_usage(request)

    async def events():
        for index, (text, reason) in enumerate(zip(texts, reasons)):
            yield sse(make(index, role=True, with_usage=with_usage))
            yield sse(make(index, text=text, with_usage=with_usage))
            yield sse(make(index, finish=reason, with_usage=with_usage))
        if with_usage:
            yield sse(make(usage=usage.model_dump(), with_usage=True, choices=False))
        yield sse("[DONE]")

    return event_stream(events())


def held_back(text: str, stops: list[str]) -> int:
    """Length of the longest tail of text that is a proper prefix of a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


async def stream_generation(handlers, live, job, record, started, make: Chunk, request) -> StreamingResponse:
    """Queue one generation with a streamer and relay its text as it comes (QueueFull is raised
    here, before the response starts, so the client gets a plain 429)."""
    from tunelab.serve.handlers import ApiError, Outcome, usage
    from tunelab.serve.batching import QueueFull
    job.streamer = live.backend.streamer()
    job.cancelled = threading.Event()
    try:
        future = handlers.service.enqueue_generation(live, job, batchable=False)
    except QueueFull:
        handlers.log(record, 429, started)
        raise ApiError(429, "the server is at capacity; retry shortly", type="rate_limit_error", code="queue_full",
                       headers={"Retry-After": "1"}) from None
    with_usage = wants_usage(request)
    metrics = handlers.metrics

    async def events():
        sent, received, first_sent, outcome = "", "", False, None
        status = 499  # unless it finishes or fails: the client closed the connection first
        try:
            yield sse(make(role=True, with_usage=with_usage))
            async for piece in job.streamer:
                received += piece
                cut = first_stop(received, job.stop)
                ready = received[:cut] if cut is not None else received[:len(received) - held_back(received, job.stop)]
                if len(ready) > len(sent):
                    if not first_sent:
                        metrics.first_token.observe(time.perf_counter() - started)
                        first_sent = True
                    yield sse(make(text=ready[len(sent):], with_usage=with_usage))
                    sent = ready
            result = (await future)
            final = result.texts[0]
            if final.startswith(sent) and len(final) > len(sent):  # the held-back tail that was no stop string
                yield sse(make(text=final[len(sent):], with_usage=with_usage))
            outcome = Outcome(handlers.redact_output(final), result.prompt_tokens, result.completion_tokens[0])
            metrics.generated_tokens.inc(outcome.completion_tokens)
            yield sse(make(finish=result.finish_reasons[0], with_usage=with_usage))
            if with_usage:
                yield sse(make(usage=usage(outcome).model_dump(), with_usage=True, choices=False))
            status = 200
        except Exception as exc:  # noqa: BLE001 (headers are sent: the error can only travel as an event)
            status = 500
            yield sse({"error": {"message": f"generation failed: {exc}", "type": "server_error", "param": None,
                                 "code": None}})
        finally:
            job.cancelled.set()  # the client went away (or we are done): stop generating
            handlers.log(record, status, started, outcome)
        yield sse("[DONE]")

    return event_stream(events())
