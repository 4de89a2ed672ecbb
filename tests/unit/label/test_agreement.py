"""Agreement: Fleiss' kappa against hand-computed golden values, Cohen's against sklearn's, and
conflicts kept apart rather than settled by a vote."""
import pytest
from sklearn.metrics import cohen_kappa_score

from tunelab.label.agreement import agreement, cohen_kappa, fleiss_kappa, resolve

# Fleiss (1971)'s form of the statistic on the classic worked example: 10 items, 14 raters each,
# 5 categories. P_bar = 0.3778, P_e = 0.2128 (p_j = .143 .200 .279 .171 .207), kappa = 0.2099.
FLEISS_EXAMPLE = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                  [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]


def test_fleiss_kappa_golden_values():
    assert fleiss_kappa(FLEISS_EXAMPLE) == pytest.approx(0.20993, abs=1e-4)
    # by hand: items [3,0], [0,3], [2,1]: P_i = 1, 1, 1/3 -> P_bar 7/9; p = 5/9, 4/9 -> P_e 41/81;
    # kappa = (7/9 - 41/81) / (40/81) = 22/40
    assert fleiss_kappa([[3, 0], [0, 3], [2, 1]]) == pytest.approx(0.55)
    # perfect agreement across categories is 1; systematic disagreement is below 0
    assert fleiss_kappa([[2, 0], [0, 2]]) == pytest.approx(1.0)
    assert fleiss_kappa([[1, 1], [1, 1]]) == pytest.approx(-1.0)


def test_fleiss_kappa_with_different_numbers_of_raters():
    # items [2,0] (2 raters) and [1,2] (3 raters): P_i = 1 and 1/3; p = 3/5, 2/5 -> P_e = 13/25
    # kappa = (2/3 - 13/25) / (12/25) = (50/75 - 39/75) / (36/75) = 11/36
    assert fleiss_kappa([[2, 0], [1, 2]]) == pytest.approx(11 / 36)
    with pytest.raises(ValueError):
        fleiss_kappa([[1, 0], [2, 0]])


def test_cohen_kappa_is_sklearns():
    a = ["pos", "neg", "pos", "neu", "neg", "pos", "pos", "neu"]
    b = ["pos", "neg", "neg", "neu", "neg", "pos", "neu", "neu"]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    assert cohen_kappa(["x", "x"], ["x", "x"]) == 1.0


def test_agreement_picks_cohen_for_two_annotators_and_fleiss_for_more():
    two = {1: {"ann": "pos", "bob": "pos"}, 2: {"ann": "neg", "bob": "pos"}, 3: {"ann": "neg", "bob": "neg"},
           4: {"ann": "pos"}}
    found = agreement(two)
    assert found["measure"] == "cohen" and found["items"] == 3 and found["annotators"] == ["ann", "bob"]
    assert found["kappa"] == pytest.approx(cohen_kappa_score(["pos", "neg", "neg"], ["pos", "pos", "neg"]), abs=1e-4)
    assert found["percent_agreement"] == pytest.approx(2 / 3, abs=1e-4)
    three = {1: {"a": "x", "b": "x", "c": "x"}, 2: {"a": "y", "b": "y", "c": "x"}, 3: {"a": "y", "c": "y"}}
    found = agreement(three)
    # counts [3,0], [1,2], [0,2] over categories x, y
    assert found["measure"] == "fleiss" and found["kappa"] == pytest.approx(fleiss_kappa([[3, 0], [1, 2], [0, 2]]),
                                                                            abs=1e-4)
    assert agreement({1: {"a": "x"}}) is None


def test_disagreements_are_conflicts_not_votes():
    agreed, conflicts = resolve({1: {"a": "x", "b": "x"}, 2: {"a": "x", "b": "y", "c": "x"}, 3: {"a": "z"}})
    assert agreed == {1: "x", 3: "z"}
    assert conflicts == {2: {"a": "x", "b": "y", "c": "x"}}
