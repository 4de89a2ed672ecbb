"""Uncertainty scores against hand-computed values, and k-center greedy's spread."""
import math

import numpy as np
import pytest

from tunelab.label.uncertainty import (classifier_uncertainty, entropy, generative_uncertainty, k_center_greedy,
                                       least_confidence, margin, most_uncertain)

P = np.array([[0.5, 0.5, 0.0], [0.8, 0.1, 0.1], [1 / 3, 1 / 3, 1 / 3]])


def test_scores_by_hand():
    assert entropy(P) == pytest.approx([math.log(2), -(0.8 * math.log(0.8) + 0.2 * math.log(0.1)), math.log(3)])
    assert margin(P) == pytest.approx([1.0, 0.3, 1.0])
    assert least_confidence(P) == pytest.approx([0.5, 0.2, 2 / 3])
    assert classifier_uncertainty(P, "margin") == pytest.approx(margin(P))
    with pytest.raises(ValueError):
        classifier_uncertainty(P, "vibes")


def test_most_uncertain_orders_highest_first_ties_by_position():
    assert most_uncertain(np.array([0.2, 0.9, 0.9, 0.1]), 3).tolist() == [1, 2, 0]


def test_generative_uncertainty_adds_the_feedback_weight():
    scores = generative_uncertainty(np.array([-0.1, -2.0, -0.1]), np.array([0, 0, 1]), weight=1.5)
    assert scores == pytest.approx([0.1, 2.0, 1.6])


def test_k_center_greedy_spreads_over_clusters():
    rng = np.random.default_rng(0)
    centres = np.eye(4)
    points = np.vstack([c + 0.01 * rng.normal(size=(10, 4)) for c in centres])
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    picked = k_center_greedy(points, 4, first=0)
    assert picked[0] == 0 and sorted(p // 10 for p in picked) == [0, 1, 2, 3]  # one from each cluster
    # away from what is labelled: with cluster 0 labelled, the first pick is elsewhere
    assert k_center_greedy(points, 1, labelled=points[:1])[0] // 10 != 0
    assert k_center_greedy(points, 0) == [] and len(set(k_center_greedy(points, 40))) == 40
