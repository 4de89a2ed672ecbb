"""Splitting by content hash: fixed by key and seed, stable when data is appended, and every label
with enough records reaches val and test."""
from collections import Counter

import pytest

from tunelab.data.split import MIN_FOR_EVERY_SPLIT, SPLITS, hash_unit, split_by_hash

KEYS = [f"record-{i}" for i in range(10_000)]


def shares(splits: list[str]) -> dict[str, float]:
    counts = Counter(splits)
    return {s: counts[s] / len(splits) for s in SPLITS}


def test_hash_unit_is_deterministic_in_range_and_seed_dependent():
    assert hash_unit("abc", 0) == hash_unit("abc", 0)
    assert hash_unit("abc", 0) != hash_unit("abc", 1)
    assert hash_unit("abc", 0) != hash_unit("abd", 0)
    units = [hash_unit(k, 7) for k in KEYS[:2000]]
    assert all(0.0 <= u < 1.0 for u in units)
    assert len(set(units)) == len(units)
    assert 0.45 < sum(units) / len(units) < 0.55  # uniform on [0, 1)


def test_hash_unit_golden_value():
    import hashlib
    digest = hashlib.sha256(b"0\x00abc").digest()
    assert hash_unit("abc", 0) == int.from_bytes(digest[:8], "big") / 2**64


def test_split_is_deterministic_and_seed_dependent():
    a = split_by_hash(KEYS, val=0.1, test=0.1, seed=0)
    assert split_by_hash(KEYS, val=0.1, test=0.1, seed=0) == a
    b = split_by_hash(KEYS, val=0.1, test=0.1, seed=1)
    assert b != a
    assert sum(x != y for x, y in zip(a, b)) > 2000  # a different seed reshuffles, not nudges


@pytest.mark.parametrize("val, test", [(0.1, 0.1), (0.2, 0.05), (0.0, 0.3), (0.15, 0.0)])
def test_ratios_close_to_configured(val, test):
    got = shares(split_by_hash(KEYS, val=val, test=test, seed=0))
    assert got["val"] == pytest.approx(val, abs=0.02)
    assert got["test"] == pytest.approx(test, abs=0.02)
    assert got["train"] == pytest.approx(1 - val - test, abs=0.02)
    if val == 0:
        assert got["val"] == 0
    if test == 0:
        assert got["test"] == 0


def test_each_split_depends_only_on_the_record_itself():
    full = split_by_hash(KEYS, val=0.1, test=0.1, seed=3)
    reordered = split_by_hash(KEYS[::-1], val=0.1, test=0.1, seed=3)
    assert reordered[::-1] == full
    assert split_by_hash(KEYS[500:600], val=0.1, test=0.1, seed=3) == full[500:600]


def test_appending_data_never_moves_an_old_record():
    old = KEYS[:6000]
    before = split_by_hash(old, val=0.1, test=0.1, seed=0)
    after = split_by_hash(old + [f"new-{i}" for i in range(4000)], val=0.1, test=0.1, seed=0)
    assert after[:6000] == before


def test_appending_labelled_data_never_moves_an_old_record():
    labels_for = lambda keys: [f"class-{int(k.split('-')[-1]) % 4}" for k in keys]  # noqa: E731
    old = KEYS[:2000]
    new = [f"new-{i}" for i in range(3000)]
    before = split_by_hash(old, val=0.1, test=0.1, seed=0, labels=labels_for(old))
    after = split_by_hash(old + new, val=0.1, test=0.1, seed=0, labels=labels_for(old + new))
    assert after[:2000] == before
    # with plenty of records per label, stratification changes nothing
    assert before == split_by_hash(old, val=0.1, test=0.1, seed=0)


def test_wanted_excludes_splits_supplied_from_files():
    everything = split_by_hash(KEYS, val=0.1, test=0.1, seed=0)
    no_val = split_by_hash(KEYS, val=0.1, test=0.1, seed=0, wanted=("train", "test"))
    assert "val" not in no_val
    assert [s == "test" for s in no_val] == [s == "test" for s in everything]  # test draw unchanged
    assert shares(no_val)["test"] == pytest.approx(0.1, abs=0.02)

    no_test = split_by_hash(KEYS, val=0.1, test=0.1, seed=0, wanted=("train", "val"))
    assert "test" not in no_test
    assert shares(no_test)["val"] == pytest.approx(0.1, abs=0.02)

    assert set(split_by_hash(KEYS, val=0.1, test=0.1, seed=0, wanted=("train",))) == {"train"}


def test_wanted_excludes_splits_for_labelled_data_too():
    keys = [f"k{i}" for i in range(60)]
    labels = [f"label-{i % 12}" for i in range(60)]  # 5 records each
    splits = split_by_hash(keys, val=0.1, test=0.1, seed=0, labels=labels, wanted=("train", "test"))
    assert "val" not in splits
    assert {labels[i] for i, s in enumerate(splits) if s == "test"} == set(labels)


def test_every_label_with_enough_records_reaches_val_and_test():
    keys, labels = [], []
    for label in range(40):
        for j in range(MIN_FOR_EVERY_SPLIT):
            keys.append(f"label{label}-item{j}")
            labels.append(f"L{label}")
    plain = split_by_hash(keys, val=0.1, test=0.1, seed=0)
    assert len({l for l, s in zip(labels, plain) if s == "val"}) < 40  # the draw alone misses some

    splits = split_by_hash(keys, val=0.1, test=0.1, seed=0, labels=labels)
    for label in set(labels):
        got = Counter(s for l, s in zip(labels, splits) if l == label)
        assert got["val"] >= 1 and got["test"] >= 1, (label, got)
        assert got["train"] >= 1, (label, got)
    # only records that were in train moved, and only into val or test
    for before, after in zip(plain, splits):
        assert before == after or (before == "train" and after in ("val", "test"))


def test_lent_record_is_the_lowest_hash_training_record():
    keys = [f"x{i}" for i in range(MIN_FOR_EVERY_SPLIT)]
    labels = ["only"] * len(keys)
    splits = split_by_hash(keys, val=0.1, test=0.1, seed=0, labels=labels)
    plain = split_by_hash(keys, val=0.1, test=0.1, seed=0)
    assert Counter(splits)["val"] >= 1 and Counter(splits)["test"] >= 1
    train = sorted((i for i, s in enumerate(plain) if s == "train"), key=lambda i: hash_unit(keys[i], 0))
    moved = [i for i in range(len(keys)) if plain[i] != splits[i]]
    assert moved  # this draw left val empty for the label
    assert moved == sorted(train[:len(moved)])


def test_labels_below_the_minimum_are_left_to_the_draw():
    keys = [f"rare{i}" for i in range(MIN_FOR_EVERY_SPLIT - 1)]
    labels = ["rare"] * len(keys)
    assert split_by_hash(keys, val=0.1, test=0.1, seed=0, labels=labels) == \
        split_by_hash(keys, val=0.1, test=0.1, seed=0)


def test_per_label_proportions_close_to_ratios():
    labels = ["pos" if i % 3 == 0 else "neg" if i % 3 == 1 else "neutral" for i in range(len(KEYS))]
    splits = split_by_hash(KEYS, val=0.15, test=0.1, seed=5, labels=labels)
    for label in ("pos", "neg", "neutral"):
        got = shares([s for l, s in zip(labels, splits) if l == label])
        assert got["val"] == pytest.approx(0.15, abs=0.02), label
        assert got["test"] == pytest.approx(0.10, abs=0.02), label
        assert got["train"] == pytest.approx(0.75, abs=0.02), label


def test_empty_input():
    assert split_by_hash([], val=0.1, test=0.1, seed=0) == []
    assert split_by_hash([], val=0.1, test=0.1, seed=0, labels=[]) == []


def test_held_out_split_lends_when_training_has_none_to_spare():
    # large held-out shares make draws like 4 test + 1 train (+ 0 val) common among 5-record labels
    keys = [f"k{i}" for i in range(1000)]
    labels = [f"L{i // MIN_FOR_EVERY_SPLIT}" for i in range(1000)]
    plain = split_by_hash(keys, val=0.3, test=0.3, seed=0)
    short = {l for l in set(labels)
             if Counter(s for x, s in zip(labels, plain) if x == l)["train"] <= 1}
    assert short  # the case arises in this data
    splits = split_by_hash(keys, val=0.3, test=0.3, seed=0, labels=labels)
    for label in set(labels):
        got = Counter(s for l, s in zip(labels, splits) if l == label)
        assert got["val"] >= 1 and got["test"] >= 1, (label, got)
        was = Counter(s for l, s in zip(labels, plain) if l == label)
        assert got["train"] >= min(was["train"], 1)  # lending never empties train


def lending_reference(keys, labels, val, test, seed, wanted=SPLITS):
    """Lending as first written, on every record of each label (no summary)."""
    from tunelab.data.split import draw_split, drawn_shares, needed_splits
    val, test = drawn_shares(val, test, wanted)
    units = [hash_unit(k, seed) for k in keys]
    splits = [draw_split(u, val, test) for u in units]
    needed = needed_splits(val, test, wanted)
    for label in set(labels):
        members = [i for i, l in enumerate(labels) if l == label]
        if len(members) < MIN_FOR_EVERY_SPLIT:
            continue
        for split in needed:
            if not any(splits[i] == split for i in members):
                for donor in ("train", *(s for s in needed if s != split)):
                    pool = sorted((i for i in members if splits[i] == donor), key=lambda i: units[i])
                    if len(pool) > 1:
                        splits[pool[0]] = split
                        break
    return splits


def test_lending_from_a_summary_of_the_lowest_few_equals_lending_from_every_record():
    import random
    rng = random.Random(0)
    for trial in range(1500):
        n = rng.randint(0, 60)
        keys = [f"k{trial}-{i}" for i in range(n)]
        labels = [f"L{rng.randint(0, rng.randint(0, 8))}" for _ in range(n)]
        val, test = rng.choice([0, 0.1, 0.3, 0.45]), rng.choice([0, 0.1, 0.3, 0.45])
        wanted = rng.choice([SPLITS, ("train", "test"), ("train", "val"), ("train",)])
        assert split_by_hash(keys, val=val, test=test, seed=trial, labels=labels, wanted=wanted) == \
            lending_reference(keys, labels, val, test, trial, wanted), trial


def test_label_summaries_from_columns_equal_those_built_record_by_record():
    import random

    import numpy as np

    from tunelab.data.split import LabelSplits, summarise_labels
    rng = random.Random(1)
    n = 3000
    labels = np.array([rng.randrange(7) for _ in range(n)])
    splits = np.array([rng.randrange(3) for _ in range(n)], np.int8)
    units = np.array([rng.random() for _ in range(n)])
    one_by_one: dict = {}
    for i in range(n):
        one_by_one.setdefault(int(labels[i]), LabelSplits()).add(SPLITS[splits[i]], float(units[i]), i)
    assert summarise_labels(labels, splits, units, np.arange(n)) == one_by_one
