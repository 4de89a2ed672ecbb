"""Every error the server answers, in the OpenAI error shape: `ApiError` (raised by the
handlers), the 429 answer, plain-sentence messages for bodies that do not fit the schema, and
the exception handlers that turn anything else a client can cause into a 4xx (a 5xx only for a
fault of the server)."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from tunelab.errors import TunelabError

log = logging.getLogger("tunelab.serve")
HTTP_CODES = {400: "invalid_request", 401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed",
              413: "request_too_large", 415: "unsupported_media_type", 429: "queue_full"}
CLIENT_CLOSED = 499  # nginx's status for a request whose client went away before the answer


class ApiError(Exception):
    """An answer in the OpenAI error shape with a 4xx/5xx status."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = headers or {}


class ClientLeft(Exception):
    """The client closed the connection before its answer; its work has been cancelled."""


def queue_full() -> ApiError:
    """The answer when serve.max_queue requests already wait: 429, retry after a second."""
    return ApiError(429, "the server is at capacity; retry shortly", type="rate_limit_error", code="queue_full",
                    headers={"Retry-After": "1"})


def load_failed(model_id: str, exc: BaseException) -> ApiError:
    """The answer when a registered adapter or model could not be loaded: a fault of the server
    (its files), not of the request."""
    why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return ApiError(500, f"the model '{model_id}' could not be loaded ({why})", type="server_error",
                    code="model_load_failed", param="model")


def printable(text: str) -> str:
    """Text that encodes as UTF-8: a lone surrogate a client sent must not break the answer."""
    return text.encode("utf-8", "replace").decode("utf-8")


def error_body(status: int, message: str, *, type: str | None = None, code: str | None = None,
               param: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    kind = type or ("invalid_request_error" if status < 500 else "server_error")
    return JSONResponse({"error": {"message": printable(message), "type": kind,
                                   "param": printable(param) if param else None, "code": code}},
                        status_code=status, headers=headers)


# what each pydantic error type means, as the end of a sentence that starts with the field's name
MUST = {
    "int_type": "must be a whole number", "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number", "float_type": "must be a number", "float_parsing": "must be a number",
    "finite_number": "must be a finite number", "string_type": "must be text", "bool_type": "must be true or false",
    "list_type": "must be a list", "dict_type": "must be an object", "model_type": "must be an object",
    "model_attributes_type": "must be an object", "missing": "is required",
    "extra_forbidden": "is not a field this server accepts", "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be greater than {gt}", "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}", "too_short": "must hold at least {min_length} item(s)",
    "too_long": "must hold at most {max_length} item(s)", "string_too_short": "must not be empty",
    "string_unicode": "must be valid Unicode text (it holds a lone UTF-16 surrogate such as \\ud800)",
    "string_too_long": "must be at most {max_length} characters", "literal_error": "must be {expected}",
    "string_pattern_mismatch": "must match the pattern {pattern}",
}
# fields that take one of several shapes: what to say when the value fits none of them
SHAPES = {"prompt": "text, a list of texts, a list of token ids or a list of lists of token ids",
          "stop": "text or a list of up to 4 texts", "content": "text or a list of text parts"}


def field_path(loc) -> str:
    """`messages[0].content` from pydantic's location, without the body and the union member or
    validator names pydantic also lists (`str`, `list[...]`, `function-after[...]`)."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "body" and part.isidentifier() and not part[0].isupper() and part not in TYPE_NAMES:
            path += f".{part}" if path else part
    return path


TYPE_NAMES = {"str", "int", "float", "bool", "list", "dict", "none"}


def sentence(error: dict) -> tuple[str, str]:
    """(plain sentence, param) for one pydantic error."""
    loc, kind = tuple(error.get("loc", ())), error.get("type", "")
    if kind == "extra_forbidden" and loc:  # the unknown key may be any string: name it as sent
        parent = field_path(loc[:-1])
        param = f"{parent}.{loc[-1]}" if parent else str(loc[-1])
        return f"{param} is not a field this server accepts", param
    param = field_path(loc)
    if kind == "value_error":  # raised by our own validators: their message is already a sentence
        message = str(error.get("ctx", {}).get("error", error.get("msg", "")))
        return (f"{param} {message}" if param else message), param
    if not param:
        if kind == "string_unicode":  # in a key: no field to name
            return "the request body holds a key that is not valid Unicode text (a lone UTF-16 surrogate)", param
        return ("the request body must be a JSON object" if kind.endswith("type") else
                f"the request body {MUST.get(kind, 'is not valid')}"), param
    last = param.rsplit(".", 1)[-1].split("[")[0]
    if last in SHAPES and kind.endswith("_type") and any(not isinstance(p, int) and not p.isidentifier()
                                                         for p in loc):  # the value fits none of its shapes
        return f"{param} must be {SHAPES[last]}", param
    must = MUST.get(kind)
    if must is None:
        return f"{param} is not valid ({error.get('msg', kind)})", param
    context = {k: (f"one of {v}" if k == "expected" and " or " in str(v) else
                   int(v) if isinstance(v, float) and v.is_integer() else v)
               for k, v in (error.get("ctx") or {}).items()}
    try:
        return f"{param} {must.format(**context)}", param
    except (KeyError, IndexError):
        return f"{param} {must.split(' {')[0]}", param


def most_telling(errors: list[dict]) -> dict:
    """The error to report of the first field with problems. A field of several shapes gets one
    error per shape it does not fit; the telling one is the failed check of our own validators,
    else a failed constraint of the shape the value has (the deepest), else its first."""
    field = top_field(field_path(errors[0].get("loc", ())))
    same = [e for e in errors if top_field(field_path(e.get("loc", ()))) == field]
    for wanted in (lambda e: e.get("type") in ("value_error", "string_unicode"),
                   lambda e: not e.get("type", "").endswith("_type")):
        found = [e for e in same if wanted(e)]
        if found:
            return max(found, key=lambda e: len(e.get("loc", ())))
    return same[0]


def top_field(path: str) -> str:
    return path.split(".")[0].split("[")[0]


def validation_answer(errors: list[dict]) -> tuple[str, str | None]:
    """One message for a request that does not fit the schema: the first problem as a sentence
    and how many other fields have problems too."""
    if not errors:
        return "the request does not fit the schema", None
    message, param = sentence(most_telling(errors))
    others = {top_field(field_path(e.get("loc", ()))) for e in errors} - {top_field(param)}
    if others:
        message += f" (and {len(others)} more problem{'s' if len(others) > 1 else ''})"
    return message, param or None


def is_json(request: Request) -> bool:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return content_type == "application/json" or content_type.endswith("+json")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return error_body(exc.status, exc.message, type=exc.type, code=exc.code, param=exc.param, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if errors and errors[0].get("type") == "json_invalid":
            return error_body(400, "the request body is not valid JSON", code="invalid_json")
        if not is_json(request) and any(tuple(e.get("loc", ())) == ("body",) for e in errors):
            return error_body(415, "send the request body as JSON with `Content-Type: application/json`",
                              code=HTTP_CODES[415])
        message, param = validation_answer(errors)
        return error_body(400, message, code="invalid_request", param=param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":  # FastAPI's words
            return error_body(400, "the request body is not valid JSON (or nests too deep, or holds a number "
                                   "too long to read)", code="invalid_json")
        message = {404: f"there is no {request.url.path} here; see /docs for the API",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return error_body(exc.status_code, message, code=HTTP_CODES.get(exc.status_code),
                          headers=getattr(exc, "headers", None))

    @app.exception_handler(TunelabError)
    async def user_error(request: Request, exc: TunelabError):
        return error_body(400, str(exc), code="invalid_request")

    @app.exception_handler(ClientDisconnect)
    @app.exception_handler(ClientLeft)
    async def client_left(request: Request, exc: Exception):
        return Response(status_code=CLIENT_CLOSED)  # nobody reads it; the request log counts it abandoned

    @app.exception_handler(Exception)
    async def server_fault(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return error_body(500, "internal server error", code="internal_error")
