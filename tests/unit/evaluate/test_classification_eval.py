import numpy as np
import pytest
from sklearn.metrics import f1_score, matthews_corrcoef

from tunelab.evaluate.compare import paired_bootstrap
from tunelab.evaluate.metrics import accuracy, classification_metrics, macro_f1, mcc

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
