"""`tunelab grade GRADER --data ITEMS --predictions ANSWERS`, run as a user runs it: the mean reward,
the worst items with their reasons, and a JSONL of every item's result; python graders only with
--allow-python; bad input is one sentence and exit code 2."""
import json

from cli_helpers import tunelab, write_jsonl

EXACT = {"type": "string_check", "name": "exact", "input": "{{ sample.output_text }}",
         "reference": "{{ item.answer }}", "operation": "eq"}
ITEMS = [{"messages": [{"role": "user", "content": f"invoice {i}?"}], "answer": f"INV-{i}"} for i in range(4)]
ANSWERS = ["INV-0",                                     # a JSON string
           {"output_text": "INV-1"},                     # OpenAI's name
           {"prediction": "INV-7"},                      # `tunelab eval`'s predictions.jsonl
           {"messages": [{"role": "user", "content": "invoice 3?"}, {"role": "assistant", "content": "inv-3"}]}]


def test_grade_prints_the_mean_and_the_worst_items_and_writes_every_result(tmp_path):
    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps(EXACT))
    items, answers = write_jsonl(tmp_path / "items.jsonl", ITEMS), write_jsonl(tmp_path / "answers.jsonl", ANSWERS)
    out = tunelab("grade", grader, "--data", items, "--predictions", answers, "--worst", "2",
                  "--out", tmp_path / "grades.jsonl").stdout
    assert "exact (string_check): mean reward 0.5000 (std 0.5000) over 4 items; grader failures: 0" in out
    assert "'INV-7' is not equal to 'INV-2'" in out and "'inv-3' is not equal to 'INV-3'" in out
    rows = [json.loads(line) for line in (tmp_path / "grades.jsonl").read_text().splitlines()]
    assert [(r["index"], r["score"], r["output_text"]) for r in rows] == [
        (1, 1.0, "INV-0"), (2, 1.0, "INV-1"), (3, 0.0, "INV-7"), (4, 0.0, "inv-3")]
    assert rows[2]["item"] == ITEMS[2] and rows[2]["reason"] and rows[0]["reason"] is None


def test_python_graders_need_allow_python(tmp_path):
    grader = tmp_path / "code.json"
    grader.write_text(json.dumps({"type": "python", "name": "code",
                                  "source": "def grade(sample, item):\n    return len(item['answer']) / 0\n"}))
    items, answers = write_jsonl(tmp_path / "items.jsonl", ITEMS), write_jsonl(tmp_path / "answers.jsonl", ANSWERS)
    refused = tunelab("grade", grader, "--data", items, "--predictions", answers, check=False, cwd=tmp_path)
    assert refused.returncode == 2 and "python graders are off" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "grades.jsonl").exists()
    ran = tunelab("grade", grader, "--data", items, "--predictions", answers, "--allow-python", cwd=tmp_path).stdout
    assert "mean reward 0.0000" in ran and "grader failures: 4" in ran and "ZeroDivisionError" in ran


def test_bad_input_is_one_sentence(tmp_path):
    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps({**EXACT, "operation": "equals"}))
    items, answers = write_jsonl(tmp_path / "items.jsonl", ITEMS), write_jsonl(tmp_path / "answers.jsonl", ANSWERS[:3])
    bad_grader = tunelab("grade", grader, "--data", items, "--predictions", answers, check=False, cwd=tmp_path)
    assert bad_grader.returncode == 2 and "grader 'exact' field 'operation' must be one of eq" in bad_grader.stderr
    grader.write_text(json.dumps(EXACT))
    short = tunelab("grade", grader, "--data", items, "--predictions", answers, check=False, cwd=tmp_path)
    assert short.returncode == 2 and "4 items but 3 answers" in short.stderr
