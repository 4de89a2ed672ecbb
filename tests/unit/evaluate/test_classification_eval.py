import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, f1_score, matthews_corrcoef, precision_recall_fscore_support

from tunelab.evaluate.compare import paired_bootstrap
from tunelab.evaluate.metrics import accuracy, classification_metrics, macro_f1, mcc, slice_metrics

Y_TRUE = [0, 0, 1, 1, 2, 2]
Y_PRED = [0, 1, 1, 1, 2, 0]


def test_golden_values_computed_by_hand():
    # class 0: tp 1, fp 1, fn 1 -> f1 0.5; class 1: tp 2, fp 1, fn 0 -> f1 0.8; class 2: tp 1, fp 0, fn 1 -> 2/3
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)
    assert macro_f1(Y_TRUE, Y_PRED) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    report = classification_metrics(Y_TRUE, Y_PRED, ["a", "b", "c"])
    assert report["per_class"]["b"] == {"precision": pytest.approx(2 / 3), "recall": 1.0, "f1": pytest.approx(0.8),
                                        "support": 2}
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_agrees_with_sklearn_on_random_labels():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 4, 500), rng.integers(0, 4, 500)
    assert macro_f1(y_true, y_pred) == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert mcc(y_true, y_pred) == pytest.approx(matthews_corrcoef(y_true, y_pred))


def test_per_class_figures_and_confusion_matrix_agree_with_sklearn():
    rng = np.random.default_rng(2)
    y_true, y_pred = rng.integers(0, 5, 400), rng.integers(0, 5, 400)
    report = classification_metrics(y_true, y_pred, ["a", "b", "c", "d", "e"])
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred)
    for i, label in enumerate("abcde"):
        assert report["per_class"][label] == {"precision": pytest.approx(precision[i]), "recall": pytest.approx(recall[i]),
                                              "f1": pytest.approx(f1[i]), "support": support[i]}
    assert report["confusion_matrix"] == confusion_matrix(y_true, y_pred).tolist()
    assert report["mcc"] == pytest.approx(matthews_corrcoef(y_true, y_pred)) and report["examples"] == 400


def test_probabilities_add_ece_and_brier():
    # argmax predictions 0, 1, 1 against truth 0, 1, 0: confidences .75 (right), .75 (right), .625 (wrong),
    # all in the bin (.5, 1] of two: ECE = |2 right - (.75 + .75 + .625)| / 3 = .125 / 3
    # Brier: (.25² + .25²) + (.25² + .25²) + (.625² + .625²) = .125 + .125 + .78125 -> 1.03125 / 3
    probabilities = [[.75, .25], [.25, .75], [.375, .625]]
    report = classification_metrics([0, 1, 0], [0, 1, 1], ["no", "yes"], probabilities=probabilities, bins=2)
    assert report["ece"] == pytest.approx(0.125 / 3)
    assert report["brier"] == pytest.approx(1.03125 / 3)
    assert "ece" not in classification_metrics([0, 1, 0], [0, 1, 1], ["no", "yes"])


def test_slice_metrics_by_group():
    # group x: examples 0-3, truth 0 0 1 1, predicted 0 1 1 1 -> accuracy 3/4,
    #   F1 class 0 (tp1 fp0 fn1) 2/3, class 1 (tp2 fp1 fn0) 4/5 -> macro 11/15,
    #   MCC (3*4 - (1*2 + 3*2)) / sqrt((16 - 10) * (16 - 8)) = 4 / sqrt(48)
    # group y: examples 4-5, truth 2 2, predicted 2 2 -> accuracy 1, macro-F1 over class 2 only: 1,
    #   MCC undefined with a single label: None
    report = slice_metrics([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 2], ["x", "x", "x", "x", "y", "y"])
    assert report == {"x": {"accuracy": 0.75, "macro_f1": pytest.approx(11 / 15), "mcc": pytest.approx(4 / 48 ** 0.5),
                            "examples": 4},
                      "y": {"accuracy": 1.0, "macro_f1": 1.0, "mcc": None, "examples": 2}}


def test_macro_f1_counts_a_class_never_predicted_nor_present_when_told_the_label_count():
    assert macro_f1([0, 1], [0, 1], n_labels=3) == pytest.approx(2 / 3)


def test_paired_bootstrap_verdicts():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    good = np.where(rng.random(400) < 0.9, y, 1 - y)
    bad = np.where(rng.random(400) < 0.6, y, 1 - y)
    better = paired_bootstrap(accuracy, y, good, bad, resamples=300)
    assert better["verdict"] == "better" and better["ci_low"] > 0
    assert better["difference"] == pytest.approx(accuracy(y, good) - accuracy(y, bad))
    assert paired_bootstrap(accuracy, y, bad, good, resamples=300)["verdict"] == "worse"
    same = paired_bootstrap(accuracy, y, good, good.copy(), resamples=300)
    assert same["verdict"] == "no significant difference" and same["difference"] == 0
    assert paired_bootstrap(accuracy, y, good, bad, resamples=300, seed=7) == \
        paired_bootstrap(accuracy, y, good, bad, resamples=300, seed=7)
