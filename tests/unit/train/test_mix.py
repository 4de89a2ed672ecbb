"""Multi-task mixing (train.mix): the training set follows the weights, every task's records and
validation set are kept, and task prefixes are applied to inputs and recorded for serving."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from run_helpers import chat, train_config, write_prepared
from tunelab.config import MixSettings
from tunelab.errors import TunelabError
from tunelab.train import run as run_module
from tunelab.train.data import load_training_data, with_prefix


def classification(n: int, task: str, start: int = 0) -> list[dict]:
    return [{"text": f"{task} text {i}", "label": "a" if i % 2 else "b", "meta": {"id": f"{task}-{i}"}}
            for i in range(start, start + n)]


def mix(tmp_path, sizes: dict[str, int], weights: dict[str, float], prefixes: dict[str, str] | None = None,
        seed: int = 0):
    entries = [MixSettings(data=str(write_prepared(tmp_path / task, classification(n, task),
                                                   classification(3, task, start=10_000))),
                           weight=weights[task], prefix=(prefixes or {}).get(task))
               for task, n in sizes.items()]
    return load_training_data(None, mix=entries, seed=seed)


@pytest.mark.parametrize("sizes,weights", [
    ({"small": 200, "large": 600}, {"small": 3, "large": 1}),
    ({"small": 200, "large": 600}, {"small": 1, "large": 1}),
    ({"small": 200, "large": 600}, {"small": 1, "large": 4}),
    ({"x": 300, "y": 300, "z": 300}, {"x": 2, "y": 1, "z": 1}),
])
def test_the_mixture_follows_the_weights(tmp_path, sizes, weights):
    data = mix(tmp_path, sizes, weights)
    counts = Counter(r["meta"]["task"] for r in data.train)
    total = sum(weights.values())
    for task, weight in weights.items():
        assert counts[task] / len(data.train) == pytest.approx(weight / total, abs=0.05), counts
        # every record of every task is drawn at least once, however small its weight
        assert {r["meta"]["id"] for r in data.train if r["meta"]["task"] == task} == {
            f"{task}-{i}" for i in range(sizes[task])}


def test_the_mixture_is_seeded(tmp_path):
    sizes, weights = {"p": 50, "q": 50}, {"p": 1, "q": 2}
    ids = lambda data: [r["meta"]["id"] for r in data.train]  # noqa: E731
    assert ids(mix(tmp_path / "a", sizes, weights, seed=1)) == ids(mix(tmp_path / "b", sizes, weights, seed=1))
    assert ids(mix(tmp_path / "c", sizes, weights, seed=1)) != ids(mix(tmp_path / "d", sizes, weights, seed=2))


def test_prefixes_are_applied_and_every_task_keeps_its_whole_validation_set(tmp_path):
    data = mix(tmp_path, {"sentiment": 20, "topic": 5}, {"sentiment": 1, "topic": 9}, {"topic": "topic: "})
    assert data.prefixes == {"topic": "topic: "}  # recorded for serving; tasks without one are left out
    for record in data.train + data.eval:
        task = record["meta"]["task"]
        assert record["text"].startswith("topic: topic text") if task == "topic" else record["text"].startswith(
            "sentiment text")
        assert record["meta"]["id"].startswith(task)  # the record's own meta is kept
    assert Counter(r["meta"]["task"] for r in data.eval) == {"sentiment": 3, "topic": 3}


@pytest.mark.parametrize("record,field,expected", [
    ({"text": "x", "label": "a"}, "text", "P: x"),
    (chat("hi", "yo"), "messages", [{"role": "user", "content": "P: hi"}, {"role": "assistant", "content": "yo"}]),
    ({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}, "messages",
     [{"role": "system", "content": "s"}, {"role": "user", "content": "P: u"}]),
    ({"prompt": "q", "chosen": "a", "rejected": "b"}, "prompt", "P: q"),
    ({"prompt": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b"}, "prompt",
     [{"role": "user", "content": "P: q"}]),
])
def test_prefix_goes_before_the_input_of_every_kind(record, field, expected):
    before = json.dumps(record)
    assert with_prefix(record, "P: ")[field] == expected
    assert json.dumps(record) == before  # the original record is untouched


def test_a_conversation_without_a_user_turn_cannot_take_a_prefix():
    with pytest.raises(TunelabError, match="no user message"):
        with_prefix({"messages": [{"role": "assistant", "content": "a"}]}, "P: ")


def test_mixes_that_cannot_be_trained_are_refused(tmp_path):
    one = write_prepared(tmp_path / "one" / "data", classification(4, "one"))
    two = write_prepared(tmp_path / "two" / "data", classification(4, "two"))
    with pytest.raises(TunelabError, match="names the task data more than once"):
        load_training_data(None, mix=[MixSettings(data=str(one)), MixSettings(data=str(two))])
    chats = write_prepared(tmp_path / "chats", [chat("a", "b")])
    with pytest.raises(TunelabError, match="combines kinds of data"):
        load_training_data(None, mix=[MixSettings(data=str(one)), MixSettings(data=str(chats))])
    empty = write_prepared(tmp_path / "empty", [])
    with pytest.raises(TunelabError, match="has no records"):
        load_training_data(None, mix=[MixSettings(data=str(one)), MixSettings(data=str(empty))])


@pytest.mark.slow  # trains for seconds, or starts processes
def test_a_mixed_run_trains_on_prefixed_inputs_and_records_the_prefixes(tiny_llama, tmp_path, spy_stages):
    summarize = write_prepared(tmp_path / "summarize", [chat(f"long text {i}", f"short {i}") for i in range(12)],
                               [chat(f"long text {i}", f"short {i}") for i in range(50, 52)])
    translate = write_prepared(tmp_path / "translate", [chat(f"hello {i}", f"hola {i}") for i in range(4)],
                               [chat(f"hello {i}", f"hola {i}") for i in range(50, 53)])
    cfg = train_config(tiny_llama, tmp_path / "run", method="lora", mix=[
        {"data": str(summarize), "weight": 1, "prefix": "summarize: "},
        {"data": str(translate), "weight": 1, "prefix": "translate: "}])
    result = run_module.run(cfg)

    trainer = spy_stages[0]["trainer"]
    rendered = [trainer.processing_class.decode(row["input_ids"]) for row in trainer.train_dataset]
    assert all("<|user|>\nsummarize: long text" in t or "<|user|>\ntranslate: hello" in t for t in rendered)
    shares = Counter("summarize" if "summarize: " in t else "translate" for t in rendered)
    assert shares["summarize"] / len(rendered) == pytest.approx(0.5, abs=0.15)  # equal weights, 12 vs 4 records
    assert len(trainer.eval_dataset) == 5  # both tasks' validation records

    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["task_prefixes"] == {"summarize": "summarize: ", "translate": "translate: "}
    assert set(manifest["datasets"]) == {f"{d}/{f}" for d in (summarize, translate) for f in ("train.jsonl", "val.jsonl")}
    card = (result.run_dir / "README.md").read_text()
    assert "summarize: `summarize: `" in card and "translate: `translate: `" in card
    assert "eval_loss" in result.metrics
