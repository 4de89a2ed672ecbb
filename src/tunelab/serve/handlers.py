"""What each model endpoint does with a validated request. One prologue for all of them
(`begin`): pick the model (tunelab.serve.routing: the served one, a registered adapter, or a
registered model of its own, loaded first if it is not) and the task, enforce the limits, settle the temperature,
answer from the cache; then the input guard, the work queued for the batcher (dropped when the
client leaves), the OpenAI response, and the request's record for the prediction log (written
by tunelab.serve.recording whatever the outcome)."""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from tunelab.config import ServeConfig
from tunelab.serve import routing, streaming
from tunelab.serve.backend import CLASSIFICATION, Generation, GenerationJob
from tunelab.serve.batching import QueueFull
from tunelab.serve.cache import ResponseCache, request_key
from tunelab.serve.errors import ApiError, ClientLeft, queue_full
from tunelab.serve.guard import Guard
from tunelab.serve.logprobs import chat_logprobs, completion_logprobs, label_logprobs
from tunelab.serve.metrics import ServerMetrics
from tunelab.serve.recording import CHAT, COMPLETIONS, RequestRecord, record_of
from tunelab.serve.schemas import (AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionRequest, Classification,
                                   ClassifyRequest, Completion, CompletionChoice, CompletionRequest, Usage)
from tunelab.serve.pool import ADAPTER, Registration
from tunelab.serve.service import LiveModel, ModelService

GREEDY_BELOW = 1e-5


@dataclass
class Call:
    """One request on its way through a handler: what `begin` settled about it."""
    endpoint: str
    request: Any
    http: Request
    record: RequestRecord
    live: LiveModel  # the model that answers (the served one, or a registered model's own)
    registration: Registration | None  # the registered adapter or model the request named; None: the served model
    prefix: str  # the task's input prefix
    temperature: float = 0.0
    cache_key: str | None = None


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
    def __init__(self, service: ModelService, cfg: ServeConfig, metrics: ServerMetrics, guard: Guard,
                 cache: ResponseCache):
        self.service, self.cfg, self.metrics, self.guard, self.cache = service, cfg, metrics, guard, cache

    # the prologue every model endpoint shares

    async def begin(self, endpoint: str, request, http: Request, *, cacheable: bool) -> tuple[Call, Any]:
        """(the call, the cached answer or None): model, adapter and task resolved, limits
        checked, temperature settled, the cache asked."""
        record = record_of(http.scope)
        live, registration, task = await routing.resolve(self.service, request.model, getattr(request, "task", None))
        role = "live"
        if registration is None:  # the served model itself: the canary may answer instead (tunelab.serve.rollout)
            canary = self.service.rollout.canary_for(request, http.headers)
            live, role = (canary, "canary") if canary is not None else (live, role)
        record.update(model_version=live.version, adapter=registration.model_id if registration else None, task=task,
                      role=role)
        named = registration if registration is not None and registration.kind == ADAPTER else live
        call = Call(endpoint, request, http, record, live, registration,
                    routing.task_prefix(named.prefixes, named.tasks, task, request.model or self.service.served_name))
        for field, value in getattr(request, "max_tokens_fields", dict)().items():
            self.check_max_tokens(field, value)
        if hasattr(request, "temperature"):
            value = request.temperature if request.temperature is not None else live.backend.default_temperature
            # logits divided by a near-zero temperature overflow to inf/nan; that close to 0 is greedy
            # anyway (vLLM draws the same line)
            call.temperature = 0.0 if value < GREEDY_BELOW else value
        if cacheable and call.temperature == 0 and not getattr(request, "stream", False) and self.cache.enabled:
            version = live.version + (f"/{registration.cache_tag}" if registration else "")
            call.cache_key = request_key(endpoint, version, request.model_dump(mode="json"))
            hit = self.cache.get(call.cache_key)
            self.metrics.cache_hits.inc() if hit is not None else self.metrics.cache_misses.inc()
            if hit is not None:
                response, fields = hit
                record.update(**{**fields, "cached": 1})
                return call, response.model_copy(update={"id": record.request_id, "created": int(time.time())})
        return call, None

    def check_max_tokens(self, field: str, requested: int | None) -> None:
        """The server's ceiling on max_tokens and max_completion_tokens alike, for every request
        (a classifier's too: the schema states it, so the answer must not depend on the model)."""
        limit = self.cfg.guard.max_tokens
        if requested is not None and requested > limit:
            self.metrics.guard_blocks.labels("max_tokens").inc()
            raise ApiError(400, f"{field} is {requested}, above this server's limit of {limit}",
                           code="max_tokens_exceeded", param=field)

    async def guarded(self, check, *args):
        """The guard's verdict; off the event loop when a learned classifier (a model forward
        pass) is part of it."""
        if self.guard.classifier is None:
            return check(*args)
        return await asyncio.to_thread(check, *args)

    def screened(self, call: Call, verdict, logged_input: str) -> None:
        """Record the redacted input; refuse what the guard flagged."""
        call.record.update(input=logged_input)
        if not verdict.allowed:
            reason = verdict.category or "flagged"
            self.metrics.guard_blocks.labels(reason).inc()
            call.record.update(blocked_reason=reason)
            raise ApiError(400, verdict.reason or "the input guard refused this request", code="content_blocked")

    # endpoints

    async def chat(self, request: ChatCompletionRequest, http: Request):
        call, hit = await self.begin(CHAT, request, http, cacheable=True)
        if hit is not None:
            return hit
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in request.messages]
        verdict, redacted = await self.guarded(self.guard.check_messages, messages)
        self.screened(call, verdict, json.dumps(redacted, ensure_ascii=False))
        top = request.top_logprobs_wanted()
        if call.live.backend.task == CLASSIFICATION:
            user_turns = [m["content"] for m in redacted if m["role"] == "user"]
            (outcome,) = await self.classified(call, [call.prefix + (user_turns[-1] if user_turns else
                                                                     redacted[-1]["content"])])
            texts, reasons = [outcome.label] * request.n, ["stop"] * request.n
            scores = [chat_logprobs(label_logprobs(outcome.label, outcome.probabilities, top),
                                    list(outcome.probabilities).__getitem__)] * request.n if top is not None else None
        else:
            from tunelab.train.data import with_prefix  # as training put it: before the first user turn
            if call.prefix and any(m["role"] == "user" for m in redacted):
                redacted = with_prefix({"messages": redacted}, call.prefix)["messages"]
            try:
                prompt = call.live.backend.render_chat(redacted)
            except Exception as exc:  # noqa: BLE001 (the chat template refused these messages: a client error)
                raise ApiError(400, f"the model's chat template cannot render these messages ({exc})",
                               param="messages") from None
            job = self.job(call, call.live.backend.encode(prompt, special_tokens=False), "messages", top)
            if request.stream and request.n == 1 and call.live.backend.streams and top is None:
                return self.stream(call, job, streaming.chat_chunk)
            (result,) = await self.generated(call, [job])
            texts, reasons = result.texts, result.finish_reasons
            outcome = Outcome(self.joined(texts), result.prompt_tokens, sum(result.completion_tokens))
            scores = [chat_logprobs(tokens, call.live.backend.token_text) for tokens in result.logprobs] \
                if top is not None else None
        choices = [ChatChoice(index=i, message=AssistantMessage(content=t), finish_reason=r,
                              logprobs=scores[i] if scores else None) for i, (t, r) in enumerate(zip(texts, reasons))]
        response = ChatCompletion(id=call.record.request_id, created=int(time.time()), model=request.model,
                                  system_fingerprint=call.live.version, choices=choices, usage=usage(outcome))
        return self.answered(call, response, outcome, streaming.chat_chunk, texts, reasons, scores)

    async def completion(self, request: CompletionRequest, http: Request):
        call, hit = await self.begin(COMPLETIONS, request, http, cacheable=True)
        if hit is not None:
            return hit
        backend, top = call.live.backend, request.top_logprobs_wanted()
        prompts = request.prompts()
        for ids in (p for p in prompts if not isinstance(p, str)):
            if max(ids) >= backend.vocab_size:
                raise ApiError(400, f"prompt token id {max(ids)} is outside the model's vocabulary of "
                                    f"{backend.vocab_size} tokens", code="invalid_token_id", param="prompt")
        verdicts = [await self.guarded(self.guard.check, p if isinstance(p, str) else backend.decode(p))
                    for p in prompts]
        logged = [v.text for v in verdicts]
        self.screened(call, next((v for v in verdicts if not v.allowed), verdicts[0]),
                      logged[0] if len(logged) == 1 else json.dumps(logged, ensure_ascii=False))
        # text prompts reach the model redacted and with the task's prefix; token ids as sent
        inputs = [call.prefix + v.text if isinstance(p, str) else p for p, v in zip(prompts, verdicts)]
        if backend.task == CLASSIFICATION:  # a classifier reads text: token ids as their text
            outcomes = await self.classified(call, [call.prefix + text for text in logged])
            echoed = logged if request.echo else [""] * len(logged)
            texts = [echoed[i] + o.label for i, o in enumerate(outcomes) for _ in range(request.n)]
            reasons = ["stop"] * len(texts)
            outcome = Outcome(self.joined([o.label for o in outcomes]), sum(o.prompt_tokens for o in outcomes), 0)
            scores = [completion_logprobs(label_logprobs(o.label, o.probabilities, top),
                                          list(o.probabilities).__getitem__, list(o.probabilities).__getitem__,
                                          len(logged[i])) for i, o in enumerate(outcomes) for _ in range(request.n)] \
                if top is not None else None
        else:
            ids = [backend.encode(p, special_tokens=True) if isinstance(p, str) else p for p in inputs]
            jobs = [self.job(call, prompt_ids, "prompt", top, echo=request.echo) for prompt_ids in ids]
            if request.stream and request.n == 1 and len(jobs) == 1 and backend.streams and top is None \
                    and not request.echo:
                return self.stream(call, jobs[0], streaming.completion_chunk)
            results = await self.generated(call, jobs)
            texts, reasons, scores = [], [], [] if top is not None else None
            for job, result in zip(jobs, results):
                prompt_text = backend.decode(job.prompt_ids)
                texts += [(prompt_text if request.echo else "") + text for text in result.texts]
                reasons += result.finish_reasons
                if scores is not None:  # offsets in prompt + completion, as OpenAI counts them
                    scores += [completion_logprobs((result.prompt_logprobs or []) + tokens, backend.token_text,
                                                   lambda t: backend.decode([t]), 0 if request.echo else len(prompt_text))
                               for tokens in result.logprobs]
            outcome = Outcome(self.joined([t for r in results for t in r.texts]), sum(r.prompt_tokens for r in results),
                              sum(sum(r.completion_tokens) for r in results))
        choices = [CompletionChoice(index=i, text=t, finish_reason=r, logprobs=scores[i] if scores else None)
                   for i, (t, r) in enumerate(zip(texts, reasons))]
        response = Completion(id=call.record.request_id, created=int(time.time()), model=request.model,
                              system_fingerprint=call.live.version, choices=choices, usage=usage(outcome))
        return self.answered(call, response, outcome, streaming.completion_chunk, texts, reasons, scores)

    async def classify(self, request: ClassifyRequest, http: Request) -> Classification:
        call, hit = await self.begin(http.url.path, request, http, cacheable=True)
        if call.live.backend.task != CLASSIFICATION:
            # 404: the route exists, but no classifier is served here to answer it
            raise ApiError(404, "the served model is generative, not a classifier; use /v1/chat/completions or "
                                "/v1/completions", code="not_a_classifier")
        if hit is not None:
            return hit
        verdict = await self.guarded(self.guard.check, request.text)
        self.screened(call, verdict, verdict.text)
        (outcome,) = await self.classified(call, [call.prefix + verdict.text])
        explanation = None
        if request.explain:  # offsets index the text as the model read it (PII placeholders included)
            future = self.service.enqueue_explanation(call.live, verdict.text, outcome.label, call.prefix)
            (explanation,) = await self.until_answered(call, [future], [])
        response = Classification(id=call.record.request_id, created=int(time.time()),
                                  model=request.model or self.service.served_name, model_version=call.live.version,
                                  label=outcome.label, confidence=outcome.confidence,
                                  probabilities=outcome.probabilities, explanation=explanation)
        return self.answered(call, response, outcome)

    # the work, and the answer

    def job(self, call: Call, prompt_ids: list[int], param: str, top: int | None, *, echo: bool = False) -> GenerationJob:
        if not prompt_ids:
            raise ApiError(400, "the prompt is empty and the model has no start-of-text token to begin from",
                           code="empty_prompt", param="prompt")
        request = call.request
        return GenerationJob(prompt_ids=prompt_ids, max_tokens=self.max_new_tokens(call, len(prompt_ids), param),
                             temperature=call.temperature, top_p=request.top_p or 1.0, stop=request.stop_list(),
                             seed=request.seed, n=request.n, logprobs=top,
                             echo_logprobs=echo and top is not None)

    def max_new_tokens(self, call: Call, prompt_tokens: int, param: str) -> int:
        requested, limit = call.request.requested_max_tokens(), self.cfg.guard.max_tokens
        default = min(self.cfg.default_max_tokens, limit)
        context = call.live.backend.context_length
        if context is None:
            return requested if requested is not None else default
        room = context - prompt_tokens
        if room <= 0 or (requested is not None and requested > room):
            raise ApiError(400, f"the prompt has {prompt_tokens} tokens and max_tokens asks for {requested or 1} "
                                f"more, beyond the model's context of {context} tokens",
                           code="context_length_exceeded", param=param)
        return requested if requested is not None else min(default, room)

    async def generated(self, call: Call, jobs: list[GenerationJob]) -> list[Generation]:
        futures = enqueued(lambda job: self.service.enqueue_generation(call.live, job, call.registration), jobs)
        self.shadow_copy(call, "generate", jobs)
        results = await self.until_answered(call, futures, jobs)
        self.metrics.generated_tokens.inc(sum(sum(r.completion_tokens) for r in results))
        self.metrics.first_token.observe(time.perf_counter() - call.record.started)
        return results

    async def classified(self, call: Call, texts: list[str]) -> list[Outcome]:
        lengths = [len(call.live.backend.encode(text)) for text in texts]
        if not all(lengths):
            raise ApiError(400, "the text is empty once tokenized, and the model has no special token to stand "
                                "for it", code="empty_prompt", param="text")
        futures = enqueued(lambda text: self.service.enqueue_classification(call.live, text), texts)
        self.shadow_copy(call, "classify", texts)
        answers = await self.until_answered(call, futures, [])
        return [Outcome(label, length, 0, label, probabilities[label], probabilities)
                for length, (label, probabilities) in zip(lengths, answers)]

    async def until_answered(self, call: Call, futures: list[asyncio.Future], jobs: list[GenerationJob]) -> list:
        """The results, unless the client closes the connection first: then its jobs are
        cancelled (dropped from the queue, or stopped at their next token) and ClientLeft raised."""
        answered = asyncio.gather(*futures)
        left = asyncio.ensure_future(disconnected(call.http))
        await asyncio.wait({answered, left}, return_when=asyncio.FIRST_COMPLETED)
        if answered.done():
            left.cancel()
            return answered.result()
        for job in jobs:
            job.cancelled.set()
        answered.cancel()
        self.metrics.abandoned.inc()
        raise ClientLeft

    def answered(self, call: Call, response, outcome: Outcome, chunk=None, texts=None, reasons=None, scores=None):
        """Record a computed answer, cache it when deterministic, and send it whole or as a stream."""
        fields = {"output": outcome.output, "prompt_tokens": outcome.prompt_tokens,
                  "completion_tokens": outcome.completion_tokens, "label": outcome.label,
                  "confidence": outcome.confidence, "probabilities": outcome.probabilities}
        call.record.update(**fields)
        if call.cache_key is not None:
            self.cache.put(call.cache_key, (response, {**call.record.fields, "cached": 0}))
        if getattr(call.request, "stream", False):
            make = chunk(call.record.request_id, call.request.model, call.live.version)
            with_usage = bool(call.request.stream_options and call.request.stream_options.include_usage)
            return streaming.whole(make, texts, reasons, response.usage.model_dump(), with_usage,
                                   [s.model_dump() for s in scores] if scores else None)
        return response

    def stream(self, call: Call, job: GenerationJob, chunk):
        """Queue one generation with a streamer and relay its text as it comes (QueueFull is
        raised here, before the response starts, so the client gets a plain 429)."""
        job.streamer = call.live.backend.streamer()
        try:
            future = self.service.enqueue_generation(call.live, job, call.registration)
        except QueueFull:
            raise queue_full() from None
        self.shadow_copy(call, "generate", [job])

        def first_text() -> None:
            self.metrics.first_token.observe(time.perf_counter() - call.record.started)

        def ended(status: int, result: Generation | None) -> None:
            if result is not None:
                self.metrics.generated_tokens.inc(result.completion_tokens[0])
                call.record.update(output=self.joined(result.texts[:1]), prompt_tokens=result.prompt_tokens,
                                   completion_tokens=result.completion_tokens[0])
            if status != 200:
                call.record.status = status
                if status == 499:
                    self.metrics.abandoned.inc()

        make = chunk(call.record.request_id, call.request.model, call.live.version)
        with_usage = bool(call.request.stream_options and call.request.stream_options.include_usage)
        return streaming.relay(job, future, make, with_usage=with_usage, on_first_text=first_text, on_end=ended)

    def shadow_copy(self, call: Call, kind: str, inputs: list) -> None:
        """A copy for the shadow version, run once the answer is sent: only of what the live
        version answers (not the canary's share, not registered adapters and models)."""
        if call.registration is None and call.record.fields.get("role") == "live":
            self.service.rollout.copy_after_sent(call.record, kind, inputs, self.joined)

    def joined(self, texts: list[str]) -> str:
        """The log's output column: the answer, or a JSON list when there are several."""
        redacted = [self.guard.detector.redact(t)[0] if self.guard.redact_pii else t for t in texts]
        return redacted[0] if len(redacted) == 1 else json.dumps(redacted, ensure_ascii=False)


def enqueued(enqueue, items: list) -> list[asyncio.Future]:
    """A future per item, or a 429 with none of them left queued."""
    futures = []
    try:
        for item in items:
            futures.append(enqueue(item))
    except QueueFull:
        for future in futures:
            future.cancel()
        raise queue_full() from None
    return futures


async def disconnected(http: Request) -> None:
    """Return when the client has closed the connection (ASGI `http.disconnect`; the body has
    been read, so nothing else arrives)."""
    while (await http.receive())["type"] != "http.disconnect":
        pass


def usage(outcome: Outcome) -> Usage:
    return Usage(**streaming.usage(outcome.prompt_tokens, outcome.completion_tokens))
