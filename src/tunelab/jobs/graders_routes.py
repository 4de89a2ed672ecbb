"""OpenAI's graders API on a jobs server, so a team debugs the grader of a reinforcement job with
the client it trains with (`client.fine_tuning.alpha.graders.validate(grader=...)`, `.run(grader=...,
model_sample=..., item=...)`) before creating the job:

POST /v1/fine_tuning/alpha/graders/validate  {grader}                      -> {grader}
POST /v1/fine_tuning/alpha/graders/run       {grader, model_sample, item?} -> {reward, metadata,
                                                                              sub_rewards, model_grader_token_usage_per_model}

Graders are read and run by tunelab.graders (the same code that rewards `tunelab train --task
rft`). An invalid grader is a 400 in OpenAI's error shape naming the grader field; a grader that
fails on the sample (malformed output, a python grader that raises or runs too long) is a 200
with reward 0 and the error flagged in metadata.errors, as OpenAI answers. Python graders run only
when the server enables them (in a subprocess with a time limit and no network), else 400.

Mount with `app.include_router(graders_router(...))` on an app whose errors are answered by
tunelab.serve.errors.install_error_handlers (the jobs app's and serve app's are).
"""
from __future__ import annotations

import threading
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from tunelab.errors import TunelabError
from tunelab.graders import GraderRuntime, load_grader, run_grader, validate_grader
from tunelab.serve.errors import ApiError
from tunelab.serve.schemas import ErrorResponse

PREFIX = "/v1/fine_tuning/alpha/graders"
ERRORS = {400: {"model": ErrorResponse, "description": "An invalid (or, python, disallowed) grader, or a body that "
                                                       "does not fit: error.param names the field."}}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ValidateRequest(Strict):
    grader: dict[str, Any] = Field(description="A grader in OpenAI's grader JSON (string_check, text_similarity, "
                                               "python, score_model, multi).")


class RunRequest(ValidateRequest):
    model_sample: str = Field(description="The model's output: `sample.output_text`, and `sample.output_json` when "
                                          "it is JSON.")
    item: dict[str, Any] | None = Field(None, description="The dataset item the grader's templates read as `item`.")


class ValidateResponse(BaseModel):
    grader: dict[str, Any]


class RunResponse(BaseModel):
    reward: float
    metadata: dict[str, Any]
    sub_rewards: dict[str, Any]
    model_grader_token_usage_per_model: dict[str, Any]


def graders_router(*, allow_python: bool = False, python_timeout_s: float = 10.0,
                   score_model_base_url: str | None = None) -> APIRouter:
    """The two routes, sharing one GraderRuntime (it keeps the sentence encoder of cosine
    similarity loaded and python graders' workers alive); grading is one at a time, as the
    runtime is not shared between threads."""
    router = APIRouter(prefix=PREFIX, tags=["graders"], responses=ERRORS)
    runtime = GraderRuntime(allow_python=allow_python, python_timeout_s=python_timeout_s,
                            base_url=score_model_base_url)
    lock = threading.Lock()

    @router.post("/validate", response_model=ValidateResponse, summary="Validate a grader (OpenAI's grader JSON)")
    def validate(request: ValidateRequest):
        return _answer(lambda: validate_grader(request.grader))

    @router.post("/run", response_model=RunResponse, summary="Run a grader on one model sample and item")
    def run(request: RunRequest):
        def grade():
            runtime.check_allowed(load_grader(request.grader, where="grader"))
            with lock:
                return run_grader(request.grader, request.model_sample, request.item, runtime=runtime)
        return _answer(grade)

    router.runtime = runtime  # the server closes it (python workers) when it stops
    return router


def _answer(call):
    try:
        return call()
    except TunelabError as exc:  # GraderSpecError included: one sentence naming the field
        raise ApiError(400, str(exc), code="invalid_grader", param="grader") from None
