"""Statistics gathered as records stream past, in memory bounded by the data's variety, not its
size: per split, the count of records per distinct length (exact percentiles, mean and
histogram: lengths are integers up to data.max_chars, so the table stays small), the labels and
the field types seen."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 95, 99)
HISTOGRAM_BINS = 20
LENGTH_METHOD = "exact, from a count of records per distinct length"


class LengthCounts:
    """Lengths summarised exactly as numpy would summarise the full list (percentile method
    "higher", a 20-bin histogram), from the number of records of each length."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def add(self, lengths: np.ndarray) -> None:
        values, counts = np.unique(np.asarray(lengths, np.int64), return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist()):
            self.counts[value] += count

    def summary(self) -> dict[str, Any]:
        if not self.counts:
            return {"count": 0}
        values = np.array(sorted(self.counts), np.int64)
        counts = np.array([self.counts[v] for v in values.tolist()], np.int64)
        n = int(counts.sum())
        cumulative = np.cumsum(counts)
        stats = {"count": n, "mean": round(sum(v * c for v, c in self.counts.items()) / n, 1), "min": int(values[0])}
        for p in PERCENTILES:
            index = int(np.ceil((n - 1) * (np.float64(p) / 100)))  # numpy's "higher" index
            stats[f"p{p}"] = int(values[np.searchsorted(cumulative, index, side="right")])
        stats["max"] = int(values[-1])
        histogram, edges = np.histogram(values, bins=HISTOGRAM_BINS, weights=counts)
        stats["histogram"] = {"edges": [round(float(e), 1) for e in edges], "counts": [int(c) for c in histogram]}
        return stats


@dataclass
class SplitStats:
    lengths: LengthCounts = field(default_factory=LengthCounts)
    labels: Counter = field(default_factory=Counter)
    fields: set[str] = field(default_factory=set)
