"""Length statistics from a count per distinct length equal numpy's on the full list."""
import random

import numpy as np
import pytest

from tunelab.data.stats import PERCENTILES, LengthCounts


def numpy_reference(values: list[int]) -> dict:
    array = np.asarray(values)
    stats = {"count": int(array.size), "mean": round(float(array.mean()), 1), "min": int(array.min())}
    stats.update({f"p{p}": int(np.percentile(array, p, method="higher")) for p in PERCENTILES})
    stats["max"] = int(array.max())
    counts, edges = np.histogram(array, bins=20)
    stats["histogram"] = {"edges": [round(float(e), 1) for e in edges], "counts": [int(c) for c in counts]}
    return stats


@pytest.mark.parametrize("seed", range(20))
def test_summary_equals_numpy_on_the_full_list(seed):
    rng = random.Random(seed)
    n = rng.choice([1, 2, 3, 11, 101, 1001, rng.randint(1, 5000)])
    values = [rng.randint(0, rng.choice([1, 40, 100_000])) for _ in range(n)]
    counts = LengthCounts()
    for start in range(0, n, 37):  # added in pieces, as chunks stream past
        counts.add(np.array(values[start:start + 37]))
    assert counts.count == n
    assert counts.summary() == numpy_reference(values)


def test_empty_and_memory_bounded_by_distinct_lengths():
    counts = LengthCounts()
    assert counts.summary() == {"count": 0}
    counts.add(np.full(1_000_000, 7))
    counts.add(np.array([3, 9]))
    assert len(counts.counts) == 3 and counts.summary()["p50"] == 7
