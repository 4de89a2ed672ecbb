"""Server-sent events in the OpenAI streaming shape: `data: {chunk}` lines, a last chunk with the
finish reason (and, when asked, one with the usage), then `data: [DONE]`.

Text is sent as the model produces it, except a tail that could be the start of a stop string:
that is held back until it is clear, so a stop string never reaches the client. This module
knows events, not requests: the handlers give it the job, its future and two callbacks.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from starlette.responses import StreamingResponse

from tunelab.serve.backend import first_stop
from tunelab.serve.errors import CLIENT_CLOSED

Chunk = Callable[..., dict[str, Any]]


def sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


def usage(prompt_tokens: int | None, completion_tokens: int | None) -> dict[str, int]:
    prompt, completion = prompt_tokens or 0, completion_tokens or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_chunk(request_id: str, model: str, version: str) -> Chunk:
    created = int(time.time())

    def make(index: int = 0, text: str | None = None, finish: str | None = None, role: bool = False,
             usage: dict | None = None, with_usage: bool = False, choices: bool = True,
             logprobs: dict | None = None) -> dict[str, Any]:
        delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text is not None else {})
        chunk = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model,
                 "system_fingerprint": version,
                 "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": logprobs}]
                 if choices else []}
        if with_usage:
            chunk["usage"] = usage
        return chunk

    return make


def completion_chunk(request_id: str, model: str, version: str) -> Chunk:
    created = int(time.time())

    def make(index: int = 0, text: str | None = None, finish: str | None = None, role: bool = False,
             usage: dict | None = None, with_usage: bool = False, choices: bool = True,
             logprobs: dict | None = None) -> dict[str, Any]:
        chunk = {"id": request_id, "object": "text_completion", "created": created, "model": model,
                 "system_fingerprint": version,
                 "choices": [{"index": index, "text": text or "", "finish_reason": finish, "logprobs": logprobs}]
                 if choices else []}
        if with_usage:
            chunk["usage"] = usage
        return chunk

    return make


def event_stream(events) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def whole(make: Chunk, texts: list[str], reasons: list[str], total: dict[str, int], with_usage: bool,
          logprobs: list[dict | None] | None = None) -> StreamingResponse:
    """An answer computed in one go (several choices, logprobs, a classification), as a stream."""
    logprobs = logprobs or [None] * len(texts)

    async def events():
        for index, (text, reason, scores) in enumerate(zip(texts, reasons, logprobs)):
            yield sse(make(index, role=True, with_usage=with_usage))
            yield sse(make(index, text=text, with_usage=with_usage, logprobs=scores))
            yield sse(make(index, finish=reason, with_usage=with_usage))
        if with_usage:
            yield sse(make(usage=total, with_usage=True, choices=False))
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


def relay(job, future, make: Chunk, *, with_usage: bool, on_first_text: Callable[[], None],
          on_end: Callable[[int, Any], None]) -> StreamingResponse:
    """Relay one queued generation's text as it comes (`job.streamer`), then its finish reason.
    `on_end(status, generation or None)` is called once: 200, 500 (the error goes out as an
    event: the headers are sent), or 499 when the client left first; leaving cancels the job
    (dropped from the queue, or stopped at its next token)."""

    async def events():
        sent, received, result, status = "", "", None, CLIENT_CLOSED
        try:
            yield sse(make(role=True, with_usage=with_usage))
            async for piece in job.streamer:
                received += piece
                cut = first_stop(received, job.stop)
                ready = received[:cut] if cut is not None else received[:len(received) - held_back(received, job.stop)]
                if len(ready) > len(sent):
                    if not sent:
                        on_first_text()
                    yield sse(make(text=ready[len(sent):], with_usage=with_usage))
                    sent = ready
            result = await future
            final = result.texts[0]
            if final.startswith(sent) and len(final) > len(sent):  # the held-back tail that was no stop string
                yield sse(make(text=final[len(sent):], with_usage=with_usage))
            yield sse(make(finish=result.finish_reasons[0], with_usage=with_usage))
            if with_usage:
                yield sse(make(usage=usage(result.prompt_tokens, result.completion_tokens[0]), with_usage=True,
                               choices=False))
            status = 200
        except Exception as exc:  # noqa: BLE001 (headers are sent: the error can only travel as an event)
            status, result = 500, None
            yield sse({"error": {"message": f"generation failed: {exc}", "type": "server_error", "param": None,
                                 "code": None}})
        finally:
            job.cancelled.set()  # the client went away (or we are done): stop generating
            future.cancel()  # still queued: the batcher skips it
            on_end(status, result)
        yield sse("[DONE]")

    return event_stream(events())
