"""The per-record work of one shard: what comes back for each kind of line, and the JSON pieces
the split and duplicates files are later assembled from."""
import hashlib
import json

import numpy as np
import pytest

from tunelab.config import DataConfig
from tunelab.data import prepare
from tunelab.data.dedup import normalised_words
from tunelab.data.readers import read_input
from tunelab.data.sources import open_sources
from tunelab.data.split import SPLITS, hash_unit
from tunelab.data.text import joined_text
from tunelab.data.work import Shard, process_shard

LINES = [
    {"messages": [{"role": "user", "content": "Where is my  order?"}, {"role": "assistant", "content": "On its way."}]},
    b'{"messages": [',
    {"messages": [{"role": "user", "content": "Mail me"}, {"role": "assistant", "content": "at a.b@example.com"}],
     "meta": {"group": "g1", "id": "theirs"}},
    {"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}]},
    {"instruction": "Say \ud800 hi", "output": "hi \u00e9"},  # a lone surrogate cannot be UTF-8
]


@pytest.fixture
def shard_setup(write_jsonl):
    path = write_jsonl("chat.jsonl", LINES)
    cfg = DataConfig()
    sources = open_sources([(str(path), "input")], cfg)
    return path, prepare.record_work(cfg, sources, set())


def test_each_line_is_a_reject_or_a_candidate_in_input_order(shard_setup):
    path, work = shard_setup
    result = process_shard(Shard(0, 1, block=path.read_bytes(), name=str(path)), work)
    assert result.records == 5 and result.reasons == ["unparsable", "roles_out_of_order"]
    assert [json.loads(r)["line"] for r in result.rejects] == [2, 4]
    assert result.lines == [1, 3, 5]
    assert result.pii == {"email": 1} and result.records_with_pii == 1 and result.changed == 1
    assert result.bands.shape == (3, work.bands) and result.bands.dtype == np.uint64


def test_spool_lines_assemble_the_duplicate_and_output_json(shard_setup):
    path, work = shard_setup
    result = process_shard(Shard(0, 1, block=path.read_bytes(), name=str(path)), work)
    body, duplicate_tail, output_tail = result.spool[1].rstrip(b"\n").split(b"\t")
    record = {"messages": [{"role": "user", "content": "Mail me"}, {"role": "assistant", "content": "at <EMAIL>"}],
              "meta": {"group": "g1", "id": "theirs"}}
    assert body + duplicate_tail == json.dumps(record, ensure_ascii=False).encode()
    key = hashlib.sha256(" ".join(normalised_words(joined_text(record))).encode()).digest()
    assert result.keys[1] == key and result.units[1] == hash_unit(key.hex(), 0)
    output = {"messages": record["messages"], "meta": {"group": "g1", "id": key.hex()[:16], "source": str(path), "line": 3}}
    assert body + output_tail == json.dumps(output, ensure_ascii=False).encode()
    assert SPLITS[result.splits[1]] == ("test" if result.units[1] < 0.1 else "val" if result.units[1] < 0.2 else "train")
    escaped = b"".join(result.spool[2].split(b"\t")[::2])
    assert b"\\ud800" in escaped and json.loads(escaped)["messages"][0]["content"] == "Say \ud800 hi"


def test_a_block_and_the_same_records_read_one_by_one_give_the_same_result(shard_setup):
    path, work = shard_setup
    from_block = process_shard(Shard(0, 1, block=path.read_bytes(), name=str(path)), work)
    from_records = process_shard(Shard(0, records=list(read_input(str(path))), name=str(path)), work)
    assert from_block.spool == from_records.spool and from_block.rejects == from_records.rejects
    assert np.array_equal(from_block.bands, from_records.bands) and from_block.keys == from_records.keys
