"""Formats: detection by keys and conversion to the canonical records of DESIGN.md."""
import pytest

from tunelab.data.formats import KIND_OF_FORMAT, detect_format, format_of, to_canonical
from tunelab.data.records import RecordProblem

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
SHAREGPT = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
ALPACA = {"instruction": "Translate", "input": "chat", "output": "cat"}
PROMPT_COMPLETION = {"prompt": "2+2=", "completion": "4"}
PREFERENCE = {"prompt": "Say hi", "chosen": "Hi!", "rejected": "No."}
CLASSIFICATION = {"text": "great film", "label": "pos"}


def problem_of(value, fmt, **kwargs):
    with pytest.raises(RecordProblem) as info:
        to_canonical(value, fmt, **kwargs)
    return info.value.problem


# --- detection -----------------------------------------------------------------------------

@pytest.mark.parametrize("value, fmt", [
    (CHAT, "chat"),
    (SHAREGPT, "sharegpt"),
    (ALPACA, "alpaca"),
    ({"instruction": "Say hi", "output": "hi"}, "alpaca"),  # input is optional
    (PROMPT_COMPLETION, "prompt_completion"),
    (PREFERENCE, "preference"),
    (CLASSIFICATION, "classification"),
])
def test_detect_format_for_each_format(value, fmt):
    assert detect_format([value, value]) == fmt
    assert format_of(value) == fmt


def test_every_format_has_a_kind():
    assert KIND_OF_FORMAT == {"chat": "generative", "sharegpt": "generative", "alpaca": "generative",
                              "prompt_completion": "generative", "preference": "preference",
                              "openai_preference": "preference",
                              "classification": "classification", "prompts": "prompt"}


def test_preference_wins_over_prompt_completion_keys():
    assert format_of({"prompt": "p", "chosen": "a", "rejected": "b", "completion": "c"}) == "preference"


def test_classification_with_custom_columns():
    rows = [{"review": "good", "stars": 5}, {"review": "bad", "stars": 1}]
    assert detect_format(rows) is None  # default text/label columns are absent
    assert detect_format(rows, text_column="review", label_column="stars") == "classification"
    assert to_canonical(rows[0], "classification", text_column="review", label_column="stars") == {
        "text": "good", "label": "5"}


def test_detect_format_majority_vote_ignores_unrecognised_values():
    values = [CHAT, PREFERENCE, "a string", 42, {"other": 1}, PREFERENCE, None, PREFERENCE, CHAT]
    assert detect_format(values) == "preference"


def test_detect_format_of_nothing_recognisable_is_none():
    assert detect_format([]) is None
    assert detect_format([[1, 2], "x", {"unrelated": True}]) is None
    assert format_of([CHAT]) is None


def test_detect_format_reads_only_a_sample():
    # after 200 votes the iterator is no longer consumed, so a huge file costs nothing extra
    def values():
        for _ in range(200):
            yield CLASSIFICATION
        raise AssertionError("read past the detection sample")
    assert detect_format(values()) == "classification"


# --- chat ----------------------------------------------------------------------------------

def test_chat_keeps_messages():
    assert to_canonical(CHAT, "chat") == {"messages": CHAT["messages"]}


def test_chat_without_messages_value_is_missing_field():
    problem = problem_of({"messages": None}, "chat")
    assert (problem.reason, problem.detail) == ("missing_field", "missing field 'messages'")


# --- ShareGPT ------------------------------------------------------------------------------

def test_sharegpt_maps_roles_and_system_key():
    value = {
        "system": "Be brief.",
        "conversations": [
            {"from": "human", "value": "a"}, {"from": "gpt", "value": "b"},
            {"from": "User", "value": "c"}, {"from": "ChatGPT", "value": "d"},
            {"from": "user", "value": "e"}, {"from": "bot", "value": "f"},
            {"from": "user", "value": "g"}, {"from": "model", "value": "h"},
            {"from": "user", "value": "i"}, {"from": "assistant", "value": "j"},
        ],
    }
    assert to_canonical(value, "sharegpt") == {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"},
        {"role": "user", "content": "e"}, {"role": "assistant", "content": "f"},
        {"role": "user", "content": "g"}, {"role": "assistant", "content": "h"},
        {"role": "user", "content": "i"}, {"role": "assistant", "content": "j"},
    ]}


def test_sharegpt_system_turn_and_blank_system_key():
    value = {"system": "  ", "conversations": [{"from": "system", "value": "S"},
                                                 {"from": "human", "value": "q"},
                                                 {"from": "gpt", "value": "a"}]}
    assert to_canonical(value, "sharegpt")["messages"] == [
        {"role": "system", "content": "S"}, {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"}]


@pytest.mark.parametrize("value, reason, detail", [
    ({"conversations": "hi"}, "wrong_type", "field 'conversations' must be a list, got str"),
    ({"conversations": [{"from": "human"}]}, "wrong_type",
     "conversation turn 1 must be an object with 'from' and 'value'"),
    ({"conversations": [{"from": "human", "value": "q"}, "a"]}, "wrong_type",
     "conversation turn 2 must be an object with 'from' and 'value'"),
    ({"conversations": [{"from": "robot", "value": "q"}]}, "wrong_type",
     "conversation turn 1 has unknown speaker 'robot'"),
    ({"conversations": None}, "missing_field", "missing field 'conversations'"),
])
def test_sharegpt_problems(value, reason, detail):
    problem = problem_of(value, "sharegpt")
    assert (problem.reason, problem.detail) == (reason, detail)


# --- alpaca --------------------------------------------------------------------------------

def test_alpaca_with_input_joins_it_to_the_instruction():
    assert to_canonical(ALPACA, "alpaca") == {"messages": [
        {"role": "user", "content": "Translate\n\nchat"},
        {"role": "assistant", "content": "cat"}]}


@pytest.mark.parametrize("extra", [{}, {"input": ""}, {"input": None}])
def test_alpaca_without_input(extra):
    value = {"instruction": "Say hi", "output": "hi", **extra}
    assert to_canonical(value, "alpaca") == {"messages": [
        {"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}]}


def test_alpaca_with_system():
    value = {"system": "You translate.", "instruction": "Translate", "input": "chat", "output": "cat"}
    assert to_canonical(value, "alpaca") == {"messages": [
        {"role": "system", "content": "You translate."},
        {"role": "user", "content": "Translate\n\nchat"},
        {"role": "assistant", "content": "cat"}]}


def test_alpaca_blank_system_is_left_out():
    value = {"system": " ", "instruction": "Say hi", "output": "hi"}
    assert [m["role"] for m in to_canonical(value, "alpaca")["messages"]] == ["user", "assistant"]


@pytest.mark.parametrize("value, reason, detail", [
    ({"instruction": "x"}, "missing_field", "missing field 'output'"),
    ({"input": "x"}, "missing_field", "missing fields 'instruction', 'output'"),
    ({"instruction": 3, "output": "x"}, "wrong_type", "field 'instruction' must be a string, got int"),
    ({"instruction": "x", "input": ["a"], "output": "y"}, "wrong_type",
     "field 'input' must be a string, got list"),
])
def test_alpaca_problems(value, reason, detail):
    problem = problem_of(value, "alpaca")
    assert (problem.reason, problem.detail) == (reason, detail)


# --- prompt / completion -------------------------------------------------------------------

def test_prompt_completion_with_string_prompt():
    assert to_canonical(PROMPT_COMPLETION, "prompt_completion") == {"messages": [
        {"role": "user", "content": "2+2="}, {"role": "assistant", "content": "4"}]}


def test_prompt_completion_with_message_list_prompt_and_trl_completion():
    value = {"prompt": [{"role": "system", "content": "Be exact."}, {"role": "user", "content": "2+2?"}],
             "completion": [{"role": "assistant", "content": "4"}]}
    assert to_canonical(value, "prompt_completion") == {"messages": [
        {"role": "system", "content": "Be exact."}, {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"}]}


def test_prompt_completion_missing_completion():
    problem = problem_of({"prompt": "p"}, "prompt_completion")
    assert (problem.reason, problem.detail) == ("missing_field", "missing field 'completion'")


# --- preference ----------------------------------------------------------------------------

def test_preference_with_string_prompt():
    assert to_canonical(PREFERENCE, "preference") == {"prompt": "Say hi", "chosen": "Hi!", "rejected": "No."}


def test_preference_trl_conversational_lists():
    prompt = [{"role": "user", "content": "Say hi"}]
    value = {"prompt": prompt,
             "chosen": [{"role": "assistant", "content": "Hi!"}],
             "rejected": [{"role": "assistant", "content": "No."}]}
    assert to_canonical(value, "preference") == {"prompt": prompt, "chosen": "Hi!", "rejected": "No."}


def test_preference_longer_list_is_kept_for_validation_to_judge():
    two = [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]
    record = to_canonical({"prompt": "p", "chosen": two, "rejected": "r"}, "preference")
    assert record["chosen"] == two


def test_preference_missing_rejected():
    problem = problem_of({"prompt": "p", "chosen": "c", "rejected": None}, "preference")
    assert (problem.reason, problem.detail) == ("missing_field", "missing field 'rejected'")


# --- classification ------------------------------------------------------------------------

def test_classification_string_label_is_stripped():
    assert to_canonical({"text": "t", "label": " pos "}, "classification") == {"text": "t", "label": "pos"}


def test_classification_int_label_becomes_str():
    assert to_canonical({"text": "t", "label": 0}, "classification") == {"text": "t", "label": "0"}
    assert to_canonical({"text": "t", "label": 3}, "classification")["label"] == "3"


@pytest.mark.parametrize("label, type_name", [(True, "bool"), (False, "bool"), (1.5, "float"),
                                              (["a"], "list")])
def test_classification_non_str_int_label_is_wrong_type(label, type_name):
    problem = problem_of({"text": "t", "label": label}, "classification")
    assert problem.reason == "wrong_type"
    assert problem.detail == f"label 'label' must be a string or integer, got {type_name}"


def test_classification_missing_text():
    problem = problem_of({"label": "pos"}, "classification")
    assert (problem.reason, problem.detail) == ("missing_field", "missing field 'text'")


# --- meta ----------------------------------------------------------------------------------

def test_group_column_becomes_meta_group():
    value = {"text": "t", "label": "pos", "dialect": "en-GB"}
    record = to_canonical(value, "classification", group_column="dialect")
    assert record == {"text": "t", "label": "pos", "meta": {"group": "en-GB"}}


def test_group_column_value_is_stringified_and_blank_is_left_out():
    assert to_canonical({"text": "t", "label": "a", "age": 30}, "classification",
                        group_column="age")["meta"] == {"group": "30"}
    assert "meta" not in to_canonical({"text": "t", "label": "a", "age": ""}, "classification",
                                      group_column="age")
    assert "meta" not in to_canonical({"text": "t", "label": "a"}, "classification", group_column="age")


def test_user_meta_is_kept_and_merged_with_group():
    value = {**CHAT, "meta": {"id": "r1", "task": "qa"}, "region": "north"}
    record = to_canonical(value, "chat", group_column="region")
    assert record["meta"] == {"id": "r1", "task": "qa", "group": "north"}
    assert value["meta"] == {"id": "r1", "task": "qa"}  # the input is not mutated


def test_meta_that_is_not_a_mapping_is_ignored():
    assert to_canonical({**ALPACA, "meta": "x"}, "alpaca").keys() == {"messages"}


def test_no_meta_key_without_meta():
    assert "meta" not in to_canonical(PREFERENCE, "preference")


# --- not an object -------------------------------------------------------------------------

@pytest.mark.parametrize("value, type_name", [([1, 2], "list"), ("text", "str"), (None, "NoneType"),
                                              (7, "int")])
def test_non_object_is_not_an_object(value, type_name):
    problem = problem_of(value, "chat")
    assert problem.reason == "not_an_object"
    assert problem.detail == f"expected a JSON object, got {type_name}"


# --- OpenAI's DPO file ---------------------------------------------------------------------

OPENAI_DPO = {"input": {"messages": [{"role": "user", "content": "Say hi"}], "tools": [],
                        "parallel_tool_calls": True},
              "preferred_output": [{"role": "assistant", "content": "Hi!"}],
              "non_preferred_output": [{"role": "assistant", "content": "No."}]}


def test_openai_dpo_lines_are_detected_and_become_preference_records():
    assert format_of(OPENAI_DPO) == "openai_preference"
    assert KIND_OF_FORMAT["openai_preference"] == "preference"
    assert to_canonical(OPENAI_DPO, "openai_preference") == {
        "prompt": [{"role": "user", "content": "Say hi"}], "chosen": "Hi!", "rejected": "No."}


@pytest.mark.parametrize("broken, detail", [
    ({**OPENAI_DPO, "input": "Say hi"}, "'input' must be an object with 'messages'"),
    ({**OPENAI_DPO, "preferred_output": "Hi!"}, "'preferred_output' must be a list holding one assistant message"),
    ({**OPENAI_DPO, "non_preferred_output": [{"role": "user", "content": "No."}]},
     "'non_preferred_output' must be a list holding one assistant message"),
])
def test_a_malformed_openai_dpo_line_is_wrong_type(broken, detail):
    problem = problem_of(broken, "openai_preference")
    assert problem.reason == "wrong_type" and detail in problem.detail
