"""What each model endpoint does with a validated request: pick the model or adapter, enforce
the limits, answer from the cache, pass the input guard, queue the work for the batcher, shape
the OpenAI response, and log the request (redacted) with its outcome."""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from tunelab.serve import streaming
from tunelab.serve.backends import GenerationJob
from tunelab.serve.batching import QueueFull
from tunelab.serve.cache import ResponseCache, request_key
from tunelab.serve.schemas import (AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionRequest, Classification,
                                   ClassifyRequest, Completion, CompletionChoice, CompletionRequest, Usage)
from tunelab.serve.service import LiveModel, ModelService, ServeSettings

GREEDY_BELOW = 1e-5
CHAT, COMPLETIONS, CLASSIFY, PREDICT = "/v1/chat/completions", "/v1/completions", "/v1/classify", "/predict"


class ApiError(Exception):
    """An answer in the OpenAI error shape with a 4xx/5xx status."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = headers or {}


@dataclass
class Outcome:
    """What the log and the cache keep of an answered request."""
    output: Any
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    label: str | None = None
    confidence: float | None = None
    probabilities: dict[str, float] | None = None


class Handlers:
    def __init__(self, service: ModelService, settings: ServeSettings, metrics, guard, prediction_log,
                 cache: ResponseCache):
        self.service, self.settings, self.metrics = service, settings, metrics
        self.guard, self.prediction_log, self.cache = guard, prediction_log, cache

    # the shared steps

    def resolve(self, model: str | None) -> tuple[LiveModel, str | None, str | None]:
        """(live model, PEFT adapter name, adapter id) for the model id a request names."""
        live = self.service.live
        if not self.service.ready or live is None:
            why = f"the model failed to load ({self.service.load_error})" if self.service.load_error else \
                "the model is still loading"
            raise ApiError(503, f"{why}; retry shortly", type="server_error", code="model_not_ready",
                           headers={"Retry-After": "1"})
        if model in (None, "", self.service.served_name):
            return live, None, None
        adapters = getattr(live.backend, "adapters", {})
        if model in adapters:
            return live, adapters[model], model
        known = ", ".join([self.service.served_name, *adapters])
        raise ApiError(404, f"the model '{model}' does not exist; served here: {known}", code="model_not_found",
                       param="model")

    def check_max_tokens(self, requested: int | None) -> None:
        """The server's ceiling on max_tokens, for every request (a classifier's too: the schema
        states the ceiling, so the answer must not depend on the model behind it)."""
        limit = self.settings.max_tokens_limit
        if requested is not None and requested > limit:
            self.metrics.guard_blocks.labels("max_tokens").inc()
            raise ApiError(400, f"max_tokens is {requested}, above this server's limit of {limit}",
                           code="max_tokens_exceeded", param="max_tokens")

    def max_new_tokens(self, requested: int | None, prompt_tokens: int, context: int | None) -> int:
        limit = self.settings.max_tokens_limit
        if context is not None:
            room = context - prompt_tokens
            if room <= 0 or (requested is not None and requested > room):
                raise ApiError(400, f"the prompt has {prompt_tokens} tokens and max_tokens asks for "
                                    f"{requested or 1} more, beyond the model's context of {context} tokens",
                               code="context_length_exceeded", param="messages")
            if requested is None:
                return min(self.settings.default_max_tokens, limit, room)
        return requested if requested is not None else min(self.settings.default_max_tokens, limit)

    def temperature(self, live: LiveModel, requested: float | None) -> float:
        value = requested if requested is not None else getattr(live.backend, "default_temperature", 0.0)
        # logits divided by a near-zero temperature overflow to inf/nan; that close to 0 is greedy
        # anyway (vLLM draws the same line)
        return 0.0 if value < GREEDY_BELOW else value

    def record(self, endpoint: str, live: LiveModel, adapter_id: str | None, redacted_input: Any) -> dict[str, Any]:
        return {"ts": time.time(), "request_id": new_id(endpoint), "endpoint": endpoint,
                "model_version": live.version, "adapter": adapter_id, "input": redacted_input, "cached": 0}

    def log(self, record: dict[str, Any], status: int, started: float, outcome: Outcome | None = None,
            blocked: str | None = None) -> None:
        if self.prediction_log is None:
            return
        record = {**record, "status": status, "latency_ms": (time.perf_counter() - started) * 1000,
                  "blocked_reason": blocked}
        if outcome is not None:
            record.update(output=outcome.output, prompt_tokens=outcome.prompt_tokens,
                          completion_tokens=outcome.completion_tokens, label=outcome.label,
                          confidence=outcome.confidence, probabilities=outcome.probabilities)
        self.prediction_log.log(record)

    def redact_output(self, text: str) -> str:
        return self.guard.detector.redact(text)[0] if self.guard.redact_pii else text

    def refuse(self, record: dict[str, Any], started: float, verdict) -> None:
        reason = verdict.category or "flagged"
        self.metrics.guard_blocks.labels(reason).inc()
        self.log(record, 400, started, blocked=reason)
        raise ApiError(400, verdict.reason or "the input guard refused this request", code="content_blocked")

    def cached(self, endpoint: str, live: LiveModel, body: dict[str, Any], started: float):
        """The stored answer to an identical deterministic request, with a fresh id, or None."""
        key = request_key(endpoint, live.version, body)
        hit = self.cache.get(key)
        if hit is None:
            self.metrics.cache_misses.inc()
            return key, None
        self.metrics.cache_hits.inc()
        response, record, outcome = hit
        record = {**record, "ts": time.time(), "request_id": new_id(endpoint), "cached": 1}
        self.log(record, 200, started, outcome)
        return key, response.model_copy(update={"id": record["request_id"], "created": int(time.time())})

    async def run_jobs(self, live: LiveModel, jobs: list[GenerationJob], record: dict[str, Any], started: float):
        try:
            futures = [self.service.enqueue_generation(live, job, batchable=job.greedy) for job in jobs]
        except QueueFull:
            self.log(record, 429, started)
            raise ApiError(429, "the server is at capacity; retry shortly", type="rate_limit_error",
                           code="queue_full", headers={"Retry-After": "1"}) from None
        results = await asyncio.gather(*futures)
        self.metrics.generated_tokens.inc(sum(sum(r.completion_tokens) for r in results))
        self.metrics.first_token.observe(time.perf_counter() - started)
        return results

    # endpoints

    async def chat(self, request: ChatCompletionRequest):
        started = time.perf_counter()
        live, adapter, adapter_id = self.resolve(request.model)
        requested = request.requested_max_tokens()
        self.check_max_tokens(requested)
        temperature = self.temperature(live, request.temperature)
        body = request.model_dump(mode="json")
        key = None
        if temperature == 0 and not request.stream and self.cache.enabled:
            key, hit = self.cached(CHAT, live, body, started)
            if hit is not None:
                return hit
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in request.messages]
        verdict, redacted = self.guard.check_messages(messages)
        record = self.record(CHAT, live, adapter_id, json.dumps(redacted, ensure_ascii=False))
        if not verdict.allowed:
            self.refuse(record, started, verdict)
        make = streaming.chat_chunk(record["request_id"], request.model, live.version)
        if live.backend.task == "classification":
            user_turns = [m["content"] for m in redacted if m["role"] == "user"]
            outcome = await self.classified(live, user_turns[-1] if user_turns else redacted[-1]["content"], record,
                                            started)
            choices = [ChatChoice(index=i, message=AssistantMessage(content=outcome.label), finish_reason="stop")
                       for i in range(request.n)]
            texts, reasons = [outcome.label] * request.n, ["stop"] * request.n
        else:
            try:
                prompt = live.backend.render_chat(redacted)
            except Exception as exc:  # noqa: BLE001 (the chat template refused these messages: a client error)
                self.log(record, 400, started)
                raise ApiError(400, f"the model's chat template cannot render these messages ({exc})",
                               param="messages") from None
            job = self.generation_job(live, prompt, False, requested, temperature, request, adapter, record, started)
            if request.stream and request.n == 1 and live.backend.streams:
                return await self.stream(live, job, record, started, make, request)
            (result,) = await self.run_jobs(live, [job], record, started)
            texts, reasons = result.texts, result.finish_reasons
            outcome = Outcome(self.joined(texts), result.prompt_tokens, sum(result.completion_tokens))
            choices = [ChatChoice(index=i, message=AssistantMessage(content=t), finish_reason=r)
                       for i, (t, r) in enumerate(zip(texts, reasons))]
        response = ChatCompletion(id=record["request_id"], created=int(time.time()), model=request.model,
                                  system_fingerprint=live.version, choices=choices, usage=usage(outcome))
        return self.answered(response, record, started, outcome, key, make, texts, reasons, request)

    async def completion(self, request: CompletionRequest):
        started = time.perf_counter()
        live, adapter, adapter_id = self.resolve(request.model)
        self.check_max_tokens(request.max_tokens)
        temperature = self.temperature(live, request.temperature)
        body = request.model_dump(mode="json")
        key = None
        if temperature == 0 and not request.stream and self.cache.enabled:
            key, hit = self.cached(COMPLETIONS, live, body, started)
            if hit is not None:
                return hit
        verdicts = [self.guard.check(prompt) for prompt in request.prompts()]
        prompts = [v.text for v in verdicts]
        record = self.record(COMPLETIONS, live, adapter_id,
                             prompts[0] if isinstance(request.prompt, str) else json.dumps(prompts, ensure_ascii=False))
        for verdict in verdicts:
            if not verdict.allowed:
                self.refuse(record, started, verdict)
        make = streaming.completion_chunk(record["request_id"], request.model, live.version)
        if live.backend.task == "classification":
            outcomes = [await self.classified(live, p, record, started) for p in prompts]
            texts = [o.label for o in outcomes for _ in range(request.n)]
            reasons = ["stop"] * len(texts)
            outcome = Outcome(self.joined(texts), sum(o.prompt_tokens for o in outcomes), 0)
        else:
            jobs = [self.generation_job(live, p, True, request.max_tokens, temperature, request, adapter, record,
                                        started) for p in prompts]
            if request.stream and request.n == 1 and len(jobs) == 1 and live.backend.streams:
                return await self.stream(live, jobs[0], record, started, make, request)
            results = await self.run_jobs(live, jobs, record, started)
            texts = [t for r in results for t in r.texts]
            reasons = [f for r in results for f in r.finish_reasons]
            outcome = Outcome(self.joined(texts), sum(r.prompt_tokens for r in results),
                              sum(sum(r.completion_tokens) for r in results))
        choices = [CompletionChoice(index=i, text=t, finish_reason=r) for i, (t, r) in enumerate(zip(texts, reasons))]
        response = Completion(id=record["request_id"], created=int(time.time()), model=request.model,
                              system_fingerprint=live.version, choices=choices, usage=usage(outcome))
        return self.answered(response, record, started, outcome, key, make, texts, reasons, request)

    def answered(self, response, record, started, outcome, key, make, texts, reasons, request):
        """Log a generated answer, cache it when deterministic, and send it whole or as one stream."""
        self.log(record, 200, started, outcome)
        if key is not None:
            self.cache.put(key, (response, record, outcome))
        if request.stream:
            return streaming.whole(make, texts, reasons, response.usage, request)
        return response

    async def classify(self, request: ClassifyRequest, endpoint: str) -> Classification:
        started = time.perf_counter()
        live, _, _ = self.resolve(request.model)
        if live.backend.task != "classification":
            # 404: the route exists, but no classifier is served here to answer it
            raise ApiError(404, "the served model is generative, not a classifier; use /v1/chat/completions or "
                                "/v1/completions", code="not_a_classifier")
        body = request.model_dump(mode="json")
        key, hit = self.cached(endpoint, live, body, started) if self.cache.enabled else (None, None)
        if hit is not None:
            return hit
        verdict = self.guard.check(request.text)
        record = self.record(endpoint, live, None, verdict.text)
        if not verdict.allowed:
            self.refuse(record, started, verdict)
        outcome = await self.classified(live, verdict.text, record, started)
        response = Classification(id=record["request_id"], created=int(time.time()),
                                  model=request.model or self.service.served_name, model_version=live.version,
                                  label=outcome.label, confidence=outcome.confidence,
                                  probabilities=outcome.probabilities)
        self.log(record, 200, started, outcome)
        if key is not None:
            self.cache.put(key, (response, record, outcome))
        return response

    # helpers of the endpoints

    def generation_job(self, live, prompt, special_tokens, requested, temperature, request, adapter, record, started):
        prompt_ids = live.backend.encode(prompt, special_tokens=special_tokens)
        try:
            if not prompt_ids:
                raise ApiError(400, "the prompt is empty and the model has no start-of-text token to begin from",
                               code="empty_prompt", param="prompt")
            max_tokens = self.max_new_tokens(requested, len(prompt_ids), live.backend.context_length)
        except ApiError as error:
            self.log(record, error.status, started)
            raise
        return GenerationJob(prompt_ids=prompt_ids, max_tokens=max_tokens, temperature=temperature,
                             top_p=request.top_p or 1.0, stop=request.stop_list(), seed=request.seed, n=request.n,
                             adapter=adapter)

    async def classified(self, live: LiveModel, text: str, record, started) -> Outcome:
        try:
            label, probabilities = await self.service.classify(live, text)
        except QueueFull:
            self.log(record, 429, started)
            raise ApiError(429, "the server is at capacity; retry shortly", type="rate_limit_error",
                           code="queue_full", headers={"Retry-After": "1"}) from None
        return Outcome(label, len(live.backend.encode(text)), 0, label, probabilities[label], probabilities)

    def joined(self, texts: list[str]) -> str:
        """The log's output column: the answer, or a JSON list when there are several."""
        redacted = [self.redact_output(t) for t in texts]
        return redacted[0] if len(redacted) == 1 else json.dumps(redacted, ensure_ascii=False)

    async def stream(self, live, job, record, started, make, request):
        return await streaming.stream_generation(self, live, job, record, started, make, request)


def usage(outcome: Outcome) -> Usage:
    prompt, completion = outcome.prompt_tokens or 0, outcome.completion_tokens or 0
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def new_id(endpoint: str) -> str:
    prefix = {CHAT: "chatcmpl", COMPLETIONS: "cmpl"}.get(endpoint, "cls")
    return f"{prefix}-{uuid.uuid4().hex}"
