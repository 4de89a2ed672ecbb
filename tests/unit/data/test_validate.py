"""Validation: each reason code, and valid records of each kind pass."""
import pytest

from tunelab.data.validate import validate_record


def user(content="question"):
    return {"role": "user", "content": content}


def assistant(content="answer"):
    return {"role": "assistant", "content": content}


def system(content="Be brief."):
    return {"role": "system", "content": content}


def chat(*messages):
    return {"messages": list(messages)}


def reason(record, kind, **kwargs):
    problem = validate_record(record, kind, **kwargs)
    return problem.reason if problem else None


# --- valid records -------------------------------------------------------------------------

@pytest.mark.parametrize("record, kind", [
    (chat(user(), assistant()), "generative"),
    (chat(system(), user(), assistant(), user("more"), assistant("sure")), "generative"),
    ({**chat(user(), assistant()), "meta": {"id": "1", "group": "a"}}, "generative"),
    ({"prompt": "Say hi", "chosen": "Hi!", "rejected": "No."}, "preference"),
    ({"prompt": [system(), user("Say hi")], "chosen": "Hi!", "rejected": "No."}, "preference"),
    ({"prompt": [user(), assistant(), user("again")], "chosen": "a", "rejected": "b"}, "preference"),
    ({"text": "great film", "label": "pos"}, "classification"),
])
def test_valid_records_pass(record, kind):
    assert validate_record(record, kind) is None


def test_valid_label_in_declared_set_passes():
    assert validate_record({"text": "t", "label": "pos"}, "classification", labels={"pos", "neg"}) is None


# --- wrong_type ----------------------------------------------------------------------------

@pytest.mark.parametrize("record, kind, detail", [
    ({"messages": "hi"}, "generative", "messages must be a list, got str"),
    (chat(user(), "answer"), "generative", "message 2 must be an object, got str"),
    (chat(user(), assistant(["a", "b"])), "generative", "message 2 must be a string, got list"),
    (chat(user(None), assistant()), "generative", "message 1 must be a string, got NoneType"),
    ({"prompt": 5, "chosen": "a", "rejected": "b"}, "preference",
     "prompt must be a string or a list of messages, got int"),
    ({"prompt": "p", "chosen": ["a"], "rejected": "b"}, "preference", "chosen must be a string, got list"),
    ({"prompt": "p", "chosen": "a", "rejected": 2}, "preference", "rejected must be a string, got int"),
    ({"text": 42, "label": "pos"}, "classification", "text must be a string, got int"),
])
def test_wrong_type(record, kind, detail):
    problem = validate_record(record, kind)
    assert (problem.reason, problem.detail) == ("wrong_type", detail)


# --- missing_field -------------------------------------------------------------------------

@pytest.mark.parametrize("message", [{"content": "hi"}, {"role": "user"}, {}])
def test_message_without_role_or_content_is_missing_field(message):
    problem = validate_record(chat(user(), assistant(), message, assistant()), "generative")
    assert (problem.reason, problem.detail) == ("missing_field", "message 3 lacks 'role' or 'content'")


# --- empty_content -------------------------------------------------------------------------

@pytest.mark.parametrize("record, kind, detail", [
    (chat(), "generative", "messages is an empty list"),
    (chat(user(""), assistant()), "generative", "message 1 is empty"),
    (chat(user(), assistant(" \n\t ")), "generative", "message 2 is empty"),
    ({"prompt": [], "chosen": "a", "rejected": "b"}, "preference", "messages is an empty list"),
    ({"prompt": "   ", "chosen": "a", "rejected": "b"}, "preference", "prompt is empty"),
    ({"prompt": "p", "chosen": "", "rejected": "b"}, "preference", "chosen is empty"),
    ({"text": "\n", "label": "pos"}, "classification", "text is empty"),
    ({"text": "t", "label": ""}, "classification", "label is empty"),
])
def test_empty_content(record, kind, detail):
    problem = validate_record(record, kind)
    assert (problem.reason, problem.detail) == ("empty_content", detail)


# --- unknown_role --------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["tool", "human", "Assistant", None])
def test_unknown_role(role):
    problem = validate_record(chat(user(), {"role": role, "content": "x"}), "generative")
    assert problem.reason == "unknown_role"
    assert problem.detail == f"message 2 has role {role!r}; expected one of system, user, assistant"


# --- roles_out_of_order --------------------------------------------------------------------

def test_user_after_user_is_out_of_order():
    problem = validate_record(chat(user(), user("again"), assistant()), "generative")
    assert problem.reason == "roles_out_of_order"
    assert problem.detail == "message 2 is 'user' after 'user'; expected 'assistant'"


def test_system_not_first_is_out_of_order():
    problem = validate_record(chat(user(), assistant(), system(), user(), assistant()), "generative")
    assert problem.reason == "roles_out_of_order"
    assert problem.detail == "message 3 is 'system' after 'assistant'; expected 'user'"


def test_two_system_messages_are_out_of_order():
    assert reason(chat(system(), system(), user(), assistant()), "generative") == "roles_out_of_order"


def test_assistant_first_is_out_of_order():
    problem = validate_record(chat(assistant(), user(), assistant()), "generative")
    assert problem.reason == "roles_out_of_order"
    assert problem.detail == "message 1 is 'assistant' after 'the start'; expected 'system' or 'user'"


def test_assistant_after_assistant_is_out_of_order():
    assert reason(chat(user(), assistant(), assistant()), "generative") == "roles_out_of_order"


def test_assistant_straight_after_system_is_out_of_order():
    assert reason(chat(system(), assistant()), "generative") == "roles_out_of_order"


# --- no_final_assistant --------------------------------------------------------------------

@pytest.mark.parametrize("messages, last", [([user()], "user"), ([system()], "system"),
                                            ([user(), assistant(), user()], "user")])
def test_no_final_assistant(messages, last):
    problem = validate_record(chat(*messages), "generative")
    assert problem.reason == "no_final_assistant"
    assert problem.detail == f"the conversation ends with {last!r}, not 'assistant'"


# --- preference prompts --------------------------------------------------------------------

def test_preference_prompt_list_must_end_with_user():
    record = {"prompt": [user(), assistant()], "chosen": "a", "rejected": "b"}
    problem = validate_record(record, "preference")
    assert (problem.reason, problem.detail) == ("roles_out_of_order",
                                                "the prompt must end with a 'user' message")


def test_preference_prompt_of_only_system_must_end_with_user():
    assert reason({"prompt": [system()], "chosen": "a", "rejected": "b"}, "preference") == "roles_out_of_order"


def test_preference_prompt_list_is_checked_like_a_conversation():
    record = {"prompt": [user(), user("again")], "chosen": "a", "rejected": "b"}
    assert reason(record, "preference") == "roles_out_of_order"
    record = {"prompt": [{"role": "tool", "content": "x"}], "chosen": "a", "rejected": "b"}
    assert reason(record, "preference") == "unknown_role"
    record = {"prompt": [user("  ")], "chosen": "a", "rejected": "b"}
    problem = validate_record(record, "preference")
    assert (problem.reason, problem.detail) == ("empty_content", "prompt message 1 is empty")


# --- identical_pair ------------------------------------------------------------------------

@pytest.mark.parametrize("chosen, rejected", [("Same.", "Same."), ("Same.", "  Same.\n")])
def test_identical_pair(chosen, rejected):
    problem = validate_record({"prompt": "p", "chosen": chosen, "rejected": rejected}, "preference")
    assert (problem.reason, problem.detail) == ("identical_pair", "chosen and rejected are the same text")


def test_pair_differing_in_case_is_not_identical():
    assert validate_record({"prompt": "p", "chosen": "Yes", "rejected": "yes"}, "preference") is None


# --- unknown_label -------------------------------------------------------------------------

def test_unknown_label():
    problem = validate_record({"text": "t", "label": "meh"}, "classification", labels={"pos", "neg"})
    assert problem.reason == "unknown_label"
    assert problem.detail == "label 'meh' is not in the declared set ['neg', 'pos'] (data.labels)"


def test_any_label_passes_without_a_declared_set():
    assert validate_record({"text": "t", "label": "meh"}, "classification", labels=None) is None


# --- control_characters --------------------------------------------------------------------

@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\x0b", "\x0c"])
def test_control_characters(char):
    problem = validate_record({"text": f"ab{char}c", "label": "pos"}, "classification")
    assert problem.reason == "control_characters"
    assert problem.detail == f"text contains control character U+{ord(char):04X} at position 3"


def test_control_character_in_a_message_names_the_message():
    problem = validate_record(chat(user(), assistant("ok\x00")), "generative")
    assert problem.reason == "control_characters"
    assert problem.detail == "message 2 contains control character U+0000 at position 3"


def test_tab_newline_and_carriage_return_are_fine():
    text = "col1\tcol2\nrow\r\nend"
    assert validate_record({"text": text, "label": "pos"}, "classification") is None
    assert validate_record(chat(user(text), assistant(text)), "generative") is None


# --- too_long ------------------------------------------------------------------------------

def test_too_long_counts_all_text_fields():
    record = chat(user("a" * 60), assistant("b" * 50))  # 110 characters in all
    assert validate_record(record, "generative", max_chars=110) is None
    problem = validate_record(record, "generative", max_chars=109)
    assert problem.reason == "too_long"
    assert problem.detail == "110 characters, over the limit of 109 (data.max_chars)"


def test_too_long_formats_thousands():
    problem = validate_record({"text": "x" * 1500, "label": "pos"}, "classification", max_chars=1000)
    assert problem.detail == "1,500 characters, over the limit of 1,000 (data.max_chars)"


def test_too_long_preference_counts_prompt_and_both_answers():
    record = {"prompt": [user("p" * 10)], "chosen": "c" * 10, "rejected": "r" * 10}
    assert validate_record(record, "preference", max_chars=30) is None
    assert reason(record, "preference", max_chars=29) == "too_long"


def test_structural_problem_is_reported_before_length():
    record = chat(user("x" * 500))
    assert reason(record, "generative", max_chars=10) == "no_final_assistant"


@pytest.mark.parametrize("weight", [2, -1, 0.5, "1", None, True])
def test_a_message_weight_other_than_0_or_1_is_bad_weight(weight):
    problem = validate_record(chat(user(), {**assistant(), "weight": weight}), "generative")
    assert problem.reason == "bad_weight" and "message 2" in problem.detail


def test_weights_0_and_1_pass_unless_nothing_is_left_to_train():
    assert validate_record(chat(user(), {**assistant(), "weight": 0}, user(), {**assistant(), "weight": 1}),
                           "generative") is None
    problem = validate_record(chat(user(), {**assistant(), "weight": 0}), "generative")
    assert problem.reason == "nothing_to_train"
