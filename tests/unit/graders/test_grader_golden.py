"""Golden rewards for each grader type, computed by hand, including malformed model output (an
output_json grader on an answer that is not JSON scores 0 with a reason, never an exception)."""
import json

import pytest

from tunelab.errors import TunelabError
from tunelab.graders import GraderRuntime, GraderSpecError, grade, load_grader

SAMPLE = "{{ sample.output_text }}"


def string_check(operation, reference="{{ item.answer }}", name="check"):
    return {"type": "string_check", "name": name, "input": SAMPLE, "reference": reference, "operation": operation}


def similarity(metric, name="similar"):
    return {"type": "text_similarity", "name": name, "input": SAMPLE, "reference": "{{ item.answer }}",
            "evaluation_metric": metric}


@pytest.mark.parametrize("operation,answer,expected", [
    ("eq", "INV-2291", 1.0), ("eq", "inv-2291", 0.0), ("eq", "INV-2291 ", 0.0),  # no trimming
    ("ne", "INV-2291", 0.0), ("ne", "INV-2290", 1.0),
    ("like", "the id is INV-2291.", 1.0), ("like", "the id is inv-2291.", 0.0),
    ("ilike", "the id is inv-2291.", 1.0), ("ilike", "the id is INV-2290", 0.0),
])
def test_string_check(operation, answer, expected):
    result = grade(string_check(operation), answer, {"answer": "INV-2291"})
    assert result.score == expected and result.error is None
    assert (result.reason is None) == (expected == 1.0)  # a zero says why


@pytest.mark.parametrize("metric,answer,reference,expected", [
    # Indel similarity: 3 common characters of 8 in all -> 2 * 3 / 8
    ("fuzzy_match", "abcd", "abce", 0.75),
    ("fuzzy_match", "same", "same", 1.0),
    # n-gram precisions 3/4, 2/3, 1/2 and 0/1, which exponential smoothing makes 1/2: (1/8)^(1/4)
    ("bleu", "a b c d", "a b c e", 0.125 ** 0.25),
    # GLEU: 6 matching 1-4-grams of 10 in the answer and 10 in the reference
    ("gleu", "a b c d", "a b c e", 0.6),
    # unigrams: 2 of 3 both ways -> F 2/3; bigrams: 1 of 2 -> 1/2; longest common subsequence 2 of 3
    ("rouge_1", "the cat sat", "the cat ran", 2 / 3),
    ("rouge_2", "the cat sat", "the cat ran", 0.5),
    ("rouge_3", "the cat sat", "the cat ran", 0.0),
    ("rouge_l", "the cat sat", "the cat ran", 2 / 3),
])
def test_text_similarity(metric, answer, reference, expected):
    assert grade(similarity(metric), answer, {"answer": reference}).score == pytest.approx(expected, abs=1e-9)


def test_cosine_uses_the_embedded_encoder():
    grader = load_grader(similarity("cosine"))
    runtime = GraderRuntime()
    same = grade(grader, "the parcel arrived late", {"answer": "the parcel arrived late"}, runtime=runtime).score
    near = grade(grader, "the package came late", {"answer": "the parcel arrived late"}, runtime=runtime).score
    far = grade(grader, "quantum chromodynamics", {"answer": "the parcel arrived late"}, runtime=runtime).score
    assert same == pytest.approx(1.0, abs=1e-5) and 0 <= far < near < same


def test_multi_combines_named_sub_graders_with_a_formula():
    grader = {"type": "multi", "name": "combined", "calculate_output": "0.5 * exact + 0.5 * similar",
              "graders": {"exact": string_check("eq", name="exact"), "similar": similarity("fuzzy_match")}}
    result = grade(grader, "abcd", {"answer": "abce"})
    assert result.sub_scores == {"exact": 0.0, "similar": 0.75}
    assert result.score == pytest.approx(0.375)
    assert "exact:" in result.reason  # why the exact sub-grader gave 0


@pytest.mark.parametrize("formula,expected", [
    ("max(a, b)", 0.75), ("min(a, b)", 0.0), ("a + b ^ 2", 0.5625), ("b ** 2", 0.5625), ("-b + 1", 0.25),
    ("abs(a - b)", 0.75), ("floor(b * 4) / 4", 0.75), ("ceil(b)", 1.0), ("sqrt(b * b)", 0.75),
    ("exp(a)", 1.0), ("log(1 + a)", 0.0), ("(a + b) / 2", 0.375),
])
def test_multi_formulas(formula, expected):
    grader = {"type": "multi", "name": "m", "calculate_output": formula,
              "graders": {"a": string_check("eq", name="a"), "b": similarity("fuzzy_match", name="b")}}
    assert grade(grader, "abcd", {"answer": "abce"}).score == pytest.approx(expected)


def test_a_formula_that_cannot_be_computed_scores_zero_with_the_reason():
    grader = {"type": "multi", "name": "m", "calculate_output": "b / a",
              "graders": {"a": string_check("eq", name="a"), "b": similarity("fuzzy_match", name="b")}}
    result = grade(grader, "abcd", {"answer": "abce"})
    assert (result.score, result.error) == (0.0, "formula_parse_error") and "ZeroDivisionError" in result.reason


@pytest.mark.parametrize("formula,problem", [
    ("__import__('os').system('true')", "calls something other than"),
    ("a.__class__", "Attribute"),
    ("c + 1", "'c'"),
    ("'text'", "numbers"),
    ("a if b else 0", "IfExp"),
    ("min(a)", "1 argument"),
    ("a +", "not a formula"),
])
def test_unsafe_or_unknown_formulas_are_refused_at_load(formula, problem):
    grader = {"type": "multi", "name": "m", "calculate_output": formula,
              "graders": {"a": string_check("eq", name="a"), "b": similarity("fuzzy_match", name="b")}}
    with pytest.raises(GraderSpecError, match="calculate_output") as caught:
        load_grader(grader)
    assert problem in str(caught.value)


def test_output_json_on_an_answer_that_is_not_json_gives_zero_with_a_reason():
    grader = {"type": "string_check", "name": "id", "input": "{{ sample.output_json.invoice }}",
              "reference": "{{ item.answer }}", "operation": "eq"}
    good = grade(grader, '{"invoice": "INV-2291"}', {"answer": "INV-2291"})
    bad = grade(grader, "INV-2291 (sorry, not JSON)", {"answer": "INV-2291"})
    missing = grade(grader, '{"number": "INV-2291"}', {"answer": "INV-2291"})
    assert good.score == 1.0 and good.error is None
    assert (bad.score, bad.error) == (0.0, "sample_parse_error") and "not JSON" in bad.reason
    assert (missing.score, missing.error) == (0.0, "sample_parse_error") and not missing.grader_failed


def test_a_missing_item_field_is_a_failure_of_the_grader_or_data():
    result = grade(string_check("eq", reference="{{ item.reference }}"), "x", {"answer": "x"})
    assert (result.score, result.error, result.grader_failed) == (0.0, "invalid_variable_error", True)


@pytest.mark.parametrize("spec,field", [
    ({"type": "string_check", "name": "e", "input": SAMPLE, "reference": "x", "operation": "equals"}, "operation"),
    ({"type": "string_check", "name": "e", "input": SAMPLE, "operation": "eq"}, "reference"),
    ({"type": "string_check", "name": "e", "input": SAMPLE, "refernce": "x", "operation": "eq"}, "refernce"),
    ({"type": "string_check", "name": "e", "input": "{{ items.x }}", "reference": "x", "operation": "eq"}, "input"),
    ({"type": "string_check", "name": "", "input": SAMPLE, "reference": "x", "operation": "eq"}, "name"),
    ({"type": "label_model", "name": "l", "input": [], "labels": [], "passing_labels": [], "model": "m"}, "type"),
    ({"type": "text_similarity", "name": "t", "input": SAMPLE, "reference": "x", "evaluation_metric": "cider"},
     "evaluation_metric"),
    ({"type": "python", "name": "p", "source": "def grade(sample):\n    return 1\n"}, "source"),
    ({"type": "python", "name": "p", "source": "def grade(sample, item)\n"}, "source"),
    ({"type": "score_model", "name": "s", "model": "m", "input": [{"role": "judge", "content": "x"}]}, "input"),
    ({"type": "score_model", "name": "s", "model": "m", "input": [{"role": "user", "content": "x"}],
      "range": [1, 0]}, "range"),
    ({"type": "multi", "name": "m", "graders": {}, "calculate_output": "1"}, "graders"),
    ({"type": "multi", "name": "m", "graders": {"a b": string_check("eq")}, "calculate_output": "1"}, "graders"),
])
def test_invalid_graders_are_one_sentence_naming_the_field(spec, field):
    with pytest.raises(GraderSpecError) as caught:
        load_grader(spec, where="grader.json")
    message = str(caught.value)
    assert f"field '{field}'" in message and message.startswith("grader.json: grader ")
    assert message.count(".") >= 1 and "\n" not in message


def test_sub_grader_errors_name_the_sub_grader():
    spec = {"type": "multi", "name": "m", "calculate_output": "a",
            "graders": {"a": {"type": "string_check", "name": "a", "input": SAMPLE, "reference": "x",
                              "operation": "nope"}}}
    with pytest.raises(GraderSpecError, match="grader 'a' field 'operation'"):
        load_grader(spec)


def test_a_grader_loads_from_a_file_and_from_a_json_string(tmp_path):
    path = tmp_path / "grader.json"
    path.write_text(json.dumps(string_check("eq")))
    assert load_grader(str(path)).spec == load_grader(json.dumps(string_check("eq"))).spec == string_check("eq")
    with pytest.raises(TunelabError, match="not found"):
        load_grader(str(tmp_path / "missing.json"))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(TunelabError, match="not valid JSON"):
        load_grader(str(tmp_path / "broken.json"))


def test_openais_single_object_form_of_multi_graders_is_accepted():
    spec = {"type": "multi", "name": "m", "calculate_output": "exact * 2", "graders": string_check("eq", name="exact")}
    assert grade(spec, "x", {"answer": "x"}).score == 2.0
