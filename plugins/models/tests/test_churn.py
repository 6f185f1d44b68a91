"""The churn classifier: calibrated, and its explanation adds up to its prediction."""

from __future__ import annotations

import numpy as np
import pytest
from omnicast_models.churn import ChurnClassifier


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n = 6000
    X = rng.normal(size=(n, 4))
    X[rng.random(n) < 0.1, 2] = np.nan  # a feature some customers lack
    logit = 1.5 * X[:, 0] - 1.0 * X[:, 1] + 0.0 * X[:, 3] - 0.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


def test_probabilities_are_calibrated(data):
    X, y = data
    model = ChurnClassifier().fit(X[:4000], y[:4000])
    p = model.predict_proba(X[4000:])[:, 1]
    yt = y[4000:]
    for lo in (0.1, 0.3, 0.5, 0.7):
        sel = (p >= lo) & (p < lo + 0.2)
        assert abs(p[sel].mean() - yt[sel].mean()) < 0.06
    # informative features weigh, the useless one does not
    assert abs(model.coef_[0]) > 1 and abs(model.coef_[1]) > 0.5 and abs(model.coef_[3]) < 0.1


def test_explanation_adds_up_to_the_calibrated_log_odds(data):
    X, y = data
    model = ChurnClassifier().fit(X, y)
    contributions = model.explain(X[:50])
    logit = model.decision_function(X[:50])
    a, b = model.calibration_
    baseline = -(a * model.intercept_ + b)
    np.testing.assert_allclose(contributions.sum(axis=1) + baseline, logit, atol=1e-9)
    # the customer with the highest first feature is pushed towards churn by it most of all
    top = int(np.argmax(X[:50, 0]))
    assert int(np.argmax(contributions[top])) == 0 and contributions[top, 0] > 0


def test_state_round_trips_and_refuses_garbage(data):
    X, y = data
    model = ChurnClassifier(C=0.5).fit(X, y)
    again = ChurnClassifier.from_state(model.state())
    np.testing.assert_allclose(again.predict_proba(X), model.predict_proba(X))
    assert again.get_params()["C"] == 0.5
    bad = model.state() | {"coef": [1.0, 2.0]}
    with pytest.raises(ValueError, match="shapes"):
        ChurnClassifier.from_state(bad)
