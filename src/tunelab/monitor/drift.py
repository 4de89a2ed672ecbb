"""Drift statistics: pure functions over plain sequences, tested against hand-computed values
and against scipy.

Population stability index (PSI) measures how far a distribution moved, whatever the sample
size; the two-sample tests (Kolmogorov-Smirnov for numbers, chi-square for categories) say how
sure we are that it moved at all. A feature counts as drifted only when both agree: PSI above
its threshold *and* p below the significance level. PSI alone flags noise on small windows; a
test alone flags trivial shifts on large ones.

PSI = sum over bins of (current share - reference share) * ln(current share / reference share).
An empty bin has a share of 0 and would make the logarithm infinite, so shares of 0 are
replaced by EMPTY_BIN_SHARE (1e-4) before the sum: a bin that is empty on one side then adds a
large but finite amount (about 0.09 for a bin holding 10% of the other side).

KL divergence, D_KL(current || reference) = sum of current share * ln(current share / reference
share), in nats, is the default measure for the model's *outputs* (predicted labels, output
length), with the threshold 0.08 our source material uses. It is computed over the same bins as
PSI (categories; or the reference's quantile bins for numbers) with the same smoothing: shares of
0 become EMPTY_BIN_SHARE and each side is renormalised to sum to 1.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

EMPTY_BIN_SHARE = 1e-4


def quantile_edges(reference: Sequence[float], bins: int = 10) -> np.ndarray:
    """Interior bin edges at the reference's quantiles (ties merged, so a discrete feature gets
    fewer, wider bins). Bins are [edge_i, edge_i+1) with open outer ends: a current value beyond
    the reference's range lands in the first or last bin. A constant reference gets the edges
    (c, next float after c), so values below, at and above it fall in three different bins."""
    ref = np.asarray(reference, dtype=float)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    if np.unique(ref).size == 1:
        edges = np.array([ref[0], np.nextafter(ref[0], np.inf)])
    return edges


def binned_shares(values: Sequence[float], edges: np.ndarray) -> np.ndarray:
    """Share of `values` in each bin of quantile_edges (len(edges) + 1 bins)."""
    counts = np.bincount(np.searchsorted(edges, np.asarray(values, dtype=float), side="right"),
                         minlength=len(edges) + 1)
    return counts / max(counts.sum(), 1)


def psi_from_shares(reference_shares: Sequence[float], current_shares: Sequence[float]) -> float:
    ref = np.where(np.asarray(reference_shares, dtype=float) == 0, EMPTY_BIN_SHARE, reference_shares)
    cur = np.where(np.asarray(current_shares, dtype=float) == 0, EMPTY_BIN_SHARE, current_shares)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def kl_from_shares(reference_shares: Sequence[float], current_shares: Sequence[float]) -> float:
    """D_KL(current || reference) over bins (see the module docstring for the smoothing)."""
    ref = np.where(np.asarray(reference_shares, dtype=float) == 0, EMPTY_BIN_SHARE, reference_shares)
    cur = np.where(np.asarray(current_shares, dtype=float) == 0, EMPTY_BIN_SHARE, current_shares)
    ref, cur = ref / ref.sum(), cur / cur.sum()
    return float(np.sum(cur * np.log(cur / ref)))


def kl_divergence(reference: Sequence[float], current: Sequence[float], bins: int = 10) -> float:
    """KL divergence of a numeric feature over quantile bins of the reference."""
    edges = quantile_edges(reference, bins)
    return kl_from_shares(binned_shares(reference, edges), binned_shares(current, edges))


def categorical_kl(ref_counts: Mapping[Hashable, int], cur_counts: Mapping[Hashable, int]) -> float:
    """KL divergence over the union of categories."""
    ref, cur = _count_vectors(ref_counts, cur_counts)
    return kl_from_shares(ref / max(ref.sum(), 1), cur / max(cur.sum(), 1))


def _count_vectors(ref_counts: Mapping[Hashable, int], cur_counts: Mapping[Hashable, int]):
    categories = sorted(set(ref_counts) | set(cur_counts), key=str)
    return (np.array([ref_counts.get(c, 0) for c in categories], dtype=float),
            np.array([cur_counts.get(c, 0) for c in categories], dtype=float))


def population_stability_index(reference: Sequence[float], current: Sequence[float], bins: int = 10) -> float:
    """PSI of a numeric feature over quantile bins of the reference (see the module docstring)."""
    edges = quantile_edges(reference, bins)
    return psi_from_shares(binned_shares(reference, edges), binned_shares(current, edges))


def categorical_psi(ref_counts: Mapping[Hashable, int], cur_counts: Mapping[Hashable, int]) -> float:
    """PSI over the union of categories; a category seen on one side only counts as an empty bin
    on the other."""
    ref, cur = _count_vectors(ref_counts, cur_counts)
    return psi_from_shares(ref / max(ref.sum(), 1), cur / max(cur.sum(), 1))


def ks_test(reference: Sequence[float], current: Sequence[float]) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test: (statistic, p-value)."""
    result = stats.ks_2samp(np.asarray(reference, dtype=float), np.asarray(current, dtype=float))
    return float(result.statistic), float(result.pvalue)


def chi_square_test(ref_counts: Mapping[Hashable, int], cur_counts: Mapping[Hashable, int]) -> tuple[float, float]:
    """Chi-square test of homogeneity on the 2 x categories table of counts (scipy's
    chi2_contingency with its defaults, Yates' correction included for 2 x 2): (statistic, p).
    With a single category in both samples there is nothing to compare: (0.0, 1.0)."""
    categories = sorted(set(ref_counts) | set(cur_counts), key=str)
    table = np.array([[ref_counts.get(c, 0) for c in categories], [cur_counts.get(c, 0) for c in categories]])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0
    result = stats.chi2_contingency(table)
    return float(result.statistic), float(result.pvalue)


def feature_drift(feature: str, reference: Sequence[Any], current: Sequence[Any], *, kind: str,
                  psi_threshold: float = 0.2, p_value: float = 0.01, min_samples: int = 30,
                  bins: int = 10, measure: str = "psi", kl_threshold: float = 0.08) -> dict[str, Any]:
    """Compare one feature's reference and current values.

    kind "numeric": PSI and KL over reference quantile bins + KS test; kind "categorical": PSI
    and KL over categories + chi-square test. Both distances are reported; `measure` (psi or kl)
    says which one must pass its threshold, together with a significant test, to call drift.
    With fewer than `min_samples` values on either side no test is run (drifted False,
    psi/kl/statistic/p_value None) and the reason says so."""
    if measure not in ("psi", "kl"):
        raise ValueError(f"measure must be psi or kl, not {measure!r}")
    base = {"feature": feature, "kind": kind, "reference_n": len(reference), "current_n": len(current),
            "psi": None, "kl": None, "measure": measure, "statistic": None, "p_value": None, "drifted": False}
    if kind not in ("numeric", "categorical"):
        raise ValueError(f"kind must be numeric or categorical, not {kind!r}")
    if min(len(reference), len(current)) < min_samples:
        side = "current window" if len(current) < min_samples else "reference"
        return {**base, "reason": f"not tested: {min(len(reference), len(current))} values in the {side}, "
                                  f"at least {min_samples} are needed for a meaningful test"}
    if kind == "numeric":
        psi = population_stability_index(reference, current, bins)
        kl = kl_divergence(reference, current, bins)
        statistic, p = ks_test(reference, current)
        test = "KS"
        summary = {"reference_mean": float(np.mean(reference)), "current_mean": float(np.mean(current)),
                   "bins": histogram_bins(reference, current, bins)}
    else:
        ref_counts, cur_counts = Counter(reference), Counter(current)
        psi = categorical_psi(ref_counts, cur_counts)
        kl = categorical_kl(ref_counts, cur_counts)
        statistic, p = chi_square_test(ref_counts, cur_counts)
        test = "chi-square"
        summary = {"reference_shares": shares(ref_counts), "current_shares": shares(cur_counts)}
    distance, threshold, name = (psi, psi_threshold, "PSI") if measure == "psi" else (kl, kl_threshold, "KL")
    drifted = distance > threshold and p < p_value
    verdict = "drifted" if drifted else "stable"
    reason = (f"{verdict}: {name} {distance:.3f} {'above' if distance > threshold else 'within'} {threshold:g}, "
              f"{test} p={p:.2g} {'below' if p < p_value else 'not below'} {p_value:g}")
    return {**base, "psi": psi, "kl": kl, "statistic": statistic, "p_value": p, "drifted": drifted,
            "reason": reason, "test": test, **summary}


def mean_drop(reference: Sequence[float] | float, current: Sequence[float], *, min_drop: float,
              p_value: float = 0.01, min_samples: int = 30, feature: str = "confidence") -> dict[str, Any]:
    """Has the mean fallen by at least `min_drop`? `reference` is either samples (Welch's
    t-test, one-sided) or a known mean (one-sample t-test, one-sided). Drifted when the drop
    reaches min_drop and the test is significant."""
    known_mean = isinstance(reference, (int, float))
    ref_n = None if known_mean else len(reference)
    base = {"feature": feature, "kind": "mean", "reference_n": ref_n, "current_n": len(current), "psi": None,
            "kl": None, "statistic": None, "p_value": None, "drifted": False}
    if len(current) < min_samples or (ref_n is not None and ref_n < min_samples):
        side = "current window" if len(current) < min_samples else "reference"
        count = len(current) if side == "current window" else ref_n
        return {**base, "reason": f"not tested: {count} values in the {side}, "
                                  f"at least {min_samples} are needed for a meaningful test"}
    ref_mean = float(reference) if known_mean else float(np.mean(reference))
    cur_mean = float(np.mean(current))
    if known_mean:
        result = stats.ttest_1samp(current, ref_mean, alternative="less")
        test = "one-sample t"
    else:
        result = stats.ttest_ind(current, reference, equal_var=False, alternative="less")
        test = "Welch t"
    p = float(result.pvalue) if np.isfinite(result.pvalue) else (0.0 if cur_mean < ref_mean else 1.0)
    drop = ref_mean - cur_mean
    drifted = drop >= min_drop and p < p_value
    reason = (f"{'drifted' if drifted else 'stable'}: mean {cur_mean:.3f} vs reference {ref_mean:.3f} "
              f"(drop {drop:+.3f}, alert at {min_drop:g}), {test} p={p:.2g}")
    return {**base, "statistic": drop, "p_value": p, "drifted": drifted, "reason": reason, "test": test,
            "reference_mean": ref_mean, "current_mean": cur_mean}


def rate_above(feature: str, events: int, total: int, *, max_rate: float, p_value: float = 0.01) -> dict[str, Any]:
    """Is the rate of an event (errors) above `max_rate`? Exact one-sided binomial test, which is
    valid at any sample size: three errors in three requests is already significant at 5% max."""
    base = {"feature": feature, "kind": "rate", "reference_n": None, "current_n": total, "psi": None,
            "kl": None, "statistic": None, "p_value": None, "drifted": False}
    if total == 0:
        return {**base, "reason": "not tested: no requests in the window"}
    rate = events / total
    p = float(stats.binomtest(events, total, max_rate, alternative="greater").pvalue)
    drifted = rate > max_rate and p < p_value
    reason = (f"{'drifted' if drifted else 'stable'}: {events} of {total} ({rate:.1%}) against an allowed "
              f"{max_rate:.1%}, binomial p={p:.2g}")
    return {**base, "statistic": rate, "p_value": p, "drifted": drifted, "reason": reason, "test": "binomial",
            "current_rate": rate, "max_rate": max_rate}


def histogram_bins(reference: Sequence[float], current: Sequence[float], bins: int = 10) -> dict[str, list[float]]:
    """Both sides' shares over the PSI bins, with the open outer ends closed at the data's range
    (for charts)."""
    edges = quantile_edges(reference, bins)
    low = float(min(np.min(reference), np.min(current)))
    high = float(max(np.max(reference), np.max(current)))
    return {"edges": [low, *map(float, edges), high],
            "reference": [round(float(s), 4) for s in binned_shares(reference, edges)],
            "current": [round(float(s), 4) for s in binned_shares(current, edges)]}


def shares(counts: Mapping[Hashable, int]) -> dict[str, float]:
    total = sum(counts.values()) or 1
    return {str(k): counts[k] / total for k in sorted(counts, key=str)}


def rate_below(feature: str, successes: int, total: int, *, reference_rate: float, min_drop: float,
               p_value: float = 0.01, min_samples: int = 20) -> dict[str, Any]:
    """Has a success rate (accuracy on feedback) fallen below a known reference rate (the eval
    report's)? Exact one-sided binomial test; drifted when the drop reaches min_drop and p < p_value."""
    base = {"feature": feature, "kind": "rate", "reference_n": None, "current_n": total, "psi": None, "kl": None,
            "statistic": None, "p_value": None, "drifted": False}
    if total < min_samples:
        return {**base, "reason": f"not tested: {total} values in the current window, at least {min_samples} are "
                                  "needed for a meaningful test"}
    rate = successes / total
    p = float(stats.binomtest(successes, total, reference_rate, alternative="less").pvalue)
    drop = reference_rate - rate
    drifted = drop >= min_drop and p < p_value
    reason = (f"{'drifted' if drifted else 'stable'}: {successes} of {total} ({rate:.1%}) against {reference_rate:.1%} "
              f"(drop {drop:+.3f}, alert at {min_drop:g}), binomial p={p:.2g}")
    return {**base, "statistic": drop, "p_value": p, "drifted": drifted, "reason": reason, "test": "binomial",
            "current_rate": rate, "reference_rate": reference_rate}


def proportion_drop(feature: str, reference: tuple[int, int], current: tuple[int, int], *, min_drop: float,
                    p_value: float = 0.01, min_samples: int = 20) -> dict[str, Any]:
    """Has a success rate fallen from an earlier sample to the current one? (successes, total) on
    each side; Fisher's exact test, one-sided, valid at any size."""
    (ref_hits, ref_n), (cur_hits, cur_n) = reference, current
    base = {"feature": feature, "kind": "rate", "reference_n": ref_n, "current_n": cur_n, "psi": None, "kl": None,
            "statistic": None, "p_value": None, "drifted": False}
    if min(ref_n, cur_n) < min_samples:
        side = "current window" if cur_n < min_samples else "reference"
        return {**base, "reason": f"not tested: {min(ref_n, cur_n)} values in the {side}, at least {min_samples} are "
                                  "needed for a meaningful test"}
    ref_rate, cur_rate = ref_hits / ref_n, cur_hits / cur_n
    table = [[cur_hits, cur_n - cur_hits], [ref_hits, ref_n - ref_hits]]
    p = float(stats.fisher_exact(table, alternative="less").pvalue)
    drop = ref_rate - cur_rate
    drifted = drop >= min_drop and p < p_value
    reason = (f"{'drifted' if drifted else 'stable'}: {cur_rate:.1%} of {cur_n} against {ref_rate:.1%} of {ref_n} "
              f"(drop {drop:+.3f}, alert at {min_drop:g}), Fisher exact p={p:.2g}")
    return {**base, "statistic": drop, "p_value": p, "drifted": drifted, "reason": reason, "test": "Fisher exact",
            "current_rate": cur_rate, "reference_rate": ref_rate}
