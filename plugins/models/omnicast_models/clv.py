"""Customer lifetime value: BG/NBD for purchase counts, Gamma-Gamma for spend.

Both are fitted by maximum likelihood with ``scipy.optimize.minimize`` (L-BFGS-B on the
log of the parameters, so they stay positive) from the standard summary per customer,
with time in days:

- ``frequency`` x: repeat purchases (orders - 1), ``recency`` t_x: days from the first
  to the last purchase, ``T``: days from the first purchase to the cutoff;
- ``monetary_value``: the mean value of the repeat purchases (customers with x > 0).

BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way"): while
alive, a customer buys as a Poisson process with rate lambda ~ Gamma(r, alpha); after
each purchase they drop out with probability p ~ Beta(a, b). Gamma-Gamma (Fader, Hardie
& Lee 2005, "RFM and CLV"): each purchase's value ~ Gamma(p, nu), nu ~ Gamma(q, gamma),
independent of the purchase process.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted


def _summary(X: Any, n: int, names: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != n:
        raise ValueError(f"X must have {n} columns ({names}); got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"X ({names}) must be finite")
    if np.any(X < 0):
        raise ValueError(f"X ({names}) must not be negative")
    return X


def _fit_log_params(nll: Any, start: np.ndarray) -> tuple[np.ndarray, Any]:
    result = minimize(nll, np.log(start), method="L-BFGS-B", bounds=[(-12.0, 12.0)] * len(start))
    return np.exp(result.x), result


class BetaGeoModel(BaseEstimator):
    """BG/NBD. ``fit(X)`` with X = (frequency, recency, T) per customer, time in days.

    Parameters: ``penalizer`` (L2 on the parameters, 0 = plain MLE), ``predict_days``
    (the window of :meth:`predict`). Learned: ``r_``, ``alpha_``, ``a_``, ``b_``,
    ``log_likelihood_``, ``n_customers_``.
    """

    def __init__(self, penalizer: float = 0.0, predict_days: float = 90.0) -> None:
        self.penalizer = penalizer
        self.predict_days = predict_days

    @staticmethod
    def log_likelihood(params: np.ndarray, x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> np.ndarray:
        r, alpha, a, b = params
        a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
        a2 = betaln(a, b + x) - betaln(a, b)
        a3 = -(r + x) * np.log(alpha + T)
        with np.errstate(divide="ignore", invalid="ignore"):
            a4 = np.where(x > 0, np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + tx),
                          -np.inf)
        return np.asarray(a1 + a2 + np.logaddexp(a3, a4))

    def fit(self, X: Any, y: Any = None) -> BetaGeoModel:
        X = _summary(X, 3, "frequency, recency, T")
        if len(X) == 0:
            raise ValueError("no customers to fit")
        if np.any(X[:, 1] > X[:, 2]):
            raise ValueError("recency must not exceed T")
        # identical summaries (many one-order customers of the same age) are counted once
        rows, weights = np.unique(X, axis=0, return_counts=True)
        x, tx, T = rows.T
        total = weights.sum()

        def nll(log_params: np.ndarray) -> float:
            params = np.exp(log_params)
            ll = float(np.dot(weights, self.log_likelihood(params, x, tx, T)))
            return -ll / total + self.penalizer * float(np.sum(params**2))

        start = np.array([1.0, max(float(np.mean(T)), 1.0) / 2, 1.0, 1.0])
        params, result = _fit_log_params(nll, start)
        self.r_, self.alpha_, self.a_, self.b_ = (float(v) for v in params)
        self.log_likelihood_ = -float(result.fun) * total
        self.n_customers_ = int(total)
        self.n_features_in_ = 3
        return self

    def _params(self) -> tuple[float, float, float, float]:
        check_is_fitted(self, "r_")
        return self.r_, self.alpha_, self.a_, self.b_

    def probability_alive(self, X: Any) -> np.ndarray:
        """P(the customer has not dropped out) given their summary."""
        r, alpha, a, b = self._params()
        x, tx, T = _summary(X, 3, "frequency, recency, T").T
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            log_ratio = np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) + (r + x) * (
                np.log(alpha + T) - np.log(alpha + tx))
            odds = np.where(x > 0, np.exp(np.minimum(log_ratio, 700)), 0.0)
        return np.asarray(1.0 / (1.0 + odds))

    def expected_purchases(self, t: float, X: Any) -> np.ndarray:
        """Expected purchases in the next ``t`` days given the summary (conditional expectation)."""
        r, alpha, a, b = self._params()
        x, tx, T = _summary(X, 3, "frequency, recency, T").T
        z = t / (alpha + T + t)
        hyp = hyp2f1(r + x, b + x, a + b + x - 1, z)
        first = (a + b + x - 1) / (a - 1)
        second = 1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            log_ratio = np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) + (r + x) * (
                np.log(alpha + T) - np.log(alpha + tx))
            odds = np.where(x > 0, np.exp(np.minimum(log_ratio, 700)), 0.0)
        return np.asarray(np.maximum(first * second / (1 + odds), 0.0))

    def predict(self, X: Any) -> np.ndarray:
        """Expected purchases in the next ``predict_days`` days."""
        return self.expected_purchases(self.predict_days, X)

    def sample(self, T: Any, random_state: int | None = None) -> np.ndarray:
        """Simulate customers from the fitted generative process: (frequency, recency, T) rows."""
        return simulate_bgnbd(*self._params(), np.asarray(T, dtype=np.float64), random_state)


class GammaGammaModel(BaseEstimator):
    """Gamma-Gamma spend model. ``fit(X)`` with X = (frequency, monetary_value), frequency > 0.

    Learned: ``p_``, ``q_``, ``v_`` (gamma), ``n_customers_``.
    """

    def __init__(self, penalizer: float = 0.0) -> None:
        self.penalizer = penalizer

    @staticmethod
    def log_likelihood(params: np.ndarray, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        p, q, v = params
        return np.asarray(
            gammaln(p * x + q) - gammaln(p * x) - gammaln(q) + q * np.log(v)
            + (p * x - 1) * np.log(m) + p * x * np.log(x) - (p * x + q) * np.log(v + m * x)
        )

    def fit(self, X: Any, y: Any = None) -> GammaGammaModel:
        X = _summary(X, 2, "frequency, monetary_value")
        X = X[(X[:, 0] > 0) & (X[:, 1] > 0)]
        if len(X) < 2:
            raise ValueError("Gamma-Gamma needs at least two customers with repeat purchases and spend")
        x, m = X.T

        def nll(log_params: np.ndarray) -> float:
            params = np.exp(log_params)
            return -float(np.mean(self.log_likelihood(params, x, m))) + self.penalizer * float(np.sum(params**2))

        mean = float(np.mean(m))
        params, _ = _fit_log_params(nll, np.array([1.0, 2.0, mean]))
        self.p_, self.q_, self.v_ = (float(v) for v in params)
        self.n_customers_ = len(X)
        self.n_features_in_ = 2
        return self

    def expected_order_value(self, X: Any) -> np.ndarray:
        """E[value of a purchase] given repeat purchases and their mean value; the population
        mean for customers without repeat purchases."""
        check_is_fitted(self, "p_")
        x, m = _summary(X, 2, "frequency, monetary_value").T
        p, q, v = self.p_, self.q_, self.v_
        population = p * v / (q - 1) if q > 1 else float("nan")
        with np.errstate(divide="ignore", invalid="ignore"):
            individual = p * (v + x * m) / (p * x + q - 1)
        return np.asarray(np.where(x > 0, individual, population))

    def predict(self, X: Any) -> np.ndarray:
        return self.expected_order_value(X)


def simulate_bgnbd(r: float, alpha: float, a: float, b: float, T: np.ndarray,
                   random_state: int | None = None) -> np.ndarray:
    """Draw (frequency, recency, T) from the BG/NBD process, each customer observed ``T`` days
    after a first purchase at time 0 (vectorised over customers, one round per purchase)."""
    rng = np.random.default_rng(random_state)
    n = len(T)
    lam = rng.gamma(r, 1.0 / alpha, n)
    p = rng.beta(a, b, n)
    now = np.zeros(n)
    last = np.zeros(n)
    freq = np.zeros(n)
    active = np.ones(n, dtype=bool)
    while active.any():
        idx = np.flatnonzero(active)
        now[idx] += rng.exponential(1.0 / lam[idx])
        within = now[idx] <= T[idx]
        buy = idx[within]
        freq[buy] += 1
        last[buy] = now[buy]
        active[idx[~within]] = False
        # after each repeat purchase the customer drops out with probability p (never after
        # the first purchase: that one defines the customer)
        active[buy] = rng.random(len(buy)) >= p[buy]
    return np.column_stack([freq, last, T])


def simulate_gamma_gamma(p: float, q: float, v: float, frequency: np.ndarray,
                         random_state: int | None = None) -> np.ndarray:
    """Mean purchase value of each customer's ``frequency`` purchases under Gamma-Gamma."""
    rng = np.random.default_rng(random_state)
    nu = rng.gamma(q, 1.0 / v, len(frequency))
    k = np.maximum(frequency, 1).astype(np.int64)
    # the sum of k Gamma(p, nu) values is Gamma(k p, nu)
    return np.asarray(rng.gamma(k * p, 1.0 / nu) / k)
