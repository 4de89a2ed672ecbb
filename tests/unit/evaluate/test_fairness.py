import numpy as np
import pytest
from fairlearn.metrics import MetricFrame, equal_opportunity_difference, true_positive_rate

from tunelab.evaluate.fairness import group_fairness

LABELS = ["neg", "neu", "pos"]
# group a (5): true 0 0 1 2 2, predicted 0 1 1 2 0 -> TPR neg 1/2, neu 1/1, pos 1/2; accuracy 3/5
#   F1 neg (tp1 fp1 fn1) .5, neu (tp1 fp1 fn0) 2/3, pos (tp1 fp0 fn1) 2/3 -> macro (.5 + 2/3 + 2/3) / 3 = 11/18
#   MCC: correct 3 of 5, true counts (2,1,2), predicted counts (2,2,1):
#        (3*5 - (4+2+2)) / sqrt((25 - 9) * (25 - 9)) = 7/16
# group b (5): true 0 0 0 1 2, predicted 0 0 2 1 1 -> TPR neg 2/3, neu 1, pos 0; accuracy 3/5
# group c (2): true 0 0, predicted 0 0 -> TPR neg 1, neu None, pos None (no such examples)
# with min_group_size 3, c is reported but not compared:
#   gap neg |2/3 - 1/2| = 1/6, neu |1 - 1| = 0, pos |1/2 - 0| = 1/2; above .2: pos only
Y_TRUE = [0, 0, 1, 2, 2] + [0, 0, 0, 1, 2] + [0, 0]
Y_PRED = [0, 1, 1, 2, 0] + [0, 0, 2, 1, 1] + [0, 0]
GROUPS = ["a"] * 5 + ["b"] * 5 + ["c"] * 2


def test_group_fairness_computed_by_hand():
    report = group_fairness(Y_TRUE, Y_PRED, GROUPS, LABELS, max_gap=0.2, min_group_size=3)
    assert report["metric"] == "tpr"
    assert report["groups"]["a"] == {"examples": 5, "tpr": {"neg": 0.5, "neu": 1.0, "pos": 0.5}, "accuracy": 0.6,
                                     "macro_f1": pytest.approx(11 / 18), "mcc": pytest.approx(7 / 16)}
    assert report["groups"]["b"]["tpr"] == {"neg": pytest.approx(2 / 3), "neu": 1.0, "pos": 0.0}
    assert report["groups"]["c"]["tpr"] == {"neg": 1.0, "neu": None, "pos": None}
    assert report["groups"]["c"]["mcc"] is None  # one label in truth and predictions: MCC undefined
    assert report["equal_opportunity_difference"] == {"neg": pytest.approx(1 / 6), "neu": 0.0, "pos": 0.5}
    assert report["max_gap"] == 0.5 and report["threshold"] == 0.2
    assert report["flagged"] and report["flagged_labels"] == ["pos"]
    assert report["compared_groups"] == ["a", "b"]
    assert "positive_class_gap" not in report  # three labels: no single positive class


def test_small_groups_join_the_comparison_when_large_enough():
    # c now counts: neg gap becomes 1 - 1/2; neu and pos still compare a and b only (c has none)
    report = group_fairness(Y_TRUE, Y_PRED, GROUPS, LABELS, max_gap=0.2, min_group_size=2)
    assert report["equal_opportunity_difference"] == {"neg": 0.5, "neu": 0.0, "pos": 0.5}
    assert report["flagged_labels"] == ["neg", "pos"]


def test_nothing_to_compare_is_not_flagged():
    report = group_fairness(Y_TRUE, Y_PRED, GROUPS, LABELS, min_group_size=6)
    assert report["equal_opportunity_difference"] == {} and report["max_gap"] == 0.0
    assert not report["flagged"] and report["compared_groups"] == []
    assert set(report["groups"]) == {"a", "b", "c"}  # still reported


def test_equal_rates_are_not_flagged():
    y_true = [0, 1] * 10
    report = group_fairness(y_true, y_true, ["x"] * 10 + ["y"] * 10, ["no", "yes"], max_gap=0.0, min_group_size=10)
    assert report["equal_opportunity_difference"] == {"no": 0.0, "yes": 0.0}
    assert not report["flagged"] and report["positive_class_gap"] == 0.0


def test_binary_positive_class_gap_agrees_with_fairlearn():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, 600)
    groups = rng.choice(["north", "south", "west"], 600)
    # the model is right 90% of the time in north, 70% elsewhere
    right = rng.random(600) < np.where(groups == "north", 0.9, 0.7)
    y_pred = np.where(right, y_true, 1 - y_true)
    report = group_fairness(y_true, y_pred, groups, ["no", "yes"], max_gap=0.03)
    assert report["positive_label"] == "yes"
    assert report["positive_class_gap"] == pytest.approx(equal_opportunity_difference(y_true, y_pred,
                                                                                      sensitive_features=groups))
    assert report["flagged"]


def test_one_vs_rest_tpr_and_gaps_agree_with_fairlearn_metricframe():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 4, 800)
    y_pred = np.where(rng.random(800) < 0.6, y_true, rng.integers(0, 4, 800))
    groups = rng.integers(0, 3, 800)
    labels = ["w", "x", "y", "z"]
    report = group_fairness(y_true, y_pred, groups, labels, min_group_size=1)
    for index, label in enumerate(labels):
        frame = MetricFrame(metrics=true_positive_rate, y_true=(y_true == index).astype(int),
                            y_pred=(y_pred == index).astype(int), sensitive_features=groups)
        for group, rate in frame.by_group.items():
            assert report["groups"][str(group)]["tpr"][label] == pytest.approx(rate)
        assert report["equal_opportunity_difference"][label] == pytest.approx(frame.difference())
    assert report["max_gap"] == pytest.approx(max(report["equal_opportunity_difference"].values()))
