"""Property-based fuzzing of the live server from its own /openapi.json (schemathesis): bodies
that fit the schema and bodies that break it, odd strings and numbers, on every operation, must
never produce a 5xx, and every response must match what the schema documents (status codes,
content types, bodies)."""
import pytest
from fuzz_helpers import fuzz_operations
from schemathesis import GenerationMode

from serve_helpers import live_server, serve_config

EXAMPLES = 60  # per operation and mode
# a schema-valid request may still be refused for what no schema can say: its prompt is longer
# than the model's context once tokenized, or tokenizes to nothing for a model without a start
# token (the tests' tokenizer has none for classification), or the input guard flags its text, or
# a run to register is not at that path on the server
# (and feedback must carry at least one of its optional fields, which OpenAPI cannot state)
UNSCHEMABLE = {"context_length_exceeded", "empty_prompt", "content_blocked", "model_not_servable", "invalid_feedback"}


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
    # GETs without parameters have nothing to break
    fuzz_operations(served.base_url, mode, paths={"/v1/chat/completions", "/v1/completions", "/v1/classify"},
                    unschemable=UNSCHEMABLE, examples=EXAMPLES)
