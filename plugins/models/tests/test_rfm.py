"""RFM quintile scores and the documented segment table."""

from __future__ import annotations

import numpy as np
import pytest
from omnicast_models.rfm import SEGMENT_GRID, SEGMENTS, RFMSegmenter


def test_scores_are_quintiles_with_recent_frequent_and_big_spenders_high():
    rng = np.random.default_rng(0)
    n = 1000
    X = np.column_stack([rng.uniform(0, 365, n), rng.integers(1, 10, n), rng.gamma(2, 50, n)])
    est = RFMSegmenter().fit(X)
    scores = est.transform(X)
    assert scores.min() == 1 and scores.max() == 5
    # each monetary quintile holds a fifth of the customers (continuous values: no ties)
    assert np.bincount(scores[:, 2])[1:].tolist() == [200] * 5
    best = np.array([[0.0, 9, 10_000.0]])
    worst = np.array([[364.0, 1, 1.0]])
    assert est.transform(best).tolist() == [[5, 5, 5]]
    assert est.transform(worst).tolist() == [[1, 1, 1]]
    assert est.segment(best).tolist() == ["Champions"] and est.segment(worst).tolist() == ["Lost"]


def test_one_order_customers_all_get_the_lowest_frequency():
    X = np.column_stack([np.arange(100.0), [1] * 70 + [2] * 20 + [5] * 10, np.full(100, 50.0)])
    scores = RFMSegmenter().fit(X).transform(X)
    assert set(scores[:70, 1].tolist()) == {1}
    assert set(scores[90:, 1].tolist()) == {5}


@pytest.mark.parametrize("r,f,m,segment", [
    (5, 5, 5, "Champions"), (5, 4, 4, "Champions"), (4, 5, 4, "Loyal"), (3, 4, 5, "Loyal"),
    (5, 2, 3, "Potential Loyalist"), (4, 3, 2, "Potential Loyalist"), (5, 1, 1, "New"), (4, 1, 1, "Promising"),
    (3, 2, 3, "Needs Attention"), (2, 3, 4, "At Risk"), (1, 4, 3, "At Risk"), (1, 5, 5, "Can't Lose Them"),
    (2, 1, 2, "Hibernating"), (1, 2, 1, "Hibernating"), (1, 1, 1, "Lost"),
])
def test_segment_table(r, f, m, segment):
    assert RFMSegmenter.segments(np.array([[r, f, m]])).tolist() == [segment]


def test_every_named_segment_is_reachable_and_only_those():
    grid = {name for row in SEGMENT_GRID for name in row}
    assert grid == set(SEGMENTS) and len(SEGMENTS) == 10
