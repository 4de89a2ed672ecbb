"""Drift statistics: golden values computed by hand, identical samples, shifted samples, and
agreement with scipy's own tests."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tunelab.monitor import drift


def test_psi_matches_a_hand_computed_case():
    # reference 1..10 in two quantile bins split at the median 5.5: shares 0.5 / 0.5;
    # current 1..8: five values below 5.5, three above: shares 0.625 / 0.375
    expected = (0.625 - 0.5) * math.log(0.625 / 0.5) + (0.375 - 0.5) * math.log(0.375 / 0.5)
    psi = drift.population_stability_index(list(range(1, 11)), list(range(1, 9)), bins=2)
    assert psi == pytest.approx(expected, rel=1e-12)
    assert psi == pytest.approx(0.0638532, abs=1e-7)


def test_empty_bin_counts_as_the_epsilon_share():
    # every current value below the median: the upper bin is empty, its share becomes 1e-4
    eps = drift.EMPTY_BIN_SHARE
    expected = (1 - 0.5) * math.log(1 / 0.5) + (eps - 0.5) * math.log(eps / 0.5)
    psi = drift.population_stability_index(list(range(1, 11)), [1, 1, 2, 3], bins=2)
    assert psi == pytest.approx(expected, rel=1e-12)
    assert math.isfinite(psi) and psi == pytest.approx(4.6043, abs=1e-4)


def test_values_beyond_the_reference_range_fall_in_the_outer_bins():
    edges = drift.quantile_edges(list(range(1, 11)), bins=2)
    assert drift.binned_shares([-100, 100], edges).tolist() == [0.5, 0.5]


def test_constant_reference_still_sees_larger_and_smaller_values():
    assert drift.population_stability_index([5] * 50, [9] * 50) > 1
    assert drift.population_stability_index([5] * 50, [1] * 50) > 1
    assert drift.population_stability_index([5] * 50, [5] * 50) == 0


def test_categorical_psi_hand_computed_and_unseen_category():
    expected = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert drift.categorical_psi({"a": 50, "b": 50}, {"a": 80, "b": 20}) == pytest.approx(expected, rel=1e-12)
    assert drift.categorical_psi({"a": 5, "b": 5}, {"a": 5, "b": 5}) == 0
    # a label never seen in the reference is an empty reference bin, not a crash
    eps = drift.EMPTY_BIN_SHARE
    new = drift.categorical_psi({"a": 10}, {"a": 5, "c": 5})
    assert new == pytest.approx((0.5 - 1) * math.log(0.5) + (0.5 - eps) * math.log(0.5 / eps), rel=1e-12)


def test_tests_agree_with_scipy():
    rng = np.random.default_rng(0)
    ref, cur = rng.normal(0, 1, 300), rng.normal(0.3, 1, 200)
    reference = stats.ks_2samp(ref, cur)
    assert drift.ks_test(ref, cur) == pytest.approx((reference.statistic, reference.pvalue))
    ref_counts, cur_counts = {"a": 40, "b": 30, "c": 30}, {"a": 20, "b": 50, "c": 30}
    result = stats.chi2_contingency([[40, 30, 30], [20, 50, 30]])
    assert drift.chi_square_test(ref_counts, cur_counts) == pytest.approx((result.statistic, result.pvalue))


def test_chi_square_statistic_matches_the_textbook_formula():
    observed = np.array([[40, 30, 30], [20, 50, 30]], dtype=float)
    expected = observed.sum(1, keepdims=True) * observed.sum(0, keepdims=True) / observed.sum()
    by_hand = float(((observed - expected) ** 2 / expected).sum())
    statistic, p = drift.chi_square_test({"a": 40, "b": 30, "c": 30}, {"a": 20, "b": 50, "c": 30})
    assert statistic == pytest.approx(by_hand, rel=1e-12)
    assert p == pytest.approx(stats.chi2.sf(by_hand, df=2), rel=1e-9)


def test_chi_square_with_one_category_has_nothing_to_compare():
    assert drift.chi_square_test({"a": 10}, {"a": 3}) == (0.0, 1.0)


def test_identical_samples_do_not_drift():
    rng = np.random.default_rng(1)
    values = rng.normal(50, 10, 400).tolist()
    result = drift.feature_drift("input_chars", values, list(values), kind="numeric")
    assert result["psi"] == 0 and result["p_value"] == 1.0 and result["drifted"] is False
    labels = ["pos"] * 30 + ["neg"] * 20
    result = drift.feature_drift("label", labels, list(labels), kind="categorical")
    assert result["psi"] == 0 and result["drifted"] is False


def test_two_draws_of_one_distribution_do_not_drift():
    rng = np.random.default_rng(2)
    result = drift.feature_drift("x", rng.normal(0, 1, 1000), rng.normal(0, 1, 500), kind="numeric")
    assert result["drifted"] is False and result["psi"] < 0.1


def test_shifted_normal_drifts():
    rng = np.random.default_rng(3)
    result = drift.feature_drift("x", rng.normal(0, 1, 1000), rng.normal(1.5, 1, 300), kind="numeric")
    assert result["drifted"] is True
    assert result["psi"] > 0.2 and result["p_value"] < 1e-6
    assert result["current_mean"] > result["reference_mean"] + 1
    bins = result["bins"]
    assert len(bins["edges"]) == len(bins["reference"]) + 1 == len(bins["current"]) + 1
    assert sum(bins["reference"]) == pytest.approx(1, abs=1e-3)


def test_a_big_psi_without_significance_is_not_drift():
    # 30 values either side: PSI is large by chance far more often than the test is significant
    ref, cur = [1] * 15 + [2] * 15, [1] * 10 + [2] * 20
    result = drift.feature_drift("x", ref, cur, kind="categorical", psi_threshold=0.05)
    assert result["psi"] > 0.05 and result["p_value"] > 0.01 and result["drifted"] is False


def test_small_windows_are_not_tested():
    result = drift.feature_drift("x", list(range(100)), [1, 2, 3], kind="numeric", min_samples=30)
    assert result["drifted"] is False and result["psi"] is None and result["p_value"] is None
    assert "3 values in the current window" in result["reason"]


def test_mean_drop_against_a_known_mean_and_against_samples():
    rng = np.random.default_rng(4)
    low = np.clip(rng.normal(0.7, 0.1, 100), 0, 1)
    fell = drift.mean_drop(0.9, low, min_drop=0.1)
    assert fell["drifted"] is True and fell["statistic"] == pytest.approx(0.9 - low.mean())
    same = drift.mean_drop(np.clip(rng.normal(0.7, 0.1, 100), 0, 1), low, min_drop=0.1)
    assert same["drifted"] is False
    expected = stats.ttest_1samp(low, 0.9, alternative="less").pvalue
    assert fell["p_value"] == pytest.approx(expected)


def test_error_rate_uses_an_exact_binomial_test():
    assert drift.rate_above("error_rate", 3, 3, max_rate=0.05)["drifted"] is True
    assert drift.rate_above("error_rate", 3, 3, max_rate=0.05)["p_value"] == pytest.approx(0.05 ** 3)
    assert drift.rate_above("error_rate", 1, 100, max_rate=0.05)["drifted"] is False
    assert drift.rate_above("error_rate", 0, 0, max_rate=0.05)["p_value"] is None
