"""scikit-learn's estimator checks, where they apply, and table-based counterparts where not.

The engagement estimators take event tables (customer id, item id, timestamp, ...) or, for the
bandits, a log of arm names and rewards, not a numeric X matrix. So the API checks run as they
are (construction, get/set_params, clone, repr, no attributes set in ``__init__``, unfitted
errors) and must pass; the checks that feed random numeric matrices are marked expected to
fail with the reason, and the properties they guard are tested below on real tables.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from omnicast_engagement import synthetic
from omnicast_engagement._tables import InvalidInput
from omnicast_engagement.bandit import LinearThompsonBandit, ThompsonBandit
from omnicast_engagement.best_channel import BestChannel
from omnicast_engagement.recommend import ItemToItemRecommender, PopularityRecommender
from omnicast_engagement.send_time import SendTimeOptimizer
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

TABLE_INPUT = "X is an event table with named columns, not a numeric matrix"
BANDIT_INPUT = "fit replays a log of arm names and rewards, not a numeric matrix"
DATA_CHECKS = (
    "check_fit_score_takes_y", "check_estimators_overwrite_params", "check_dont_overwrite_parameters",
    "check_estimators_fit_returns_self", "check_readonly_memmap_input", "check_n_features_in_after_fitting",
    "check_positive_only_tag_during_fit", "check_estimators_dtypes", "check_complex_data", "check_dtype_object",
    "check_estimators_empty_data_messages", "check_pipeline_consistency", "check_estimators_nan_inf",
    "check_estimator_sparse_tag", "check_estimator_sparse_array", "check_estimator_sparse_matrix",
    "check_estimators_pickle", "check_f_contiguous_array_estimator", "check_methods_sample_order_invariance",
    "check_methods_subset_invariance", "check_fit2d_1sample", "check_fit2d_1feature", "check_dict_unchanged",
    "check_fit_idempotent", "check_fit_check_is_fitted", "check_n_features_in", "check_fit2d_predict1d",
)
ESTIMATORS = [ItemToItemRecommender(), PopularityRecommender(), SendTimeOptimizer(), BestChannel(),
              ThompsonBandit(), LinearThompsonBandit()]


def not_applicable(estimator):
    reason = BANDIT_INPUT if isinstance(estimator, ThompsonBandit | LinearThompsonBandit) else TABLE_INPUT
    return dict.fromkeys(DATA_CHECKS, reason)


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=not_applicable)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# --------------------------------------------------------------------------- table-based counterparts
def tables():
    rng = np.random.default_rng(0)
    inter = synthetic.interactions(300, 60, n_groups=6, seed=1)
    opens = {"customer_id": rng.integers(0, 50, 500).astype(str),
             "timestamp": synthetic.T0 + rng.random(500) * 30 * synthetic.DAY}
    outcomes = {"customer_id": rng.integers(0, 50, 500).astype(str),
                "channel": rng.choice(["email", "sms"], 500), "engaged": rng.integers(0, 2, 500)}
    return [
        (ItemToItemRecommender(n_neighbors=10), inter, "customer_id"),
        (PopularityRecommender(), inter, "customer_id"),
        (SendTimeOptimizer(), opens, "timestamp"),
        (BestChannel(), outcomes, "engaged"),
    ]


def fitted_state(est):
    out = {}
    for name, value in vars(est).items():
        if name.endswith("_") and not name.startswith("_"):
            out[name] = value.toarray() if hasattr(value, "toarray") else value
    return out


def same_state(a, b):
    assert a.keys() == b.keys()
    for name in a:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        if x.dtype.kind in "fc":
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-9, err_msg=name)
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.mark.parametrize(("estimator", "table", "numeric"), tables(), ids=lambda v: type(v).__name__)
def test_fit_on_tables_behaves_like_an_estimator(estimator, table, numeric):
    params = estimator.get_params()
    with pytest.raises(NotFittedError):
        _use(estimator)
    assert estimator.fit(table) is estimator  # fit returns self
    assert estimator.get_params() == params  # and does not touch the hyper-parameters
    first = fitted_state(estimator)
    assert first  # learned state lives in trailing-underscore attributes
    same_state(first, fitted_state(estimator.fit(table)))  # idempotent
    order = np.random.default_rng(3).permutation(len(table[numeric]))
    same_state(first, fitted_state(clone(estimator).fit({k: np.asarray(v)[order] for k, v in table.items()})))
    assert not fitted_state(clone(estimator))  # a clone is unfitted
    same_state(first, fitted_state(pickle.loads(pickle.dumps(estimator))))  # picklable in-process (joblib)
    same_state(first, fitted_state(type(estimator).from_bytes(estimator.to_bytes())))  # the artifact format


def _use(estimator):
    if isinstance(estimator, ItemToItemRecommender | PopularityRecommender):
        return estimator.recommend(["a"], 1)
    if isinstance(estimator, SendTimeOptimizer):
        return estimator.best_hours(["a"])
    return estimator.best_channels(["a"])


@pytest.mark.parametrize(("estimator", "table", "numeric"), tables(), ids=lambda v: type(v).__name__)
def test_bad_values_and_empty_tables_are_named(estimator, table, numeric):
    if numeric in ("timestamp", "engaged"):
        bad = {k: np.asarray(v).copy() for k, v in table.items()}
        bad[numeric] = bad[numeric].astype(float)
        bad[numeric][3] = np.nan
        with pytest.raises(InvalidInput) as err:
            clone(estimator).fit(bad)
        assert err.value.field == numeric
    empty = {k: np.asarray(v)[:0] for k, v in table.items()}
    with pytest.raises(InvalidInput):
        clone(estimator).fit(empty)


def test_bandit_fit_replays_and_is_idempotent():
    log = (["A", "B", "A", "B"] * 50, [0, 1, 0, 0] * 50)
    bandit = ThompsonBandit(random_state=1)
    params = bandit.get_params()
    assert bandit.fit(*log) is bandit and bandit.get_params() == params
    first = fitted_state(bandit)
    same_state(first, fitted_state(bandit.fit(*log)))
    same_state(first, fitted_state(pickle.loads(pickle.dumps(bandit))))
    linear = LinearThompsonBandit(n_features=1)
    assert linear.fit(*log, contexts=[[0.0], [1.0]] * 100) is linear
    same_state(fitted_state(linear), fitted_state(LinearThompsonBandit.from_bytes(linear.to_bytes())))
