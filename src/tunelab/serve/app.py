"""The HTTP application: OpenAI-compatible routes, classification routes, health, readiness and
Prometheus metrics, API keys, and every error in the OpenAI error shape (4xx for anything a
client can send; 5xx only for a fault of the server)."""
from __future__ import annotations

import hmac
import logging
import time
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunelab import __version__
from tunelab.errors import TunelabError
from tunelab.serve.cache import ResponseCache
from tunelab.serve.guard import Guard
from tunelab.serve.handlers import CHAT, CLASSIFY, COMPLETIONS, PREDICT, ApiError, Handlers
from tunelab.serve.metrics import RequestMetricsMiddleware, ServerMetrics
from tunelab.serve.schemas import (ChatCompletion, ChatCompletionRequest, Classification, ClassifyRequest, Completion,
                                   CompletionRequest, ErrorResponse, Health, ModelCard, ModelList)
from tunelab.serve.service import LiveModel, ModelService, ServeSettings

log = logging.getLogger("tunelab.serve")
HTTP_CODES = {400: "invalid_request", 401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed",
              413: "request_too_large", 415: "unsupported_media_type"}
# one server-sent event, as FastAPI's own SSE support documents it (OpenAPI 3.2's event shape);
# each `data` is a JSON chunk, the last one the text [DONE]
SSE_EVENT = {"type": "object", "properties": {"data": {"type": "string"}, "event": {"type": "string"},
                                              "id": {"type": "string"}, "retry": {"type": "integer", "minimum": 0}}}
STREAM_OR_JSON = {200: {"description": "The answer; with stream: true, server-sent events ending with [DONE].",
                        "content": {"text/event-stream": {"schema": SSE_EVENT}}}}


def error_body(status: int, message: str, *, type: str | None = None, code: str | None = None,
               param: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    kind = type or ("invalid_request_error" if status < 500 else "server_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status, headers=headers)


def create_app(settings: ServeSettings, live: LiveModel | None = None) -> FastAPI:
    """The server for `settings`; `live` is a model already loaded (the CLI loads it first, so
    a bad run directory is reported before the server starts), else it loads in the background
    while /health answers and /ready says 503."""
    metrics = ServerMetrics(settings.max_batch_size)
    service = ModelService(settings, metrics, live)
    guard = Guard(redact_pii=settings.redact_pii, block_injection=settings.block_injection)
    handlers = Handlers(service, settings, metrics, guard, None, ResponseCache(settings.cache_size))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.prediction_log:
            from tunelab.serve.predlog import PredictionLog
            handlers.prediction_log = PredictionLog(settings.prediction_log, settings.retention_days)
        await service.start()
        try:
            yield
        finally:  # uvicorn has drained the in-flight requests by now (SIGTERM: graceful shutdown)
            await service.stop()
            if handlers.prediction_log is not None:
                handlers.prediction_log.close()

    app = FastAPI(title="tunelab serve", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible serving of a tunelab run, with batching, a response cache, "
                              "an input guard, a prediction log and Prometheus metrics.")
    app.state.service, app.state.handlers, app.state.metrics = service, handlers, metrics
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes, metrics=metrics)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)  # outermost: it also sees the 413s
    install_error_handlers(app, metrics)
    guarded = [Depends(api_key_check(settings.api_keys))] if settings.api_keys else []
    errors = error_responses(bool(settings.api_keys))

    @app.post(CHAT, response_model=ChatCompletion, dependencies=guarded, responses={**errors, **STREAM_OR_JSON},
              summary="Chat completion (OpenAI schema)")
    async def chat_completions(request: ChatCompletionRequest):
        return as_json(await handlers.chat(request))

    @app.post(COMPLETIONS, response_model=Completion, dependencies=guarded, responses={**errors, **STREAM_OR_JSON},
              summary="Text completion (OpenAI schema)")
    async def completions(request: CompletionRequest):
        return as_json(await handlers.completion(request))

    @app.post(CLASSIFY, response_model=Classification, dependencies=guarded, responses=errors,
              summary="Classify a text: label, per-class probabilities and the model version")
    async def classify(request: ClassifyRequest):
        return as_json(await handlers.classify(request, CLASSIFY))

    @app.post(PREDICT, response_model=Classification, dependencies=guarded, responses=errors,
              summary="Classify a text (same as /v1/classify)")
    async def predict(request: ClassifyRequest):
        return as_json(await handlers.classify(request, PREDICT))

    @app.get("/v1/models", response_model=ModelList, dependencies=guarded, responses=errors,
             summary="The served model and its adapters")
    async def models():
        live, _, _ = handlers.resolve(None)
        created = int(time.time())
        cards = [ModelCard(id=service.served_name, created=created, root=live.run_dir, version=live.version)]
        cards += [ModelCard(id=name, created=created, root=live.run_dir, parent=service.served_name,
                            version=live.version) for name in getattr(live.backend, "adapters", {})]
        return ModelList(data=cards)

    @app.get("/health", response_model=Health, summary="Liveness: the process answers")
    async def health():
        return Health(status="ok", model_version=service.live.version if service.live else None)

    @app.get("/ready", response_model=Health, summary="Readiness: the model is loaded and warmed up",
             responses={503: {"model": Health, "description": "Still loading, or the model failed to load."}})
    async def ready():
        if service.ready and service.live is not None:
            return Health(status="ready", model_version=service.live.version)
        status = "failed" if service.load_error else "loading"
        return JSONResponse(Health(status=status).model_dump(), status_code=503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def prometheus():
        metrics.queue_depth.set(service.batcher.depth)
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    app.openapi = lambda: openapi_schema(app, settings.max_tokens_limit)
    return app


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
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared and (not declared.isdigit() or int(declared) > self.max_bytes):
            self.metrics.guard_blocks.labels("request_too_large").inc()
            status = 413 if declared.isdigit() else 400
            await error_body(status, f"the request body is over this server's limit of {self.max_bytes} bytes"
                             if status == 413 else "invalid Content-Length header",
                             code=HTTP_CODES[status])(scope, receive, send)
            return
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # handled like any HTTPException: a JSON 413
                    raise StarletteHTTPException(413, f"the request body is over this server's limit of "
                                                      f"{self.max_bytes} bytes")
            return message

        await self.app(scope, counted_receive, send)


def as_json(answer):
    """A response model as JSON bytes, straight: the handlers built it from validated parts, so
    FastAPI's second validation against response_model (which only documents it) is skipped; a
    streaming response passes through."""
    if isinstance(answer, BaseModel):
        return Response(answer.model_dump_json(), media_type="application/json")
    return answer


def api_key_check(keys: list[str]):
    bearer = HTTPBearer(auto_error=False, description="One of the server's API keys.")
    encoded = [key.encode() for key in keys]

    async def require_api_key(credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
        given = credentials.credentials.encode("utf-8", "replace") if credentials else b""
        if not any(hmac.compare_digest(given, key) for key in encoded):  # constant time: no timing oracle
            raise ApiError(401, "missing or invalid API key; send `Authorization: Bearer <key>`",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    return require_api_key


def error_responses(with_keys: bool) -> dict[int, dict]:
    described = {400: "Invalid request (schema, limits, context length, guard).", 404: "Unknown model id (or, on /v1/classify and /predict, no classifier served).",
                 413: "Request body larger than the server accepts.", 429: "Queue full; retry after Retry-After.",
                 503: "The model is not loaded yet."}
    if with_keys:
        described[401] = "Missing or invalid API key."
    return {status: {"model": ErrorResponse, "description": text} for status, text in described.items()}


def install_error_handlers(app: FastAPI, metrics: ServerMetrics) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return error_body(exc.status, exc.message, type=exc.type, code=exc.code, param=exc.param, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        if first.get("type") == "json_invalid":
            return error_body(400, "the request body is not valid JSON", code="invalid_json")
        where = ".".join(str(part) for part in first.get("loc", ()) if field_part(part))
        message = f"{where}: {first['msg']}" if where else str(first["msg"])
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        return error_body(400, message, code="invalid_request", param=where or None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 413:
            metrics.guard_blocks.labels("request_too_large").inc()
        return error_body(exc.status_code, str(exc.detail), code=HTTP_CODES.get(exc.status_code),
                          headers=getattr(exc, "headers", None))

    @app.exception_handler(TunelabError)
    async def user_error(request: Request, exc: TunelabError):
        return error_body(400, str(exc), code="invalid_request")

    @app.exception_handler(Exception)
    async def server_fault(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return error_body(500, "internal server error", code="internal_error")


def field_part(part) -> bool:
    """Whether a pydantic error location part names a field or an index (not the body, nor the
    union member or validator pydantic also lists, such as `str` or `function-after[...]`)."""
    if isinstance(part, int):
        return True
    return part != "body" and part.isidentifier() and not part[0].isupper() and part not in TYPE_NAMES


TYPE_NAMES = {"str", "int", "float", "bool", "list", "dict", "none", "literal_error"}


def openapi_schema(app: FastAPI, max_tokens_limit: int) -> dict:
    """FastAPI's schema, made to say what this server does (clients and the schemathesis fuzz
    test read it): invalid bodies get the OpenAI-style 400, not FastAPI's 422; and max_tokens
    has this server's configured ceiling, which no static model knows."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        components = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        for name in ("ChatCompletionRequest", "CompletionRequest"):
            for field in ("max_tokens", "max_completion_tokens"):
                prop = components.get(name, {}).get("properties", {}).get(field)
                for option in (prop or {}).get("anyOf", []):
                    if option.get("type") == "integer":
                        option["maximum"] = max_tokens_limit
        app.openapi_schema = schema
    return app.openapi_schema
