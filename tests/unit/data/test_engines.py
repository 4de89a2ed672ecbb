"""The engines hand results back in input order, the same from worker processes as from this
one; Ray is reached at the configured address, or started as a local head on 127.0.0.1."""
import json

import pytest

from tunelab.config import DataConfig
from tunelab.data import engines, prepare
from tunelab.data.sources import open_sources, shards
from tunelab.errors import TunelabError


def test_worker_processes_return_what_this_process_computes_in_the_same_order(tmp_path, monkeypatch):
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"question {i} " * 5},
                                                      {"role": "assistant", "content": f"answer {i}"}]}) + "\n"
                            for i in range(3000)))
    monkeypatch.setattr("tunelab.data.readers.BLOCK_BYTES", 16_384)  # many shards from a small file
    cfg = DataConfig()
    sources = open_sources([(str(path), "input")], cfg)
    work = prepare.record_work(cfg, sources, set())
    here = list(engines.map_shards(shards(sources), work, num_proc=1))
    workers = list(engines.map_shards(shards(sources), work, num_proc=2))
    assert len(here) > 10 and sum(r.records for r in here) == 3000
    assert [r.spool for r in workers] == [r.spool for r in here]
    assert [r.lines for r in workers] == [r.lines for r in here]


class FakeRay:
    def __init__(self, fail=False):
        self.calls, self.fail = [], fail

    def init(self, **kwargs):
        self.calls.append(kwargs)
        if self.fail:
            raise ConnectionError("Could not find any running Ray instance.\nmore")


def test_ray_joins_the_given_address_or_starts_a_local_head():
    ray = FakeRay()
    engines._connect(ray, "ray://head:10001", num_proc=4)
    engines._connect(ray, None, num_proc=4)
    assert ray.calls[0]["address"] == "ray://head:10001" and "num_cpus" not in ray.calls[0]
    assert ray.calls[1]["num_cpus"] == 4 and ray.calls[1]["_node_ip_address"] == "127.0.0.1"
    with pytest.raises(TunelabError, match="Ray cluster at auto .*Could not find any running Ray instance"):
        engines._connect(FakeRay(fail=True), "auto", num_proc=1)
