"""Readers: every format yields RawRecords with the right source, line and problem."""
import itertools
import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunelab.data.readers import read_input, resolve_spec
from tunelab.errors import TunelabError


def read(path, **kwargs):
    return list(read_input(str(path), **kwargs))


def assert_one_sentence_naming(exc: TunelabError, path) -> None:
    message = str(exc)
    assert str(path) in message
    assert message.endswith(".")
    assert "\n" not in message
    assert ". " not in message  # one sentence: no full stop before the final one


# --- JSONL ---------------------------------------------------------------------------------

def test_jsonl_yields_values_with_source_and_line(write_jsonl):
    path = write_jsonl("data.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    records = read(path)
    assert [r.value for r in records] == [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]
    assert [r.line for r in records] == [1, 2]
    assert all(r.source == str(path) and r.unit == "line" and r.problem is None for r in records)
    assert records[1].location == f"{path} line 2"


def test_jsonl_skips_blank_lines_but_keeps_line_numbers(write_jsonl):
    path = write_jsonl("data.jsonl", [{"n": 1}, b"", b"   ", {"n": 2}, b"\t", {"n": 3}])
    records = read(path)
    assert [(r.line, r.value) for r in records] == [(1, {"n": 1}), (4, {"n": 2}), (6, {"n": 3})]


def test_jsonl_unparsable_line_is_yielded_with_problem_and_line(write_jsonl):
    path = write_jsonl("data.jsonl", [{"n": 1}, b'{"n": 2,', {"n": 3}])
    records = read(path)
    assert len(records) == 3
    bad = records[1]
    assert bad.line == 2
    assert bad.value is None
    assert bad.raw == '{"n": 2,'
    assert bad.problem.reason == "unparsable"
    assert bad.problem.detail.startswith("not valid JSON:")
    assert records[0].value == {"n": 1} and records[2].value == {"n": 3}
    assert records[2].problem is None


def test_jsonl_crlf_line_is_parsed_and_raw_is_trimmed(tmp_path):
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b'{"n": 1}\r\nnot json\r\n')
    first, second = read(path)
    assert first.value == {"n": 1}
    assert second.raw == "not json"
    assert second.problem.reason == "unparsable"


def test_jsonl_non_utf8_line_is_yielded_with_problem_and_line(write_jsonl):
    bad_line = b'{"text": "caf\xe9"}'
    path = write_jsonl("data.jsonl", [{"text": "ok"}, bad_line, {"text": "fine"}])
    records = read(path)
    assert len(records) == 3
    bad = records[1]
    assert bad.line == 2
    assert bad.value is None
    assert bad.problem.reason == "non_utf8"
    column = bad_line.index(b"\xe9") + 1
    assert f"0xe9 at column {column}" in bad.problem.detail
    assert bad.raw == '{"text": "caf\\xe9"}'  # the undecodable byte stays visible
    assert records[2].value == {"text": "fine"}


def test_jsonl_encoding_option_decodes_latin1(write_jsonl):
    path = write_jsonl("data.jsonl", [b'{"text": "caf\xe9"}'])
    (record,) = read(path, encoding="latin-1")
    assert record.problem is None
    assert record.value == {"text": "café"}


@pytest.mark.parametrize("line, value", [("[1, 2]", [1, 2]), ('"hello"', "hello"), ("42", 42),
                                         ("null", None)])
def test_jsonl_top_level_non_object_is_parsed_not_rejected(write_jsonl, line, value):
    # whether a non-object can be used is the format stage's decision (not_an_object)
    (record,) = read(write_jsonl("data.jsonl", [line.encode()]))
    assert record.problem is None
    assert record.value == value


def test_ndjson_suffix_is_read_as_jsonl(write_jsonl):
    (record,) = read(write_jsonl("data.ndjson", [{"n": 1}]))
    assert record.value == {"n": 1} and record.unit == "line"


def test_jsonl_with_byte_order_mark_parses_first_line(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"n": 1}\n{"n": 2}\n')
    records = read(path)
    assert [r.value for r in records] == [{"n": 1}, {"n": 2}]
    assert all(r.problem is None for r in records)


# --- JSON array ----------------------------------------------------------------------------

def test_json_array_numbers_items(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps([{"n": 1}, {"n": 2}, "three"], indent=2))
    records = read(path)
    assert [(r.unit, r.line, r.value) for r in records] == [
        ("item", 1, {"n": 1}), ("item", 2, {"n": 2}), ("item", 3, "three")]
    assert records[0].source == str(path)
    assert records[2].location == f"{path} item 3"


def test_json_array_after_leading_whitespace_and_bom(tmp_path):
    path = tmp_path / "data.json"
    path.write_bytes(b'\xef\xbb\xbf\n  [{"n": 1}]')
    (record,) = read(path)
    assert (record.unit, record.line, record.value) == ("item", 1, {"n": 1})


def test_json_file_holding_jsonl_is_read_as_lines(write_jsonl):
    path = write_jsonl("data.json", [{"n": 1}, b"", b"{oops", {"n": 2}])
    records = read(path)
    assert [(r.unit, r.line) for r in records] == [("line", 1), ("line", 3), ("line", 4)]
    assert records[0].value == {"n": 1}
    assert records[1].problem.reason == "unparsable"
    assert records[2].value == {"n": 2}


def test_json_array_that_does_not_parse_raises_naming_path(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"n": 1},\n {"n": ]')
    with pytest.raises(TunelabError) as info:
        read(path)
    assert "not valid JSON" in str(info.value)
    assert "line 2" in str(info.value)
    assert_one_sentence_naming(info.value, path)


def test_json_array_not_in_encoding_raises_naming_path(tmp_path):
    path = tmp_path / "latin.json"
    path.write_bytes(b'[{"text": "caf\xe9"}]')
    with pytest.raises(TunelabError) as info:
        read(path)
    assert "not utf-8" in str(info.value)
    assert_one_sentence_naming(info.value, path)
    (record,) = read(path, encoding="latin-1")
    assert record.value == {"text": "café"}


# --- CSV and TSV ---------------------------------------------------------------------------

def test_csv_rows_become_dicts_with_header_offset(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,label\nhello,pos\nbye,neg\n")
    records = read(path)
    assert [(r.line, r.value) for r in records] == [
        (2, {"text": "hello", "label": "pos"}), (3, {"text": "bye", "label": "neg"})]
    assert all(r.unit == "line" and r.source == str(path) and r.problem is None for r in records)


def test_csv_quoted_multiline_field_keeps_line_numbers(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text('text,label\n"first\nsecond\nthird",pos\nnext,neg\n"a, b",pos\n')
    records = read(path)
    assert [r.line for r in records] == [2, 5, 6]
    assert records[0].value == {"text": "first\nsecond\nthird", "label": "pos"}
    assert records[1].value == {"text": "next", "label": "neg"}
    assert records[2].value == {"text": "a, b", "label": "pos"}


def test_csv_crlf_and_blank_rows(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b'text,label\r\n"a\r\nb",x\r\n\r\n,\r\nc,y\r\n')
    records = read(path)
    assert [(r.line, r.value) for r in records] == [
        (2, {"text": "a\r\nb", "label": "x"}), (6, {"text": "c", "label": "y"})]


def test_csv_header_is_stripped_of_spaces_and_bom(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"\xef\xbb\xbf text , label \nhi,pos\n")
    (record,) = read(path)
    assert record.value == {"text": "hi", "label": "pos"}


def test_csv_wrong_field_count_is_malformed_row(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,label\nok,pos\ntoo,many,fields\nshort\nfine,neg\n")
    records = read(path)
    assert [r.line for r in records] == [2, 3, 4, 5]
    too_many, too_few = records[1], records[2]
    assert too_many.problem.reason == "malformed_row"
    assert too_many.problem.detail == "3 fields where the header has 2"
    assert too_many.raw == "too,many,fields"
    assert too_many.value is None
    assert too_few.problem.reason == "malformed_row"
    assert too_few.problem.detail == "1 fields where the header has 2"
    assert records[3].value == {"text": "fine", "label": "neg"}


def test_csv_non_utf8_row_is_rejected_alone(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"text,label\nok,pos\ncaf\xe9,neg\nfine,neg\n")
    records = read(path)
    assert [r.line for r in records] == [2, 3, 4]
    bad = records[1]
    assert bad.problem.reason == "non_utf8"
    assert bad.value is None
    assert bad.raw == "caf\\xe9,neg"
    assert records[0].value == {"text": "ok", "label": "pos"}
    assert records[2].value == {"text": "fine", "label": "neg"}


def test_csv_latin1_encoding_option(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes("text,label\ncafé,pos\n".encode("latin-1"))
    (record,) = read(path, encoding="latin-1")
    assert record.problem is None
    assert record.value == {"text": "café", "label": "pos"}


def test_csv_with_header_only_yields_nothing(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,label\n")
    assert read(path) == []


def test_tsv_splits_on_tabs(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text("text\tlabel\nhello, world\tpos\n\"two\nlines\"\tneg\nbad row\n")
    records = read(path)
    assert [r.line for r in records] == [2, 3, 5]
    assert records[0].value == {"text": "hello, world", "label": "pos"}
    assert records[1].value == {"text": "two\nlines", "label": "neg"}
    assert records[2].problem.reason == "malformed_row"


# --- Parquet -------------------------------------------------------------------------------

def test_parquet_rows_are_numbered_across_row_groups(tmp_path):
    path = tmp_path / "data.parquet"
    table = pa.table({"text": ["a", "b", "c", "d", "e"], "label": [0, 1, 0, 1, 1]})
    pq.write_table(table, path, row_group_size=2)
    records = read(path)
    assert [(r.unit, r.line) for r in records] == [("row", n) for n in range(1, 6)]
    assert records[0].value == {"text": "a", "label": 0}
    assert records[4].value == {"text": "e", "label": 1}
    assert records[2].source == str(path)


def test_pq_suffix_and_nested_columns(tmp_path):
    path = tmp_path / "chat.pq"
    messages = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]]
    pq.write_table(pa.table({"messages": messages}), path)
    (record,) = read(path)
    assert record.value == {"messages": messages[0]}


def test_corrupt_parquet_raises_naming_path(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(TunelabError) as info:
        read(path)
    assert str(path) in str(info.value)
    assert "not a readable Parquet file" in str(info.value)


# --- saved datasets directories ------------------------------------------------------------

def test_saved_dataset_directory(tmp_path):
    path = tmp_path / "saved"
    datasets.Dataset.from_dict({"text": ["a", "b"], "label": ["x", "y"]}).save_to_disk(str(path))
    records = read(path)
    assert [(r.source, r.unit, r.line, r.value) for r in records] == [
        (str(path), "row", 1, {"text": "a", "label": "x"}),
        (str(path), "row", 2, {"text": "b", "label": "y"}),
    ]


def test_saved_dataset_dict_names_each_split(tmp_path):
    path = tmp_path / "saved_dict"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": ["a", "b"], "label": ["x", "y"]}),
        "test": datasets.Dataset.from_dict({"text": ["c"], "label": ["z"]}),
    }).save_to_disk(str(path))
    records = read(path)
    assert [(r.source, r.line, r.value["text"]) for r in records] == [
        (f"{path}[train]", 1, "a"), (f"{path}[train]", 2, "b"), (f"{path}[test]", 1, "c")]
    assert records[2].location == f"{path}[test] row 1"


# --- packaged example ----------------------------------------------------------------------

def test_example_sentiment_resolves_to_packaged_csv():
    path = resolve_spec("example:sentiment")
    assert isinstance(path, Path)
    assert path.suffix == ".csv" and path.is_file()
    assert resolve_spec("data/train.jsonl") == Path("data/train.jsonl")


def test_example_sentiment_reads_text_and_sentiment_columns():
    records = list(itertools.islice(read_input("example:sentiment"), 5))
    assert len(records) == 5
    assert records[0].line == 2  # after the header
    assert records[0].source == str(resolve_spec("example:sentiment"))
    for record in records:
        assert record.problem is None  # read as latin-1, so no non_utf8 rows
        assert {"text", "sentiment"} <= record.value.keys()
        assert isinstance(record.value["text"], str) and record.value["text"]
    assert records[0].value["sentiment"] == "negative"
    assert "Ñ" in records[0].value["text"]  # byte 0xd1 decoded as latin-1


def test_unknown_example_name_raises():
    with pytest.raises(TunelabError) as info:
        read("example:no-such-set")
    message = str(info.value)
    assert "'no-such-set'" in message and "sentiment" in message
    assert message.endswith(".")


# --- inputs that cannot be read at all -----------------------------------------------------

def test_missing_file_raises_naming_path(tmp_path):
    path = tmp_path / "absent.jsonl"
    with pytest.raises(TunelabError) as info:
        read(path)
    assert str(info.value) == f"{path}: input not found; check the path."
    assert_one_sentence_naming(info.value, path)


def test_empty_file_raises_naming_path(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    with pytest.raises(TunelabError) as info:
        read(path)
    assert "input file is empty" in str(info.value)
    assert_one_sentence_naming(info.value, path)


@pytest.mark.parametrize("name, shown", [("data.txt", "'.txt'"), ("data", "'no extension'")])
def test_unknown_suffix_raises_naming_path(tmp_path, name, shown):
    path = tmp_path / name
    path.write_text("text\n")
    with pytest.raises(TunelabError) as info:
        read(path)
    assert f"unknown file format {shown}" in str(info.value)
    assert_one_sentence_naming(info.value, path)


def test_directory_that_is_not_a_saved_dataset_raises_naming_path(tmp_path):
    path = tmp_path / "plain_dir"
    path.mkdir()
    (path / "train.jsonl").write_text('{"n": 1}\n')
    with pytest.raises(TunelabError) as info:
        read(path)
    assert "not a saved `datasets` dataset" in str(info.value)
    assert_one_sentence_naming(info.value, path)


def test_suffix_is_case_insensitive(tmp_path):
    path = tmp_path / "DATA.CSV"
    path.write_text("text,label\nhi,pos\n")
    (record,) = read(path)
    assert record.value == {"text": "hi", "label": "pos"}


# --- JSON lines in blocks (how large files stream to the workers) ----------------------------

def test_jsonl_blocks_hold_whole_lines_and_number_them_across_blocks(tmp_path):
    from tunelab.data.readers import jsonl_blocks, parse_jsonl_block
    path = tmp_path / "data.jsonl"
    lines = [json.dumps({"n": i, "pad": "x" * (i % 7) * 10}) for i in range(200)]
    lines[50] = ""  # a blank line keeps its number
    lines[120] = json.dumps({"long": "y" * 500})  # longer than a block
    path.write_text("\n".join(lines))  # no newline after the last line
    blocks = list(jsonl_blocks(path, block_bytes=256))
    assert len(blocks) > 10 and all(block.endswith(b"\n") for _, block in blocks[:-1])
    assert b"".join(block for _, block in blocks) == path.read_bytes()
    streamed = [r for first, block in blocks for r in parse_jsonl_block(block, first, str(path))]
    assert [(r.line, r.value) for r in streamed] == [(r.line, r.value) for r in read(path)]
    assert [r.line for r in streamed][49:51] == [50, 52] and streamed[-1].line == 200


def test_json_lines_file_names_the_streamable_inputs(tmp_path, write_jsonl):
    from tunelab.data.readers import json_lines_file
    jsonl = write_jsonl("a.jsonl", [{"n": 1}])
    lines_in_json = write_jsonl("b.json", [{"n": 1}])
    (tmp_path / "c.json").write_text("[]")
    (tmp_path / "d.csv").write_text("text,label\n")
    assert json_lines_file(str(jsonl)) == (jsonl, "utf-8")
    assert json_lines_file(str(lines_in_json), "latin-1") == (lines_in_json, "latin-1")
    assert json_lines_file(str(tmp_path / "c.json")) is None and json_lines_file(str(tmp_path / "d.csv")) is None
