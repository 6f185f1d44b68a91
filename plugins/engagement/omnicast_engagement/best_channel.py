"""Best channel per customer from engagement and delivery outcomes by channel.

Input: one row per message sent, with columns ``customer_id``, ``channel`` (email, sms, push,
messenger, ...) and ``engaged`` (1 if the customer opened, clicked or replied, 0 otherwise; a
bounced or failed delivery is a 0: a channel that does not reach the customer is a worse
channel).

Each channel has a Beta prior fitted to the population by the method of moments (empirical
Bayes: its mean is the channel's pooled engagement rate, its strength how much customers
differ, clipped to [``min_prior_strength``, ``max_prior_strength``]). A customer's rate on a
channel is the Beta posterior after their own messages there; the best channel is the one
with the highest posterior mean among those the customer can be reached on. A channel the
model never saw gets the pooled prior of all channels.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ._tables import InvalidInput, column, id_column, lookup, same_length
from .artifact import ExplicitArtifact


class ChannelChoice(NamedTuple):
    channel: str | None  # None: not reachable on any channel
    rate: float  # posterior mean engagement rate on that channel
    probability_best: float  # P(it is the best of the reachable channels)
    messages: int  # the customer's messages on that channel
    engagements: int


class BestChannel(ExplicitArtifact, BaseEstimator):
    """Beta-Binomial engagement rate per customer and channel, with a population prior.

    Parameters
    ----------
    min_prior_strength, max_prior_strength : bounds of each channel prior's pseudo-messages
    n_samples : posterior draws for P(best)
    random_state : seed of those draws
    """

    def __init__(self, min_prior_strength: float = 2.0, max_prior_strength: float = 100.0, n_samples: int = 64,
                 random_state: int | None = 0) -> None:
        self.min_prior_strength = min_prior_strength
        self.max_prior_strength = max_prior_strength
        self.n_samples = n_samples
        self.random_state = random_state

    def fit(self, X: Any, y: None = None) -> BestChannel:
        """Fit from an outcomes table (one row per message); returns self."""
        customers = id_column(X, "customer_id")
        channels = id_column(X, "channel")
        engaged = column(X, "engaged")
        same_length({"customer_id": customers, "channel": channels, "engaged": engaged})
        if len(customers) == 0:
            raise InvalidInput("the outcomes table is empty", field="customer_id")
        try:
            e = engaged.astype(np.float64)
        except (TypeError, ValueError):
            raise InvalidInput("column 'engaged' must hold 0/1 or true/false", field="engaged") from None
        if not np.isin(e, (0.0, 1.0)).all():
            raise InvalidInput("column 'engaged' must hold 0/1 or true/false", field="engaged")
        ids, c = np.unique(customers, return_inverse=True)
        names, ch = np.unique(channels, return_inverse=True)
        messages = np.zeros((len(ids), len(names)), dtype=np.int64)
        engagements = np.zeros_like(messages)
        np.add.at(messages, (c, ch), 1)
        np.add.at(engagements, (c, ch), e.astype(np.int64))
        return self.fit_counts(ids, names, messages, engagements)

    def fit_counts(self, customer_ids: Any, channels: Any, messages: Any, engagements: Any) -> BestChannel:
        """Fit from per-customer counts: ``messages`` and ``engagements`` are (n_customers,
        n_channels) arrays, columns named by ``channels``; returns self."""
        if not 0 < self.min_prior_strength <= self.max_prior_strength:
            raise InvalidInput("need 0 < min_prior_strength <= max_prior_strength", field="min_prior_strength")
        ids = np.asarray(customer_ids).astype(str)
        names = np.asarray(channels).astype(str)
        msgs, engs = _counts(messages, engagements, (len(ids), len(names)))
        order = np.argsort(ids, kind="stable")
        by_name = np.argsort(names, kind="stable")
        self.customer_ids_ = ids[order]
        self.channels_ = names[by_name]
        self.messages_ = msgs[np.ix_(order, by_name)].astype(np.int32)
        self.engagements_ = engs[np.ix_(order, by_name)].astype(np.int32)
        a, b = self._priors(self.messages_.sum(axis=1, keepdims=True), self.engagements_.sum(axis=1, keepdims=True))
        self.pooled_alpha_, self.pooled_beta_ = float(a[0]), float(b[0])
        self.prior_alpha_, self.prior_beta_ = self._priors(self.messages_, self.engagements_,
                                                           pooled=a[0] / (a[0] + b[0]))
        return self

    def _priors(self, n: np.ndarray, k: np.ndarray, pooled: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """Method-of-moments Beta prior per column of (messages, engagements); a channel with
        little or no traffic has its mean pulled to the ``pooled`` rate of all channels."""
        total_n = n.sum(axis=0).astype(np.float64)
        mean = (k.sum(axis=0) + 2.0 * pooled) / (total_n + 2.0)
        strength = np.full(n.shape[1], float(self.max_prior_strength))
        for j in range(n.shape[1]):
            has = n[:, j] >= 2
            if has.sum() < 10:
                continue  # too few customers to see how they differ: lean on the pooled rate
            rates = k[has, j] / n[has, j]
            observed = rates.var()
            noise = np.mean(mean[j] * (1 - mean[j]) / n[has, j])
            between = observed - noise
            if between > 0:
                strength[j] = mean[j] * (1 - mean[j]) / between - 1.0
        strength = np.clip(strength, self.min_prior_strength, self.max_prior_strength)
        return mean * strength, (1 - mean) * strength

    def _table(self, customer_ids: Any, channels: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(alpha, beta, messages, engagements) per requested customer x ``channels``."""
        rows = lookup(self.customer_ids_, customer_ids)
        cols = lookup(self.channels_, channels)
        n = len(rows)
        msgs = np.zeros((n, len(channels)), dtype=np.int64)
        engs = np.zeros_like(msgs)
        known_r, known_c = rows >= 0, cols >= 0
        sub = np.ix_(np.nonzero(known_r)[0], np.nonzero(known_c)[0])
        msgs[sub] = self.messages_[np.ix_(rows[known_r], cols[known_c])]
        engs[sub] = self.engagements_[np.ix_(rows[known_r], cols[known_c])]
        return self._posterior(channels, msgs, engs)

    def _posterior(self, channels: list[str], msgs: np.ndarray,
                   engs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        cols = lookup(self.channels_, channels)
        known_c = cols >= 0
        pa = np.where(known_c, self.prior_alpha_[np.clip(cols, 0, None)], self.pooled_alpha_)
        pb = np.where(known_c, self.prior_beta_[np.clip(cols, 0, None)], self.pooled_beta_)
        return pa + engs, pb + msgs - engs, msgs, engs

    def best_channels(self, customer_ids: Any, reachable: Any = None) -> list[ChannelChoice]:
        """The best channel for each customer among those they can be reached on.

        ``reachable``: None (every channel the model knows), one collection of channel names
        for everyone, or one collection per customer.
        """
        check_is_fitted(self, "messages_")
        ids = list(np.asarray(customer_ids).astype(str))
        per_customer = _reachable_lists(reachable, len(ids), list(self.channels_))
        channels = sorted({c for cs in per_customer for c in cs})
        return self._choose(per_customer, channels, *self._table(ids, channels))

    def best_channels_for_counts(self, channels: Any, messages: Any, engagements: Any,
                                 reachable: Any = None) -> list[ChannelChoice]:
        """Same, from fresh per-customer counts (columns named by ``channels``) and the fitted priors."""
        check_is_fitted(self, "messages_")
        names = [str(c) for c in channels]
        msgs, engs = _counts(messages, engagements, (len(np.asarray(messages)), len(names)))
        per_customer = _reachable_lists(reachable, len(msgs), names)
        wanted = sorted({c for cs in per_customer for c in cs})
        index = {c: j for j, c in enumerate(names)}
        m = np.zeros((len(msgs), len(wanted)), dtype=np.int64)
        k = np.zeros_like(m)
        for j, c in enumerate(wanted):
            if c in index:
                m[:, j], k[:, j] = msgs[:, index[c]], engs[:, index[c]]
        return self._choose(per_customer, wanted, *self._posterior(wanted, m, k))

    def _choose(self, per_customer: list[list[str]], channels: list[str], alpha: np.ndarray, beta: np.ndarray,
                msgs: np.ndarray, engs: np.ndarray) -> list[ChannelChoice]:
        ids = per_customer
        allowed = np.zeros((len(ids), len(channels)), dtype=bool)
        index = {c: j for j, c in enumerate(channels)}
        if per_customer and all(cs is per_customer[0] for cs in per_customer):  # one list for everyone
            allowed[:, [index[c] for c in per_customer[0]]] = True
        else:
            for i, cs in enumerate(per_customer):
                allowed[i, [index[c] for c in cs]] = True
        mean = np.where(allowed, alpha / (alpha + beta), -np.inf)
        best = np.argmax(mean, axis=1) if channels else np.zeros(len(ids), dtype=int)
        n_allowed = allowed.sum(axis=1)
        p_best = np.where(n_allowed == 1, 1.0, 0.0)
        contested = np.flatnonzero(n_allowed > 1)  # only a choice between channels needs draws
        rng = np.random.default_rng(self.random_state)
        for start in range(0, len(contested), 2048):
            rows = contested[start:start + 2048]
            shape = (len(rows), int(self.n_samples), len(channels))
            # Beta(a, b) as Gamma(a) / (Gamma(a) + Gamma(b)), in float32: half the time of rng.beta
            ga = rng.standard_gamma(np.broadcast_to(alpha[rows][:, None, :].astype(np.float32), shape),
                                    dtype=np.float32)
            gb = rng.standard_gamma(np.broadcast_to(beta[rows][:, None, :].astype(np.float32), shape),
                                    dtype=np.float32)
            draws = np.where(allowed[rows][:, None, :], ga / (ga + gb), -1.0)
            p_best[rows] = (np.argmax(draws, axis=2) == best[rows, None]).mean(axis=1)
        rate = mean[np.arange(len(ids)), best] if channels else np.zeros(len(ids))
        out: list[ChannelChoice] = []
        for r in range(len(ids)):
            if not n_allowed[r]:
                out.append(ChannelChoice(None, 0.0, 0.0, 0, 0))
                continue
            j = int(best[r])
            out.append(ChannelChoice(channels[j], float(rate[r]), float(p_best[r]), int(msgs[r, j]), int(engs[r, j])))
        return out

    def predict(self, customer_ids: Any, reachable: Any = None) -> np.ndarray:
        """The best reachable channel per customer (None where none is reachable)."""
        return np.array([c.channel for c in self.best_channels(customer_ids, reachable)], dtype=object)

    def explain(self, customer_id: str, reachable: Any = None) -> str:
        """E.g. "sms: 4 of 9 messages engaged (est. 38%) vs email: 2 of 30 (est. 8%); P(best)=0.91"."""
        (choice,) = self.best_channels([customer_id], None if reachable is None else [list(reachable)])
        if choice.channel is None:
            return "not reachable on any channel"
        channels = _reachable_lists(None if reachable is None else [list(reachable)], 1, list(self.channels_))[0]
        alpha, beta, msgs, engs = self._table([customer_id], channels)
        others = [
            f"{c}: {engs[0, j]} of {msgs[0, j]} (est. {alpha[0, j] / (alpha[0, j] + beta[0, j]):.0%})"
            for j, c in enumerate(channels) if c != choice.channel
        ]
        head = (f"{choice.channel}: {choice.engagements} of {choice.messages} messages engaged "
                f"(est. {choice.rate:.0%})")
        return head + (f" vs {'; '.join(others)}" if others else "") + f"; P(best)={choice.probability_best:.2f}"


def _counts(messages: Any, engagements: Any, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    msgs = np.asarray(messages, dtype=np.float64)
    engs = np.asarray(engagements, dtype=np.float64)
    for name, arr in (("messages", msgs), ("engagements", engs)):
        if arr.shape != shape:
            raise InvalidInput(f"{name} must have shape {shape}, got {arr.shape}", field=name)
        if not np.isfinite(arr).all() or (arr < 0).any():
            raise InvalidInput(f"{name} must be finite and non-negative", field=name)
    # a customer clicking more messages than were recorded as sent (a lost ledger entry)
    # counts as engaging with every message
    engs = np.minimum(engs, msgs)
    return np.rint(msgs).astype(np.int64), np.rint(engs).astype(np.int64)


def _reachable_lists(reachable: Any, n: int, default: list[str]) -> list[list[str]]:
    if reachable is None:
        return [default] * n
    if isinstance(reachable, str):
        raise InvalidInput("reachable must be a collection of channel names, not one string", field="reachable")
    items = list(reachable)
    if items and all(isinstance(x, str) for x in items):
        return [sorted(set(items))] * n
    if len(items) != n:
        raise InvalidInput(f"reachable needs one collection per customer ({n}), got {len(items)}", field="reachable")
    out = []
    for x in items:
        if isinstance(x, str):
            raise InvalidInput("reachable: each customer's entry must be a collection of names", field="reachable")
        out.append(sorted({str(c) for c in x}))
    return out
