"""The HTTP application: OpenAI-compatible routes, classification routes, health, readiness and
Prometheus metrics, in front of them the request log, API keys and the body-size limit, and
every error in the OpenAI error shape (4xx for anything a client can send; 5xx only for a fault
of the server)."""
from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunelab import __version__
from tunelab.config import ServeConfig
from tunelab.serve import routing
from tunelab.serve.auth import ApiKeyCheck
from tunelab.serve.cache import ResponseCache
from tunelab.errors import TunelabError
from tunelab.serve.errors import HTTP_CODES, ApiError, error_body, install_error_handlers
from tunelab.serve.guard import Guard
from tunelab.serve.guard_classifier import load_guard_classifier
from tunelab.serve.handlers import Handlers
from tunelab.serve.metrics import RequestMetricsMiddleware, ServerMetrics
from tunelab.serve.recording import CHAT, CLASSIFY, COMPLETIONS, PREDICT, RecordRequests
from tunelab.serve.pool import ADAPTER, Registration
from tunelab.serve.schemas import (ChatCompletion, ChatCompletionRequest, Classification, ClassifyRequest, Completion,
                                   CompletionRequest, DeletedModel, ErrorResponse, FeedbackReceipt, FeedbackRequest,
                                   Health, ModelCard, ModelList, RegisterModelRequest)
from tunelab.serve.service import LiveModel, ModelService

# one server-sent event, as FastAPI's own SSE support documents it (OpenAPI 3.2's event shape);
# each `data` is a JSON chunk, the last one the text [DONE]
SSE_EVENT = {"type": "object", "properties": {"data": {"type": "string"}, "event": {"type": "string"},
                                              "id": {"type": "string"}, "retry": {"type": "integer", "minimum": 0}}}
STREAM_OR_JSON = {200: {"description": "The answer; with stream: true, server-sent events ending with [DONE].",
                        "content": {"text/event-stream": {"schema": SSE_EVENT}}}}


class Served:
    """What the request log writes to, opened when the app starts."""
    prediction_log = None


def create_app(cfg: ServeConfig, *, api_keys: list[str] | None = None, model: str | None = None,
               live: LiveModel | None = None, pool_only: bool = False) -> FastAPI:
    """The server for `cfg` (ServeConfig), serving `model` (a run directory; default cfg.model)
    or the registry's live version. `api_keys`: the accepted keys (tunelab.serve.auth.api_keys
    resolves them; default cfg.api_keys). `live`: a model already loaded; without it, the model
    loads in the background while /health answers and /ready says 503, unless
    `app.state.service.open()` loads it first (the CLI does: a bad run is reported before the
    server starts). `pool_only`: no served model, only the runs registered in its pool at
    runtime (`app.state.service.pool.register`), as the jobs server uses it."""
    keys = list(cfg.api_keys if api_keys is None else api_keys)
    metrics = ServerMetrics(cfg.max_batch_size)
    service = ModelService(cfg, metrics, model=model, live=live, pool_only=pool_only)
    # a guard classifier that cannot load is one sentence now, before the server starts
    guard = Guard(redact_pii=cfg.guard.redact_pii, block_injection=cfg.guard.block_injection,
                  classifier=load_guard_classifier(cfg.guard.classifier),
                  classifier_threshold=cfg.guard.classifier_threshold)
    handlers = Handlers(service, cfg, metrics, guard, ResponseCache(cfg.cache_size))
    served = Served()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if cfg.prediction_log:
            from tunelab.serve.predlog import PredictionLog
            served.prediction_log = PredictionLog(cfg.prediction_log, cfg.retention_days)
            service.rollout.prediction_log = served.prediction_log
        await service.start()
        try:
            yield
        finally:  # uvicorn has drained the in-flight requests by now (SIGTERM: graceful shutdown)
            await service.stop()
            if served.prediction_log is not None:
                served.prediction_log.close()

    app = FastAPI(title="tunelab serve", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible serving of a tunelab run, with batching, a response cache, "
                              "an input guard, a prediction log and Prometheus metrics.")
    app.state.service, app.state.handlers, app.state.metrics, app.state.served = service, handlers, metrics, served
    # outermost last: the metrics and the request log see every answer, 401s and 413s included;
    # the key is checked before the body is read
    app.add_middleware(BodySizeLimit, max_bytes=cfg.guard.max_request_bytes, metrics=metrics)
    app.add_middleware(ApiKeyCheck, keys=keys)
    app.add_middleware(RecordRequests, log_holder=served)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    install_error_handlers(app)
    errors = error_responses(bool(keys))

    @app.post(CHAT, response_model=ChatCompletion, responses={**errors, **STREAM_OR_JSON},
              summary="Chat completion (OpenAI schema)")
    async def chat_completions(request: ChatCompletionRequest, http: Request):
        return as_json(await handlers.chat(request, http))

    @app.post(COMPLETIONS, response_model=Completion, responses={**errors, **STREAM_OR_JSON},
              summary="Text completion (OpenAI schema; token-id prompts, echo and logprobs too)")
    async def completions(request: CompletionRequest, http: Request):
        return as_json(await handlers.completion(request, http))

    @app.post(CLASSIFY, response_model=Classification, responses=errors,
              summary="Classify a text: label, per-class probabilities and the model version")
    async def classify(request: ClassifyRequest, http: Request):
        return as_json(await handlers.classify(request, http))

    @app.post(PREDICT, response_model=Classification, responses=errors,
              summary="Classify a text (same as /v1/classify)")
    async def predict(request: ClassifyRequest, http: Request):
        return as_json(await handlers.classify(request, http))

    @app.post(FEEDBACK, response_model=FeedbackReceipt, responses=errors,
              summary="Feedback on an earlier response (its `id`): a label, a corrected or preferred answer, a rating")
    async def feedback(request: FeedbackRequest):
        return as_json(await store_feedback(served.prediction_log, request, metrics))

    @app.get("/v1/models", response_model=ModelList, responses=errors,
             summary="The served model and the adapters and models registered beside it")
    async def models():
        if service.pool_only:
            return ModelList(data=[card_of(service, r) for r in service.pool.registrations()])
        live, _, _ = await routing.resolve(service, None, None)
        backend = live.backend
        cards = [ModelCard(id=service.served_name, root=live.name, created=int(time.time()), version=live.version,
                           task=backend.task, tasks=live.tasks, context_length=backend.context_length)]
        return ModelList(data=cards + [card_of(service, r) for r in service.pool.registrations()])

    @app.post(ADMIN_MODELS, response_model=ModelCard, status_code=201, responses=errors,
              summary="Register a run under a model id: a LoRA adapter of the served base, or a model of its own")
    async def register_model(request: RegisterModelRequest):
        if not service.pool_only:
            await routing.resolve(service, None, None)  # 503 until the served model is up: adapters are matched to its base
        if request.id == service.served_name:
            raise ApiError(400, f"'{request.id}' is the served model's own id; register the run under another id",
                           code="model_not_servable", param="id")
        try:
            registration = await service.register(request.id, request.path)
        except TunelabError as exc:
            raise ApiError(400, str(exc), code="model_not_servable", param="path") from None
        return card_of(service, registration)

    @app.delete(ADMIN_MODELS + "/{model_id}", response_model=DeletedModel, responses=errors,
                summary="Stop serving a registered id (requests already accepted for it are answered)")
    async def unregister_model(model_id: str):
        if not service.pool_only:
            await routing.resolve(service, None, None)
        if await service.unregister(model_id) is None:
            raise ApiError(404, f"no model '{model_id}' is registered here (the served model itself cannot be "
                                "removed)", code="model_not_found", param="model_id")
        return DeletedModel(id=model_id, deleted=True)

    @app.get("/health", response_model=Health, summary="Liveness: the process answers")
    async def health():
        return Health(status="ok", model_version=service.live.version if service.live else None)

    @app.get("/ready", response_model=Health, summary="Readiness: the model is loaded and warmed up",
             responses={503: {"model": Health, "description": "Still loading, or the model failed to load."}})
    async def ready():
        if service.ready and (service.live is not None or service.pool_only):
            return Health(status="ready", model_version=service.live.version if service.live else None)
        status = "failed" if service.load_error else "loading"
        return JSONResponse(Health(status=status).model_dump(), status_code=503)

    for path, probe in (("/health", health), ("/ready", ready)):  # HEAD: what load balancers often send
        app.add_api_route(path, probe, methods=["HEAD"], include_in_schema=False)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def prometheus():
        metrics.queue_depth.set(service.batcher.depth)
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    app.openapi = lambda: openapi_schema(app, cfg, service, bool(keys))
    return app


ADMIN_MODELS = "/v1/admin/models"
FEEDBACK = "/v1/feedback"


async def store_feedback(prediction_log, request: FeedbackRequest, metrics: ServerMetrics) -> FeedbackReceipt:
    """Check a feedback body, find the response it is about (404 when the log holds none with
    that id) and queue it for the log's feedback table, joined to the request by its id."""
    from tunelab.serve.predlog import FEEDBACK_FIELDS, feedback_row
    if prediction_log is None:
        raise ApiError(404, "this server keeps no prediction log (serve.prediction_log), so it has no responses to "
                            "attach feedback to", code="response_not_found", param="id")
    record = {"request_id": request.id, **request.model_dump(exclude={"id"}, exclude_none=True)}
    try:
        feedback_row(record)
    except TunelabError as exc:
        raise ApiError(400, exc.what + (f"; {exc.fix}" if exc.fix else ""), code="invalid_feedback") from None
    if not await asyncio.to_thread(prediction_log.request_known, request.id):
        raise ApiError(404, f"no response with id '{request.id}' is in this server's prediction log (pruned, "
                            "from another server, or never sent)", code="response_not_found", param="id")
    prediction_log.log_feedback(record)
    for name in FEEDBACK_FIELDS:
        if record.get(name) is not None:
            metrics.feedback.labels(name).inc()
    return FeedbackReceipt(id=request.id, stored=True)


def card_of(service: ModelService, registration: Registration) -> ModelCard:
    """The /v1/models entry of a registered id: its run's name, never its path."""
    live = service.live
    if registration.kind == ADAPTER:
        return ModelCard(id=registration.model_id, root=registration.root, parent=service.served_name,
                         created=int(time.time()), version=live.version, task=live.backend.task,
                         tasks=registration.tasks, context_length=live.backend.context_length,
                         loaded=service.pool.is_loaded(registration))
    loaded = service.pool.loaded_model(registration)
    return ModelCard(id=registration.model_id, root=registration.root, created=int(time.time()),
                     version=registration.version, task=registration.task, tasks=registration.tasks,
                     context_length=loaded.backend.context_length if loaded else None, loaded=loaded is not None)


class BodySizeLimit:
    """Refuse request bodies over the limit with a 413 in the OpenAI error shape: at once when
    Content-Length says so, else as soon as the streamed body passes the limit. (Starlette's own
    limit answers in plain text, which OpenAI clients cannot parse.)"""

    def __init__(self, app, max_bytes: int, metrics: ServerMetrics):
        self.app, self.max_bytes, self.metrics = app, max_bytes, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"the request body is over this server's limit of {self.max_bytes} bytes"
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared and (not declared.isdigit() or int(declared) > self.max_bytes):
            status = 413 if declared.isdigit() else 400
            if status == 413:
                self.metrics.guard_blocks.labels("request_too_large").inc()
            await error_body(status, too_large if status == 413 else "invalid Content-Length header",
                             code=HTTP_CODES[status])(scope, receive, send)
            return
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # handled like any HTTPException: a JSON 413
                    self.metrics.guard_blocks.labels("request_too_large").inc()
                    raise StarletteHTTPException(413, too_large)
            return message

        await self.app(scope, counted_receive, send)


def as_json(answer):
    """A response model as JSON bytes, straight: the handlers built it from validated parts, so
    FastAPI's second validation against response_model (which only documents it) is skipped; a
    streaming response passes through."""
    if isinstance(answer, BaseModel):
        return Response(answer.model_dump_json(), media_type="application/json")
    return answer


def error_responses(with_keys: bool) -> dict[int, dict]:
    described = {400: "Invalid request (schema, limits, context length, task, guard; a run that cannot be "
                      "registered).",
                 404: "Unknown model id (or, on /v1/classify and /predict, no classifier served; on /v1/feedback, "
                      "no response with that id).",
                 413: "Request body larger than the server accepts.",
                 415: "The body is not sent as application/json.",
                 429: "Queue full; retry after Retry-After.",
                 500: "A registered adapter or model could not be loaded (model_load_failed).",
                 503: "The model is not loaded yet."}
    if with_keys:
        described[401] = "Missing or invalid API key."
    return {status: {"model": ErrorResponse, "description": text} for status, text in described.items()}


def openapi_schema(app: FastAPI, cfg: ServeConfig, service: ModelService, with_keys: bool) -> dict:
    """FastAPI's schema, made to say what this server does (clients and the schemathesis fuzz
    test read it): invalid bodies get the OpenAI-style 400, not FastAPI's 422; max_tokens has
    this server's ceiling and the served model's context, token ids its vocabulary, which no
    static model knows, and `task` the tasks of the run and the registered ones; and, with API
    keys, the bearer scheme. Built again for a new version or registration."""
    live = service.live
    registered = service.pool.registrations()
    version = (live.version if live else None, tuple(r.serial for r in registered))
    if app.openapi_schema is not None and getattr(app, "openapi_version_of", None) == version:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
            if with_keys and path.startswith(("/v1/", PREDICT)):
                operation["security"] = [{"bearer": []}]
    components = schema.setdefault("components", {})
    if with_keys:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer",
                                                    "description": "One of the server's API keys."}}
    schemas = components.get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    context = live.backend.context_length if live else None
    ceiling = min(cfg.guard.max_tokens, context - 1) if context else cfg.guard.max_tokens
    for name in ("ChatCompletionRequest", "CompletionRequest"):
        for field in ("max_tokens", "max_completion_tokens"):
            for option in schemas.get(name, {}).get("properties", {}).get(field, {}).get("anyOf", []):
                if option.get("type") == "integer":
                    option["maximum"] = ceiling
    if live is not None:
        for token in token_id_schemas(schemas.get("CompletionRequest", {}).get("properties", {}).get("prompt", {})):
            token["maximum"] = live.backend.vocab_size - 1
        tasks = sorted(set(live.tasks).union(*(r.tasks for r in registered)))
        for name in ("ChatCompletionRequest", "CompletionRequest", "ClassifyRequest"):
            task = schemas.get(name, {}).get("properties", {}).get("task")
            if task is not None:
                task["anyOf"] = ([{"type": "string", "enum": tasks}] if tasks else []) + [{"type": "null"}]
    app.openapi_schema, app.openapi_version_of = schema, version
    return schema


def token_id_schemas(node):
    """The integer item schemas (token ids) inside the prompt field's schema."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            yield node
        for value in node.values():
            yield from token_id_schemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from token_id_schemas(value)
