"""Property-based fuzzing of the live server from its own /openapi.json (schemathesis): bodies
that fit the schema and bodies that break it, odd strings and numbers, on every operation, must
never produce a 5xx, and every response must match what the schema documents (status codes,
content types, bodies). The cases are drawn from schemathesis' Hypothesis strategies directly
(its pytest plugin does not run under this pytest)."""
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from serve_helpers import live_server, serve_config

EXAMPLES = 60  # per operation and mode
# a schema-valid request may still be refused for what no schema can say: its prompt is longer
# than the model's context once tokenized, or tokenizes to nothing for a model without a start
# token (the tests' tokenizer has none for classification), or the input guard flags its text, or
# a run to register is not at that path on the server
UNSCHEMABLE = {"context_length_exceeded", "empty_prompt", "content_blocked", "model_not_servable"}


@pytest.fixture(scope="module", params=["generative", "classification"])
def served(request, tmp_path_factory):
    run = request.getfixturevalue("tiny_llama_run" if request.param == "generative" else "tiny_classifier_run")
    # small limits keep each generated request cheap: fuzzing is about the edges, not the model
    config = serve_config(run, tmp_path_factory.mktemp("fuzz"), model_name="tiny", default_max_tokens=4,
                          max_wait_ms=1, guard={"max_tokens": 4, "max_request_bytes": 8192})
    with live_server(config) as live:
        yield live


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_input_reaches_a_5xx_and_responses_match_the_schema(served, mode):
    schema = schemathesis.openapi.from_url(f"{served.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/completions", "/v1/classify"}
    if mode is GenerationMode.NEGATIVE:  # GETs without parameters have nothing to break
        operations = [op for op in operations if op.method.upper() == "POST"]
    calls = []
    for operation in operations:
        @given(case=operation.as_strategy(mode))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def check(case):
            # schemathesis' own acceptance/rejection checks, restated: its rejection list lacks 413,
            # which an invalid body over the size limit rightly gets
            response = case.call_and_validate(base_url=served.base_url,
                                              excluded_checks=[positive_data_acceptance, negative_data_rejection])
            calls.append(response.status_code)
            if mode is GenerationMode.POSITIVE and response.status_code == 400:
                assert response.json()["error"]["code"] in UNSCHEMABLE, response.text
            if mode is GenerationMode.NEGATIVE:
                assert 400 <= response.status_code < 500, response.text

        check()
    assert calls and all(status < 500 for status in calls)
