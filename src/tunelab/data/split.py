"""Deterministic splitting by content hash.

Each record's split depends only on its own content and the seed, so appending data never moves
an old record. For classification the draw is per record, so every label gets the configured
shares up to sampling error; a label whose draw left a split empty lends that split its
lowest-hash training record (only labels with at least MIN_FOR_EVERY_SPLIT records; when training
has none to spare, the other held-out split lends one), so that val and test see every class.

Lending needs, per label and split, only the number of records and the few with the lowest
hashes (LEND_DEPTH: at most two records leave a split, one for each held-out split), so it
works on a summary that streams: LabelSplits.
"""
from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "val", "test")
MIN_FOR_EVERY_SPLIT = 5
LEND_DEPTH = 3


def hash_unit(key: str, seed: int) -> float:
    """A number in [0, 1) fixed by the key and the seed."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def draw_split(unit: float, val: float, test: float) -> str:
    return "test" if unit < test else "val" if unit < test + val else "train"


def drawn_shares(val: float, test: float, wanted: tuple[str, ...]) -> tuple[float, float]:
    """The val and test shares actually drawn: a split supplied from a file is not drawn."""
    return (val if "val" in wanted else 0.0), (test if "test" in wanted else 0.0)


def split_by_hash(keys: list[str], *, val: float, test: float, seed: int,
                  labels: list[str] | None = None, wanted: tuple[str, ...] = SPLITS) -> list[str]:
    """The split of each key. `wanted` names the splits to draw (a supplied file fills the others)."""
    val, test = drawn_shares(val, test, wanted)
    units = [hash_unit(k, seed) for k in keys]
    splits = [draw_split(u, val, test) for u in units]
    if labels is not None:
        summaries: dict[str, LabelSplits] = {}
        for i, (label, split, unit) in enumerate(zip(labels, splits, units)):
            summaries.setdefault(label, LabelSplits()).add(split, unit, i)
        for i, split in lend_to_empty_splits(summaries, needed_splits(val, test, wanted)).items():
            splits[i] = split
    return splits


def needed_splits(val: float, test: float, wanted: tuple[str, ...]) -> list[str]:
    """The held-out splits every label should reach: drawn, with a share above zero."""
    return [s for s in ("val", "test") if s in wanted and (val if s == "val" else test) > 0]


@dataclass
class LabelSplits:
    """One label's records per split: how many, and the LEND_DEPTH with the lowest hash units
    as sorted (unit, index) pairs."""
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    lowest: dict[str, list[tuple[float, int]]] = field(default_factory=lambda: {s: [] for s in SPLITS})

    def add(self, split: str, unit: float, index: int) -> None:
        self.counts[split] += 1
        lowest = self.lowest[split]
        if len(lowest) < LEND_DEPTH or (unit, index) < lowest[-1]:
            bisect.insort(lowest, (unit, index))
            del lowest[LEND_DEPTH:]


def summarise_labels(labels: np.ndarray, splits: np.ndarray, units: np.ndarray,
                     indexes: np.ndarray) -> dict[int, LabelSplits]:
    """LabelSplits per label id, from columns (split codes index SPLITS), without a loop over
    the records: sorted by label, split, unit and index, each group's head is its lowest."""
    order = np.lexsort((indexes, units, splits, labels))
    labels, splits, units, indexes = labels[order], splits[order], units[order], indexes[order]
    starts = np.flatnonzero(np.concatenate(([True], (labels[1:] != labels[:-1]) | (splits[1:] != splits[:-1]))))
    ends = np.append(starts[1:], len(labels))
    summaries: dict[int, LabelSplits] = {}
    for start, end in zip(starts.tolist(), ends.tolist()):
        summary = summaries.setdefault(int(labels[start]), LabelSplits())
        split = SPLITS[splits[start]]
        summary.counts[split] = end - start
        head = slice(start, min(end, start + LEND_DEPTH))
        summary.lowest[split] = list(zip(units[head].tolist(), indexes[head].tolist()))
    return summaries


def lend_to_empty_splits(summaries: dict[str, LabelSplits], needed: list[str]) -> dict[int, str]:
    """{record index: new split} for the records lent so that each label with enough records
    reaches every needed split."""
    moved: dict[int, str] = {}
    for summary in summaries.values():
        if sum(summary.counts.values()) < MIN_FOR_EVERY_SPLIT:
            continue
        pools = {s: list(summary.lowest[s]) for s in SPLITS}
        counts = dict(summary.counts)
        for split in needed:
            if counts[split]:
                continue
            for donor in ("train", *(s for s in needed if s != split)):
                if counts[donor] > 1:  # a donor keeps at least one record
                    unit, index = pools[donor].pop(0)
                    counts[donor] -= 1
                    counts[split] += 1
                    pools[split] = sorted(pools[split] + [(unit, index)])
                    moved[index] = split
                    break
    return moved
