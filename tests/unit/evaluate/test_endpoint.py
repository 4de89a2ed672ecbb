"""endpoint:URL#MODEL specs and the mapping of a generated answer to a label (golden values)."""
import numpy as np
import pytest

from tunelab.errors import TunelabError
from tunelab.evaluate.endpoint import _from_answers, is_endpoint, label_of, parse_endpoint


def test_spec_parses_url_and_model_the_model_may_hold_colons():
    endpoint = parse_endpoint("endpoint:https://api.openai.com/v1/#ft:gpt-4o-mini:acme:support:abc123")
    assert endpoint.base_url == "https://api.openai.com/v1"
    assert endpoint.model == "ft:gpt-4o-mini:acme:support:abc123"
    assert endpoint.spec == "endpoint:https://api.openai.com/v1#ft:gpt-4o-mini:acme:support:abc123"
    assert is_endpoint(endpoint.spec) and not is_endpoint("runs/latest") and not is_endpoint(None)


@pytest.mark.parametrize("spec", ["endpoint:http://h:1/v1", "endpoint:http://h:1/v1#", "endpoint:h:1/v1#m"])
def test_bad_specs_are_one_sentence(spec):
    with pytest.raises(TunelabError, match="endpoint:URL#MODEL"):
        parse_endpoint(spec)


@pytest.mark.parametrize("answer, expected", [
    ("positive", 1), (" Positive.\n", 1), ("NEGATIVE", 0), ("The sentiment is negative", 0),
    ("not positive nor negative", None), ("neutral", None), ("positively", None), ("", None)])
def test_label_of_golden(answer, expected):
    assert label_of(answer, ["negative", "positive"]) == expected


def test_unmapped_answers_are_wrong_predictions_with_uniform_probabilities():
    predicted, probabilities, unparsable = _from_answers(["positive", "dunno", "negative"], ["negative", "positive"])
    assert predicted.tolist() == [1, -1, 0] and unparsable == 1
    np.testing.assert_allclose(probabilities, [[0, 1], [0.5, 0.5], [1, 0]])
