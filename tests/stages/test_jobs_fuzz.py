"""Property-based fuzzing of the jobs server's own paths (files, fine-tuning jobs, events,
checkpoints, cancel/pause/resume) from its /openapi.json, as test_serve_fuzz.py fuzzes serving:
bodies and parameters that fit the schema and ones that break it must never produce a 5xx, and
every response must match what the schema documents. A stand-in trainer keeps any job a case
manages to create cheap."""
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from jobs_helpers import FakeTrainerExecutor, jobs_config, jobs_server, tiny_base  # noqa: F401

pytestmark = pytest.mark.slow
EXAMPLES = 40  # per operation and mode
# a schema-valid request may still be refused for what no schema can say: a file or job id that
# does not exist here, a model this server does not offer, a job in the wrong state for the
# action, an uploaded file that is empty or nameless
UNSCHEMABLE = {"invalid_training_file", "invalid_validation_file", "model_not_available", "invalid_state",
               "empty_file", "invalid_file", "unsupported_method",
               # a grader (OpenAI's grader JSON) and reinforcement's hyperparameters are free-form objects
               # in the schema; tunelab.graders and tunelab.jobs.methods check them
               "invalid_grader", "invalid_reinforcement_method"}


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_base):
    cfg = jobs_config(tmp_path_factory.mktemp("jobs-fuzz") / "jobs", tiny_base, max_file_bytes=65536)
    with jobs_server(cfg, FakeTrainerExecutor(steps=2)) as live:
        yield live


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_input_reaches_a_5xx_and_responses_match_the_schema(served, mode):
    schema = schemathesis.openapi.from_url(f"{served.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/files", "/v1/fine_tuning/jobs",
                                             "/v1/fine_tuning/jobs/{fine_tuning_job_id}/events"}
    if mode is GenerationMode.NEGATIVE:
        operations = [op for op in operations if op.method.upper() in ("POST", "GET")]
    calls = []
    for operation in operations:
        @given(case=operation.as_strategy(mode))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def check(case):
            response = case.call_and_validate(base_url=served.base_url,
                                              excluded_checks=[positive_data_acceptance, negative_data_rejection])
            calls.append(response.status_code)
            if mode is GenerationMode.POSITIVE and response.status_code == 400:
                assert response.json()["error"]["code"] in UNSCHEMABLE, response.text
            if mode is GenerationMode.NEGATIVE:
                assert 400 <= response.status_code < 500 or response.status_code < 300, response.text

        try:
            check()
        except Unsatisfiable:  # nothing in this operation can be made invalid (free-text path ids)
            assert mode is GenerationMode.NEGATIVE
    assert calls and all(status < 500 for status in calls)
