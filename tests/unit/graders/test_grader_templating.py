"""OpenAI's grader templates: item and sample namespaces, JSON paths, and the reasons a template
has no value (a missing item field is the data's fault, a non-JSON answer the model's)."""
import pytest

from tunelab.graders.base import GradeFailure
from tunelab.graders.templating import check_template, make_sample, parse_path, render

ITEM = {"answer": "INV-2291", "fields": {"total": 12.5, "tags": ["a", "b"]}, "odd key": 1}


@pytest.mark.parametrize("template,expected", [
    ("{{ item.answer }}", "INV-2291"),
    ("{{item.answer}}", "INV-2291"),
    ("id={{ item.answer }}, total={{ item.fields.total }}", "id=INV-2291, total=12.5"),
    ("{{ item.fields.tags[1] }}", "b"),
    ("{{ item.fields.tags }}", '["a", "b"]'),  # not a string: written as JSON
    ('{{ item["odd key"] }}', "1"),
    ("{{ sample.output_text }}", '{"id": "INV-2291"}'),
    ("{{ sample.output_json.id }}", "INV-2291"),
    ("no placeholders", "no placeholders"),
])
def test_render_fills_placeholders(template, expected):
    assert render(template, make_sample('{"id": "INV-2291"}'), ITEM) == expected


def test_output_json_of_an_answer_that_is_not_json_fails_as_the_models_fault():
    with pytest.raises(GradeFailure) as caught:
        render("{{ sample.output_json.id }}", make_sample("INV-2291"), ITEM)
    assert caught.value.kind == "sample_parse_error" and "not JSON" in caught.value.reason


def test_a_json_answer_without_the_field_is_also_the_models_fault():
    with pytest.raises(GradeFailure) as caught:
        render("{{ sample.output_json.id }}", make_sample('{"other": 1}'), ITEM)
    assert caught.value.kind == "sample_parse_error" and "'id'" in caught.value.reason


def test_a_missing_item_field_is_an_invalid_variable():
    with pytest.raises(GradeFailure) as caught:
        render("{{ item.reference }}", make_sample("x"), ITEM)
    assert caught.value.kind == "invalid_variable_error" and "no field 'reference'" in caught.value.reason


def test_make_sample_parses_json_objects_and_arrays_only():
    assert make_sample('{"a": 1}')["output_json"] == {"a": 1}
    assert make_sample("[1, 2]")["output_json"] == [1, 2]
    assert make_sample("42")["output_json"] is None and make_sample("hello")["output_json"] is None
    assert make_sample("hi")["choices"][0]["message"] == {"role": "assistant", "content": "hi"}


@pytest.mark.parametrize("template,problem", [
    ("{{ foo.bar }}", "must start with item or sample"),
    ("{{ item }}", "names the whole item"),
    ("{{ sample.text }}", "a sample has output_text"),
    ("{{ item.a..b }}", "not a path"),
])
def test_bad_templates_are_found_when_checked(template, problem):
    assert problem in check_template(template)


def test_parse_path_steps():
    assert parse_path("item.a[0].b") == ("item", ["a", 0, "b"])
    assert parse_path(" sample.output_json ") == ("sample", ["output_json"])
