"""OpenAI's graders API (POST /v1/fine_tuning/alpha/graders/validate and /run) as the jobs server
mounts it, through the official `openai` client against a live app on 127.0.0.1: OpenAI's
response objects, a grader that fails on the sample answered 200 with reward 0 and the error
flagged, an invalid or disallowed grader a 400 in OpenAI's error shape naming the grader."""
from __future__ import annotations

import openai
import pytest
from fastapi import FastAPI
from serve_helpers import LiveServer

from tunelab.jobs.graders_routes import graders_router
from tunelab.serve.errors import install_error_handlers

EXACT = {"type": "string_check", "name": "exact", "input": "{{ sample.output_json.id }}",
         "reference": "{{ item.answer }}", "operation": "eq"}
PYTHON = {"type": "python", "name": "length", "source": "def grade(sample, item):\n    return 1.0\n"}


def grader_app(**options) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(graders_router(**options))
    app.get("/ready")(lambda: {"status": "ok"})  # what LiveServer waits for
    return app


@pytest.fixture(scope="module")
def client():
    server = LiveServer(grader_app()).start()
    try:
        yield openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)
    finally:
        server.stop()


def test_validate_returns_the_grader(client):
    assert client.fine_tuning.alpha.graders.validate(grader=EXACT).grader.name == "exact"


def test_run_grades_one_sample_with_openais_response(client):
    passed = client.fine_tuning.alpha.graders.run(grader=EXACT, model_sample='{"id": "INV-2291"}',
                                                  item={"answer": "INV-2291"})
    assert passed.reward == 1.0 and passed.metadata.name == "exact" and passed.metadata.type == "string_check"
    wrong = client.fine_tuning.alpha.graders.run(grader=EXACT, model_sample='{"id": "INV-9"}',
                                                 item={"answer": "INV-2291"})
    assert wrong.reward == 0.0 and not wrong.metadata.errors.sample_parse_error


def test_a_sample_the_grader_cannot_read_is_reward_zero_with_the_error_flagged(client):
    result = client.fine_tuning.alpha.graders.run(grader=EXACT, model_sample="INV-2291", item={"answer": "INV-2291"})
    assert result.reward == 0.0 and result.metadata.errors.sample_parse_error is True


def test_invalid_grader_is_a_400_naming_the_field(client):
    broken = {**EXACT, "operation": "sounds_like"}
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.alpha.graders.validate(grader=broken)
    error = caught.value.body
    assert error["param"] == "grader" and error["code"] == "invalid_grader" and "operation" in error["message"]
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.alpha.graders.run(grader={"type": "label_model", "name": "x"}, model_sample="a")


def test_python_graders_run_only_when_the_server_allows_them(client):
    with pytest.raises(openai.BadRequestError, match="python"):
        client.fine_tuning.alpha.graders.run(grader=PYTHON, model_sample="anything")
    server = LiveServer(grader_app(allow_python=True)).start()
    try:
        allowed = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)
        assert allowed.fine_tuning.alpha.graders.run(grader=PYTHON, model_sample="anything").reward == 1.0
    finally:
        server.stop()
