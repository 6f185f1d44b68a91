"""RFM: quantile scores 1-5 for recency, frequency and monetary value, and named segments.

``fit`` learns the quintile edges of each of (recency_days, orders, monetary) over the
shop's customers; ``transform`` gives the scores (5 = most recent, most frequent,
highest spend; ties go to the lower score, so the many one-order customers all get
F = 1); ``predict`` gives the segment name from R and FM = round((F + M) / 2):

| R \\ FM | 1 | 2 | 3 | 4 | 5 |
|---|---|---|---|---|---|
| 5 | New | Potential Loyalist | Potential Loyalist | Champions | Champions |
| 4 | Promising | Potential Loyalist | Potential Loyalist | Loyal | Loyal |
| 3 | Needs Attention | Needs Attention | Needs Attention | Loyal | Loyal |
| 2 | Hibernating | Hibernating | At Risk | At Risk | Can't Lose Them |
| 1 | Lost | Hibernating | At Risk | At Risk | Can't Lose Them |
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

SEGMENTS = (
    "Champions", "Loyal", "Potential Loyalist", "New", "Promising", "Needs Attention",
    "At Risk", "Can't Lose Them", "Hibernating", "Lost",
)
# SEGMENT_GRID[R - 1][FM - 1]
SEGMENT_GRID = (
    ("Lost", "Hibernating", "At Risk", "At Risk", "Can't Lose Them"),
    ("Hibernating", "Hibernating", "At Risk", "At Risk", "Can't Lose Them"),
    ("Needs Attention", "Needs Attention", "Needs Attention", "Loyal", "Loyal"),
    ("Promising", "Potential Loyalist", "Potential Loyalist", "Loyal", "Loyal"),
    ("New", "Potential Loyalist", "Potential Loyalist", "Champions", "Champions"),
)


class RFMSegmenter(TransformerMixin, BaseEstimator):
    """X = (recency_days, frequency, monetary) per customer (any further columns are scored
    the same way, higher is better).

    Parameters: ``n_bins`` (5), ``lower_is_better`` (column indices where fewer is better:
    recency). Learned: ``edges_`` (columns x (n_bins - 1) quantile edges).
    ``transform`` -> integer scores 1..n_bins; ``segment`` -> segment names (3 columns, 5 bins).
    """

    def __init__(self, n_bins: int = 5, lower_is_better: tuple[int, ...] = (0,)) -> None:
        self.n_bins = n_bins
        self.lower_is_better = lower_is_better

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = []  # scores are integers whatever the input
        return tags

    def fit(self, X: Any, y: Any = None) -> RFMSegmenter:
        X = validate_data(self, X, dtype=np.float64)
        if self.n_bins < 2:
            raise ValueError("n_bins must be at least 2")
        qs = np.linspace(0, 1, self.n_bins + 1)[1:-1]
        self.edges_ = np.quantile(X, qs, axis=0).T
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "edges_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        scores = np.empty(X.shape, dtype=np.int64)
        for j in range(X.shape[1]):
            if j in self.lower_is_better:  # fewest days since the last order scores highest
                scores[:, j] = self.n_bins - np.searchsorted(self.edges_[j], X[:, j], side="right")
            else:  # ties at an edge take the lower bin: every one-order customer gets F = 1
                scores[:, j] = 1 + np.searchsorted(self.edges_[j], X[:, j], side="left")
        return scores

    @staticmethod
    def segments(scores: np.ndarray) -> np.ndarray:
        """Segment names from (R, F, M) scores 1-5 (the table above)."""
        r = np.clip(scores[:, 0], 1, 5)
        fm = np.clip(np.floor((scores[:, 1] + scores[:, 2]) / 2 + 0.5).astype(np.int64), 1, 5)
        grid = np.array(SEGMENT_GRID, dtype=object)
        return np.asarray(grid[r - 1, fm - 1])

    def segment(self, X: Any) -> np.ndarray:
        """Segment names of customers given (recency_days, frequency, monetary)."""
        scores = self.transform(X)
        if scores.shape[1] != 3 or self.n_bins != 5:
            raise ValueError("segments need 3 columns (recency_days, frequency, monetary) and 5 bins")
        return self.segments(scores)
