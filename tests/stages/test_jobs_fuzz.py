"""Property-based fuzzing of the jobs server's own paths (files, fine-tuning jobs, events,
checkpoints, cancel/pause/resume) from its /openapi.json, as test_serve_fuzz.py fuzzes serving:
bodies and parameters that fit the schema and ones that break it must never produce a 5xx, and
every response must match what the schema documents. A stand-in trainer keeps any job a case
manages to create cheap."""
import pytest
from fuzz_helpers import fuzz_operations
from schemathesis import GenerationMode

from jobs_helpers import FakeTrainerExecutor, jobs_config, jobs_server

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
    fuzz_operations(served.base_url, mode, paths={"/v1/files", "/v1/fine_tuning/jobs",
                                                  "/v1/fine_tuning/jobs/{fine_tuning_job_id}/events"},
                    unschemable=UNSCHEMABLE, examples=EXAMPLES, negative_methods=("POST", "GET"),
                    negative_may_succeed=True)
