"""Prompt records for reinforcement fine-tuning in `tunelab data prepare`: chat records whose last
turn is the user's, with top-level fields kept for the grader; detected, validated, cleaned,
redacted, deduplicated (on the prompt) and split like every other kind, nothing dropped silently."""
import json

from tunelab.config import load_config
from tunelab.data import prepare
from tunelab.data.formats import detect_format, format_of, to_canonical
from tunelab.data.validate import validate_record


def prompt(text: str, **fields) -> dict:
    return {"messages": [{"role": "system", "content": "Answer with the invoice id."},
                         {"role": "user", "content": text}], **fields}


def test_records_ending_with_the_users_turn_are_prompts():
    assert format_of(prompt("which invoice?")) == "prompts"
    assert format_of({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) == "chat"
    assert detect_format([prompt("a"), prompt("b")]) == "prompts"


def test_conversion_keeps_every_field_for_the_grader_and_meta_apart():
    record = to_canonical(prompt("which invoice?", answer="INV-2291", fields={"total": 12.5},
                                 meta={"group": "billing"}), "prompts")
    assert record == {**prompt("which invoice?"), "answer": "INV-2291", "fields": {"total": 12.5},
                      "meta": {"group": "billing"}}


def test_a_prompt_must_end_with_the_user():
    answered = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "answer": "a"}
    problem = validate_record(answered, "prompt")
    assert problem.reason == "no_final_user" and "ends with 'assistant'" in problem.detail
    assert validate_record(prompt("q", answer="a"), "prompt") is None
    assert validate_record({"messages": [{"role": "user", "content": " "}]}, "prompt").reason == "empty_content"


def varied(i: int) -> str:
    """Prompts that differ in more than a number (templated ones are near duplicates of each other)."""
    words = "refund parcel courier invoice warranty address billing ticket label return".split()
    return f"{words[i % 10]} {words[i * 3 % 10]} case {i}: {' '.join(words[(i + k) % 10] for k in range(i % 4 + 2))}"


def test_prepare_keeps_fields_splits_and_deduplicates_prompts(tmp_path, write_jsonl):
    rows = [prompt(varied(i), answer=f"INV-{i}") for i in range(40)]
    rows.append(prompt(varied(3), answer="INV-3"))          # exact duplicate
    rows.append(prompt(varied(5), answer="INV-0005"))       # same prompt, other reference
    rows.append({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    rows.append(prompt("mail ana@example.com about INV-7?", answer="ana@example.com"))
    cfg = load_config(None, ["data.split.val=0.2", "data.split.test=0.2"]).data
    cfg = cfg.model_copy(update={"inputs": [str(write_jsonl("prompts.jsonl", rows))], "out_dir": str(tmp_path / "out")})
    result = prepare.run(cfg, show_progress=False)
    report = result.report
    assert report["kind"] == "prompt"
    assert report["counts"] == {"input": 44, "kept": 41, "rejected": 1, "duplicates": 2, "pii_redacted": 1}
    kept = [json.loads(line) for split in ("train", "val", "test")
            for line in (tmp_path / "out" / f"{split}.jsonl").read_text().splitlines()]
    assert all(r["messages"][-1]["role"] == "user" and "answer" in r and r["meta"]["source"] for r in kept)
    splits = report["splits"]
    assert splits["train"] and splits["val"] and splits["test"] and sum(splits.values()) == 41
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rejects] == ["no_final_user"]
    duplicates = [json.loads(line) for line in (tmp_path / "out" / "duplicates.jsonl").read_text().splitlines()]
    conflict = next(d for d in duplicates if "reference_conflict" in d)
    assert conflict["reference_conflict"] == [{"answer": "INV-5"}, {"answer": "INV-0005"}]
    redacted = next(r for r in kept if "mail" in r["messages"][-1]["content"])
    # PII is redacted in the grader's fields too, so prompt and reference stay consistent
    assert "<EMAIL>" in redacted["messages"][-1]["content"] and redacted["answer"] == "<EMAIL>"
