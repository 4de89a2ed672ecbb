"""Python graders run the grader's own grade(sample, item) in a worker process: only when enabled,
with a time limit (a grader that loops is stopped), without network, and a grader that raises or
returns something other than a number is a zero with the reason, after which grading goes on."""

import pytest

from tunelab.errors import TunelabError
from tunelab.graders import GraderRuntime, grade, load_grader


def python_grader(body: str, name: str = "code") -> dict:
    return {"type": "python", "name": name, "source": body}


EXACT = python_grader("def grade(sample, item):\n"
                      "    print('printing does not disturb the replies')\n"
                      "    return 1.0 if sample['output_text'] == item['answer'] else 0.25\n")


@pytest.fixture
def runtime():
    with GraderRuntime(allow_python=True, python_timeout_s=1.0) as rt:
        yield rt


def test_the_graders_own_code_scores_answers(runtime):
    assert grade(EXACT, "pmal", {"answer": "pmal"}, runtime=runtime).score == 1.0
    assert grade(EXACT, "lamp", {"answer": "pmal"}, runtime=runtime).score == 0.25


def test_sample_holds_output_json_as_openai_gives_it(runtime):
    spec = python_grader("def grade(sample, item):\n"
                         "    if sample['output_json'] is None:\n        return -1\n"
                         "    return sample['output_json']['total'] / item['max']\n")
    assert grade(spec, '{"total": 3}', {"max": 4}, runtime=runtime).score == 0.75
    assert grade(spec, "three", {"max": 4}, runtime=runtime).score == -1.0  # no range: the code's number


@pytest.mark.slow  # trains for seconds, or starts processes
def test_a_grader_that_loops_forever_is_stopped_and_grading_goes_on(runtime):
    looping = python_grader("def grade(sample, item):\n    while True:\n        pass\n", name="loops")
    stuck = grade(looping, "x", {}, runtime=runtime)  # returns at all: the loop was stopped
    assert (stuck.score, stuck.error) == (0.0, "unresponsive_reward_error")
    assert "did not answer within 1 s" in stuck.reason
    assert grade(looping, "x", {}, runtime=runtime).error == "unresponsive_reward_error"  # a fresh process each time
    assert grade(EXACT, "a", {"answer": "a"}, runtime=runtime).score == 1.0  # other graders unaffected


@pytest.mark.parametrize("body,reason", [
    ("def grade(sample, item):\n    return 1 / 0\n", "ZeroDivisionError: division by zero (line 2)"),
    ("def grade(sample, item):\n    return item['missing']\n", "KeyError: 'missing' (line 2)"),
    ("def grade(sample, item):\n    return 'high'\n", "returned 'high', not a number"),
    ("def grade(sample, item):\n    raise SystemExit(3)\n", "SystemExit"),
    ("import not_a_module_anywhere\ndef grade(sample, item):\n    return 1\n", "does not load"),
])
def test_a_grader_that_raises_is_a_zero_with_the_reason(runtime, body, reason):
    result = grade(python_grader(body), "x", {}, runtime=runtime)
    assert result.score == 0.0 and result.grader_failed and reason in result.reason
    assert grade(EXACT, "a", {"answer": "a"}, runtime=runtime).score == 1.0


def test_a_grader_has_no_network(runtime):
    spec = python_grader("import socket\n"
                         "def grade(sample, item):\n"
                         "    socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
                         "    return 1\n")
    result = grade(spec, "x", {}, runtime=runtime)
    assert result.score == 0.0 and "network access is disabled" in result.reason


def test_a_grader_cannot_exhaust_memory():
    spec = python_grader("def grade(sample, item):\n    block = bytearray(4 * 2**30)\n    return 1\n")
    with GraderRuntime(allow_python=True, python_timeout_s=5.0, python_memory_mb=512) as runtime:
        result = grade(spec, "x", {}, runtime=runtime)
    assert result.score == 0.0 and "MemoryError" in result.reason


def test_python_graders_are_refused_unless_enabled():
    with pytest.raises(TunelabError, match="python graders are off"):
        grade(EXACT, "a", {"answer": "a"})
    nested = {"type": "multi", "name": "m", "calculate_output": "code",
              "graders": {"code": EXACT}}
    with pytest.raises(TunelabError, match=r"grader 'm' runs python code \(code\)"):
        GraderRuntime().check_allowed(load_grader(nested))


def test_the_parent_process_never_runs_the_source():
    # validation parses the code; a grade function that is not there is refused without running it
    spec = python_grader("raise RuntimeError('ran at load')\ndef helper(sample, item):\n    return 1\n")
    with pytest.raises(TunelabError, match="must define grade"):
        load_grader(spec)
