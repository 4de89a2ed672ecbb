"""run_grader and validate_grader answer in the shapes of OpenAI's
POST /v1/fine_tuning/alpha/graders/run and /validate, checked against the openai package's own
response models, so a jobs API can return them as they are."""
import pytest
from openai.types.fine_tuning.alpha import GraderRunResponse, GraderValidateResponse

from tunelab.graders import GraderRuntime, GraderSpecError, run_grader, validate_grader

EXACT = {"type": "string_check", "name": "exact", "input": "{{ sample.output_json.id }}",
         "reference": "{{ item.answer }}", "operation": "eq"}
MULTI = {"type": "multi", "name": "both", "calculate_output": "0.5 * exact + 0.5 * close",
         "graders": {"exact": EXACT, "close": {"type": "text_similarity", "name": "close",
                                               "input": "{{ sample.output_text }}", "reference": "{{ item.answer }}",
                                               "evaluation_metric": "fuzzy_match"}}}


def test_run_response_has_openais_shape():
    response = run_grader(EXACT, '{"id": "INV-2291"}', {"answer": "INV-2291"})
    parsed = GraderRunResponse.model_validate(response)
    assert parsed.reward == 1.0 and parsed.metadata.name == "exact" and parsed.metadata.type == "string_check"
    assert not any(v for k, v in response["metadata"]["errors"].items() if isinstance(v, bool))
    assert response["metadata"]["scores"] == {"exact": 1.0}


def test_run_response_flags_the_error_kind():
    response = run_grader(EXACT, "INV-2291", {"answer": "INV-2291"})
    GraderRunResponse.model_validate(response)
    assert response["reward"] == 0.0 and response["metadata"]["errors"]["sample_parse_error"] is True


def test_run_response_of_a_multi_grader_has_its_sub_rewards():
    response = run_grader(MULTI, '"INV-2291"', {"answer": "INV-2291"})
    GraderRunResponse.model_validate(response)
    assert response["sub_rewards"]["exact"] == 0.0  # a JSON string, not an object: no output_json.id
    # the answer keeps its quotes: 8 common characters of 10 + 8 -> 2 * 8 / 18
    assert response["sub_rewards"]["close"] == pytest.approx(16 / 18)


def test_python_runtime_errors_carry_their_details():
    spec = {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1 / 0\n"}
    with GraderRuntime(allow_python=True) as runtime:
        response = run_grader(spec, "x", {}, runtime=runtime)
    errors = GraderRunResponse.model_validate(response).metadata.errors
    assert errors.python_grader_runtime_error and "ZeroDivisionError" in errors.python_grader_runtime_error_details


def test_validate_returns_the_grader_or_one_sentence():
    assert GraderValidateResponse.model_validate(validate_grader(EXACT)).grader.name == "exact"
    # the openai package types a multi grader's `graders` as one grader object; OpenAI's guide writes
    # a mapping of names to graders. Both load; the single-object form also fits the package's model
    single = {**MULTI, "calculate_output": "exact", "graders": EXACT}
    assert GraderValidateResponse.model_validate(validate_grader(single)).grader.type == "multi"
    assert validate_grader(MULTI) == {"grader": MULTI}
    with pytest.raises(GraderSpecError, match="field 'operation'"):
        validate_grader({**EXACT, "operation": "contains"})
