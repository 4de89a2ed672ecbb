import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from tunelab.evaluate.calibration import (brier_score, calibration_report, expected_calibration_error,
                                          reliability_bins)

# Eight examples, three labels, four bins with edges 0, .25, .5, .75, 1 (bins are (low, high]).
#  #  probabilities             true  top label  confidence  correct  bin
#  1  (.5,    .25,   .25)       0     0          .5          1        (.25, .5]   on an edge: lower bin
#  2  (.375,  .375,  .25)       1     0 (tie)    .375        0        (.25, .5]   argmax takes the first
#  3  (.625,  .25,   .125)      0     0          .625        1        (.5, .75]
#  4  (.125,  .75,   .125)      2     1          .75         0        (.5, .75]   on an edge: lower bin
#  5  (.0625, .875,  .0625)     1     1          .875        1        (.75, 1]
#  6  (1,     0,     0)         0     0          1           1        (.75, 1]
#  7  (0,     .125,  .875)      2     2          .875        1        (.75, 1]
#  8  (.25,   .6875, .0625)     0     1          .6875       0        (.5, .75]
# bin (.25,.5]: 2 examples, confidence (.5+.375)/2 = .4375, accuracy 1/2
# bin (.5,.75]: 3 examples, confidence (.625+.75+.6875)/3 = .6875, accuracy 1/3
# bin (.75,1]:  3 examples, confidence (.875+1+.875)/3 = 11/12, accuracy 1
# ECE = (2|.5-.4375| + 3|1/3-.6875| + 3|1-11/12|) / 8 = (.125 + 1.0625 + .25) / 8 = 0.1796875
# Brier, sum of squared differences to the one-hot truth per example:
#  .375, .59375, .21875, 1.34375, .0234375, 0, .03125, 1.0390625 -> total 3.625, mean 0.453125
PROBABILITIES = np.array([[.5, .25, .25], [.375, .375, .25], [.625, .25, .125], [.125, .75, .125],
                          [.0625, .875, .0625], [1, 0, 0], [0, .125, .875], [.25, .6875, .0625]])
Y_TRUE = np.array([0, 1, 0, 2, 1, 0, 2, 0])


def test_ece_and_reliability_bins_computed_by_hand():
    assert expected_calibration_error(PROBABILITIES, Y_TRUE, bins=4) == pytest.approx(0.1796875)
    assert reliability_bins(PROBABILITIES, Y_TRUE, bins=4) == [
        {"low": 0.0, "high": 0.25, "count": 0, "confidence": None, "accuracy": None},
        {"low": 0.25, "high": 0.5, "count": 2, "confidence": pytest.approx(0.4375), "accuracy": 0.5},
        {"low": 0.5, "high": 0.75, "count": 3, "confidence": pytest.approx(0.6875), "accuracy": pytest.approx(1 / 3)},
        {"low": 0.75, "high": 1.0, "count": 3, "confidence": pytest.approx(11 / 12), "accuracy": 1.0},
    ]


def test_first_bin_takes_a_confidence_of_zero_and_last_bin_takes_one():
    # confidences 0 (an all-zero row) and 1; with 2 bins: [0, .5] and (.5, 1]
    bins = reliability_bins([[0.0, 0.0], [1.0, 0.0]], [1, 0], bins=2)
    assert [row["count"] for row in bins] == [1, 1]
    assert bins[0]["accuracy"] == 0.0 and bins[1]["accuracy"] == 1.0
    assert expected_calibration_error([[0.0, 0.0], [1.0, 0.0]], [1, 0], bins=2) == 0.0


def test_brier_score_computed_by_hand():
    assert brier_score(PROBABILITIES, Y_TRUE) == pytest.approx(0.453125)
    # binary: (.2²+.2²), (.3²+.3²), (.6²+.6²) -> (.08 + .18 + .72) / 3
    assert brier_score([[.8, .2], [.3, .7], [.6, .4]], [0, 1, 1]) == pytest.approx(0.98 / 3)


def test_brier_score_agrees_with_sklearn_binary_and_multiclass():
    rng = np.random.default_rng(0)
    binary = rng.dirichlet([1, 1], 300)
    y_binary = rng.integers(0, 2, 300)
    # sklearn's binary Brier looks at the positive class only: half of the sum over both classes
    assert brier_score(binary, y_binary) == pytest.approx(2 * brier_score_loss(y_binary, binary[:, 1]))
    probabilities = rng.dirichlet([1, 1, 1, 1], 300)
    y_true = rng.integers(0, 4, 300)
    expected = np.mean(np.sum((probabilities - np.eye(4)[y_true]) ** 2, axis=1))
    assert brier_score(probabilities, y_true) == pytest.approx(expected)
    assert brier_score(probabilities, y_true) == pytest.approx(brier_score_loss(y_true, probabilities, scale_by_half=False))


def _top_label_arrays(probabilities, y_true):
    return (probabilities.argmax(axis=1) == y_true).astype(int), probabilities.max(axis=1)


@pytest.mark.parametrize("probabilities, y_true", [
    (PROBABILITIES, Y_TRUE),  # confidences on bin edges
    (np.random.default_rng(1).dirichlet([0.5, 0.5, 0.5], 500), np.random.default_rng(2).integers(0, 3, 500)),
])
def test_reliability_bins_agree_with_sklearn_calibration_curve(probabilities, y_true):
    correct, confidence = _top_label_arrays(probabilities, y_true)
    accuracy, mean_confidence = calibration_curve(correct, confidence, n_bins=4, strategy="uniform")
    filled = [row for row in reliability_bins(probabilities, y_true, bins=4) if row["count"]]
    assert [row["accuracy"] for row in filled] == pytest.approx(accuracy)
    assert [row["confidence"] for row in filled] == pytest.approx(mean_confidence)


def test_ece_agrees_with_bin_by_bin_definition_on_random_data():
    rng = np.random.default_rng(3)
    probabilities = rng.dirichlet([0.3] * 5, 1000)
    y_true = rng.integers(0, 5, 1000)
    correct, confidence = _top_label_arrays(probabilities, y_true)
    edges = np.linspace(0, 1, 16)
    expected = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            expected += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    assert expected_calibration_error(probabilities, y_true) == pytest.approx(expected)


def _binary_with_confidence(confidence, correct):
    """Two-label rows whose top label (0) has `confidence`; the true label is 0 where correct."""
    probabilities = np.stack([confidence, 1 - confidence], axis=1)
    return probabilities, np.where(correct, 0, 1)


def test_perfectly_calibrated_data_has_ece_near_zero():
    rng = np.random.default_rng(4)
    confidence = rng.uniform(0.5, 1.0, 20_000)
    probabilities, y_true = _binary_with_confidence(confidence, rng.random(20_000) < confidence)
    assert expected_calibration_error(probabilities, y_true) < 0.015


def test_overconfident_data_has_ece_of_the_confidence_accuracy_gap():
    rng = np.random.default_rng(5)
    confidence = rng.uniform(0.9, 1.0, 20_000)  # mean .95, right only 60% of the time
    probabilities, y_true = _binary_with_confidence(confidence, rng.random(20_000) < 0.6)
    assert expected_calibration_error(probabilities, y_true) == pytest.approx(0.35, abs=0.015)


def test_calibration_report_and_shape_errors():
    report = calibration_report(PROBABILITIES, Y_TRUE, bins=4)
    assert report["ece"] == pytest.approx(0.1796875) and report["brier"] == pytest.approx(0.453125)
    assert len(report["bins"]) == 4
    with pytest.raises(ValueError):
        expected_calibration_error(PROBABILITIES[:, 0], Y_TRUE)
    with pytest.raises(ValueError):
        reliability_bins(PROBABILITIES, Y_TRUE[:-1])
