"""Deterministic splitting by content hash.

Each record's split depends only on its own content and the seed, so appending data never moves
an old record. For classification the draw is per record, so every label gets the configured
shares up to sampling error; a label whose draw left a split empty lends that split its
lowest-hash training record (only labels with at least MIN_FOR_EVERY_SPLIT records; when training
has none to spare, the other held-out split lends one), so that val and test see every class.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict

SPLITS = ("train", "val", "test")
MIN_FOR_EVERY_SPLIT = 5


def hash_unit(key: str, seed: int) -> float:
    """A number in [0, 1) fixed by the key and the seed."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_hash(keys: list[str], *, val: float, test: float, seed: int,
                  labels: list[str] | None = None, wanted: tuple[str, ...] = SPLITS) -> list[str]:
    """The split of each key. `wanted` names the splits to draw (a supplied file fills the others)."""
    val = val if "val" in wanted else 0.0
    test = test if "test" in wanted else 0.0
    units = [hash_unit(k, seed) for k in keys]
    splits = ["test" if u < test else "val" if u < test + val else "train" for u in units]
    if labels is not None:
        _give_every_label_each_split(splits, units, labels, [s for s in ("val", "test") if s in wanted
                                                              and (val if s == "val" else test) > 0])
    return splits


def _give_every_label_each_split(splits: list[str], units: list[float], labels: list[str],
                                 needed: list[str]) -> None:
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_label[label].append(i)
    for members in by_label.values():
        if len(members) < MIN_FOR_EVERY_SPLIT:
            continue
        for split in needed:
            if not any(splits[i] == split for i in members):
                for donor in ("train", *(s for s in needed if s != split)):
                    pool = sorted((i for i in members if splits[i] == donor), key=lambda i: units[i])
                    if len(pool) > 1:  # a donor keeps at least one record
                        splits[pool[0]] = split
                        break
