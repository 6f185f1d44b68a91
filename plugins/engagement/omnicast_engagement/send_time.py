"""Send-time optimisation: each customer's best hour of the day, in their own time zone.

Input: an engagement table (see :mod:`._tables`), one row per open or click, with columns
``customer_id``, ``timestamp`` (UTC), ``timezone`` (IANA name, optional: UTC) and ``segment``
(optional). Hours are counted in the customer's local time, vectorised per time zone (one
offset look-up per zone and UTC hour, so daylight saving time is right).

The model is Dirichlet-multinomial over the 24 hours: the global distribution (add-one
smoothed) is the prior of each segment's, and a segment's distribution, with weight
``prior_strength`` pseudo-opens, is the prior of each of its customers. The best hour is the
posterior mean's mode; a customer with fewer than ``min_events`` opens gets the segment's
best hour instead. The confidence is the posterior probability that the chosen hour is the
customer's most likely hour, from ``n_samples`` Dirichlet draws (seeded, so repeatable; see
``_confidence`` for how the draws are kept cheap).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ._tables import InvalidInput, column, epoch_seconds, id_column, lookup, same_length
from .artifact import ExplicitArtifact

GLOBAL = "(all customers)"
CANDIDATES = 4  # hours drawn for the confidence of a concentrated posterior
CONCENTRATED = 0.8  # share of the posterior weight those hours must hold


class SendTime(NamedTuple):
    hour: int  # 0-23, local time
    confidence: float  # P(this hour is the customer's most likely hour | opens so far)
    source: str  # "customer" or "segment" (too little history)
    events: int  # the customer's opens and clicks counted


def local_hours(timestamps: np.ndarray, timezones: np.ndarray | None) -> np.ndarray:
    """Local hour (0-23) of each UTC epoch-second timestamp in its row's IANA time zone."""
    if timezones is None:
        return ((timestamps // 3600) % 24).astype(np.int64)
    out = np.empty(len(timestamps), dtype=np.int64)
    zones, zone_of_row = np.unique(timezones.astype(str), return_inverse=True)
    for z, name in enumerate(zones):
        try:
            tz = ZoneInfo(name) if name else ZoneInfo("UTC")
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidInput(f"column 'timezone' has an unknown time zone {name!r}", field="timezone") from None
        rows = np.nonzero(zone_of_row == z)[0]
        buckets, bucket_of_row = np.unique(np.floor(timestamps[rows] / 3600.0).astype(np.int64), return_inverse=True)
        offsets = np.array([
            datetime.fromtimestamp(int(b) * 3600, UTC).astimezone(tz).utcoffset().total_seconds()  # type: ignore[union-attr]
            for b in buckets
        ])
        out[rows] = (np.floor((timestamps[rows] + offsets[bucket_of_row]) / 3600.0) % 24).astype(np.int64)
    return out


class SendTimeOptimizer(ExplicitArtifact, BaseEstimator):
    """Best local hour per customer from engagement hours, smoothed toward the segment's.

    Parameters
    ----------
    prior_strength : pseudo-opens the segment's distribution is worth in a customer's posterior
    segment_strength : pseudo-opens the global distribution is worth in a segment's
    min_events : fewer opens than this and the customer gets the segment's hour
    n_samples : Dirichlet draws for the confidence
    random_state : seed of those draws
    """

    def __init__(self, prior_strength: float = 6.0, segment_strength: float = 24.0, min_events: int = 3,
                 n_samples: int = 64, random_state: int | None = 0) -> None:
        self.prior_strength = prior_strength
        self.segment_strength = segment_strength
        self.min_events = min_events
        self.n_samples = n_samples
        self.random_state = random_state

    def _check_params(self) -> None:
        for name in ("prior_strength", "segment_strength"):
            if not getattr(self, name) > 0:
                raise InvalidInput(f"{name} must be > 0, got {getattr(self, name)!r}", field=name)
        if int(self.n_samples) < 1:
            raise InvalidInput(f"n_samples must be >= 1, got {self.n_samples!r}", field="n_samples")

    def fit(self, X: Any, y: None = None) -> SendTimeOptimizer:
        """Fit from an engagement table (one row per open or click); returns self."""
        self._check_params()
        customers = id_column(X, "customer_id")
        ts = column(X, "timestamp")
        tz = column(X, "timezone", required=False)
        seg = column(X, "segment", required=False)
        cols = {"customer_id": customers, "timestamp": ts}
        cols.update({k: v for k, v in (("timezone", tz), ("segment", seg)) if v is not None})
        same_length(cols)
        if len(customers) == 0:
            raise InvalidInput("the engagement table is empty", field="customer_id")
        hours = local_hours(epoch_seconds(ts, "timestamp"), tz)
        ids, c = np.unique(customers, return_inverse=True)
        counts = np.zeros((len(ids), 24), dtype=np.int32)
        np.add.at(counts, (c, hours), 1)
        labels = None
        if seg is not None:
            # a customer's segment is the one on their latest row
            last = np.full(len(ids), -1, dtype=np.int64)
            np.maximum.at(last, c, np.arange(len(c)))
            labels = seg.astype(str)[last]
        return self.fit_counts(ids, counts, labels)

    def fit_counts(self, customer_ids: Any, counts: Any, segments: Any = None) -> SendTimeOptimizer:
        """Fit from per-customer opens and clicks by local hour, an (n, 24) array; returns self."""
        self._check_params()
        ids = np.asarray(customer_ids).astype(str)
        counts = np.asarray(counts)
        if counts.ndim != 2 or counts.shape != (len(ids), 24):
            raise InvalidInput(f"counts must have shape ({len(ids)}, 24), got {counts.shape}", field="counts")
        if not np.isfinite(counts).all() or (counts < 0).any():
            raise InvalidInput("counts must be finite and non-negative", field="counts")
        order = np.argsort(ids, kind="stable")
        self.customer_ids_ = ids[order]
        self.counts_ = np.rint(counts[order]).astype(np.int32)
        totals = self.counts_.sum(axis=0).astype(np.float64)
        self.global_dist_ = (totals + 1.0) / (totals.sum() + 24.0)
        if segments is None:
            self.segment_ids_ = np.array([GLOBAL])
            self.customer_segment_ = np.zeros(len(ids), dtype=np.int64)
        else:
            labels = np.asarray(segments).astype(str)
            if labels.shape != ids.shape:
                raise InvalidInput("segments needs one entry per customer", field="segments")
            self.segment_ids_, self.customer_segment_ = np.unique(labels[order], return_inverse=True)
        seg_counts = np.zeros((len(self.segment_ids_), 24))
        np.add.at(seg_counts, self.customer_segment_, self.counts_)
        a = float(self.segment_strength)
        self.segment_dist_ = (seg_counts + a * self.global_dist_) / (seg_counts.sum(axis=1, keepdims=True) + a)
        return self

    # ------------------------------------------------------------------ scoring
    def _rows(self, customer_ids: Any, segments: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(counts, prior distribution, events) for each requested customer."""
        check_is_fitted(self, "counts_")
        ids = np.asarray(customer_ids).astype(str)
        rows = lookup(self.customer_ids_, ids)
        known = rows >= 0
        counts = np.zeros((len(ids), 24))
        counts[known] = self.counts_[rows[known]]
        seg_index = np.full(len(ids), -1, dtype=np.int64)
        seg_index[known] = self.customer_segment_[rows[known]]
        if segments is not None:
            given = np.asarray(segments).astype(str)
            if given.shape != ids.shape:
                raise InvalidInput("segments needs one entry per customer", field="segments")
            found = lookup(self.segment_ids_, given)
            seg_index = np.where(found >= 0, found, seg_index)
        prior = np.where((seg_index >= 0)[:, None], self.segment_dist_[np.clip(seg_index, 0, None)],
                         self.global_dist_[None, :])
        return counts, prior, counts.sum(axis=1).astype(np.int64)

    def predict_proba(self, customer_ids: Any, segments: Any = None) -> np.ndarray:
        """Posterior mean share of engagement per local hour, shape (n, 24)."""
        counts, prior, _events = self._rows(customer_ids, segments)
        alpha = counts + float(self.prior_strength) * prior
        return alpha / alpha.sum(axis=1, keepdims=True)

    def predict(self, customer_ids: Any, segments: Any = None) -> np.ndarray:
        """Best local hour per customer (the segment's when history is short)."""
        return np.array([s.hour for s in self.best_hours(customer_ids, segments, with_confidence=False)], dtype=int)

    def best_hours(self, customer_ids: Any, segments: Any = None, *, with_confidence: bool = True) -> list[SendTime]:
        """Best local hour, confidence and source for each customer (history as fitted)."""
        counts, prior, events = self._rows(customer_ids, segments)
        return self._best(counts, prior, events, with_confidence)

    def best_hours_for_counts(self, counts: Any, segments: Any = None, *,
                              with_confidence: bool = True) -> list[SendTime]:
        """Same, from fresh (n, 24) local-hour counts, with the fitted segment priors."""
        check_is_fitted(self, "counts_")
        counts = np.asarray(counts, dtype=np.float64)
        if counts.ndim != 2 or counts.shape[1] != 24:
            raise InvalidInput(f"counts must have shape (n, 24), got {counts.shape}", field="counts")
        prior = self._prior_for(len(counts), segments)
        return self._best(counts, prior, counts.sum(axis=1).astype(np.int64), with_confidence)

    def predict_proba_for_counts(self, counts: Any, segments: Any = None) -> np.ndarray:
        """Posterior mean share per local hour from fresh (n, 24) counts, shape (n, 24)."""
        check_is_fitted(self, "counts_")
        counts = np.asarray(counts, dtype=np.float64)
        alpha = counts + float(self.prior_strength) * self._prior_for(len(counts), segments)
        return alpha / alpha.sum(axis=1, keepdims=True)

    def _prior_for(self, n: int, segments: Any) -> np.ndarray:
        prior = np.repeat(self.global_dist_[None, :], n, axis=0)
        if segments is not None:
            given = np.asarray(segments).astype(str)
            if given.shape != (n,):
                raise InvalidInput("segments needs one entry per customer", field="segments")
            found = lookup(self.segment_ids_, given)
            prior[found >= 0] = self.segment_dist_[found[found >= 0]]
        return prior

    def _best(self, counts: np.ndarray, prior: np.ndarray, events: np.ndarray, with_confidence: bool) -> list[SendTime]:
        alpha = counts + float(self.prior_strength) * prior
        own = events >= int(self.min_events)
        hour = np.where(own, np.argmax(alpha, axis=1), np.argmax(prior, axis=1))
        confidence = np.zeros(len(hour))
        if with_confidence:
            confidence = self._confidence(alpha, hour, events)
        return [SendTime(int(h), float(p), "customer" if o else "segment", int(e))
                for h, p, o, e in zip(hour, confidence, own, events, strict=True)]

    def _confidence(self, alpha: np.ndarray, hour: np.ndarray, events: np.ndarray) -> np.ndarray:
        """P(``hour`` is the most likely hour) under Dirichlet(``alpha``), per row, by Monte Carlo:
        the chance that its Gamma(alpha_h) draw beats the other hours' draws.

        Kept cheap three ways: customers with the same posterior (every customer of a segment
        without history) are drawn once, over all 24 hours; where the CANDIDATES hours with most
        weight hold at least CONCENTRATED of it only they are drawn (an hour outside them almost
        never wins); other posteriors draw their 12 heaviest hours. A
        Monte Carlo estimate: with 64 draws it is within about 0.06 of the exact value, and the
        same customer scored in another chunk can differ by that much.
        """
        rows, inverse = np.unique(np.column_stack([alpha, hour, events > 0]), axis=0, return_inverse=True)
        a_all, h, seen = rows[:, :24], rows[:, 24].astype(np.int64), rows[:, 25] > 0
        out = np.zeros(len(rows))
        order = np.argsort(-a_all, axis=1, kind="stable")
        top_mass = np.take_along_axis(a_all, order[:, :CANDIDATES], axis=1).sum(axis=1) / a_all.sum(axis=1)
        tier = np.where(~seen, 0, np.where(top_mass >= CONCENTRATED, 1, 2))
        rng = np.random.default_rng(self.random_state)
        n_samples = int(self.n_samples)
        for t, m, s in ((0, 24, n_samples), (1, CANDIDATES, n_samples), (2, 12, n_samples)):
            pick = np.flatnonzero(tier == t)
            if not len(pick):
                continue
            cand = order[pick, :m].copy()
            missing = ~(cand == h[pick, None]).any(axis=1)
            cand[missing, m - 1] = h[pick][missing]
            weights = np.take_along_axis(a_all[pick], cand, axis=1).astype(np.float32)
            chosen = np.argmax(cand == h[pick, None], axis=1)
            for start in range(0, len(pick), 4096):
                w = weights[start:start + 4096]
                draws = rng.standard_gamma(np.broadcast_to(w[:, None, :], (len(w), s, m)), dtype=np.float32)
                top = np.argmax(draws, axis=2)
                out[pick[start:start + len(w)]] = (top == chosen[start:start + len(w), None]).mean(axis=1)
        return out[inverse.ravel()]

    def explain(self, customer_id: str, segment: str | None = None) -> str:
        """Why this hour, for one customer."""
        (best,) = self.best_hours([customer_id], None if segment is None else [segment])
        h = best.hour
        span = f"{h:02d}:00-{(h + 1) % 24:02d}:00"
        if best.source == "customer":
            (row,) = lookup(self.customer_ids_, [customer_id])
            at = int(self.counts_[row, h])
            return f"opens mostly {span} ({at} of {best.events} opens); confidence {best.confidence:.2f}"
        (row,) = lookup(self.customer_ids_, [customer_id])
        seg_idx = self.customer_segment_[row] if row >= 0 else -1
        if segment is not None and (found := lookup(self.segment_ids_, [segment])[0]) >= 0:
            seg_idx = found
        name = self.segment_ids_[seg_idx] if seg_idx >= 0 else GLOBAL
        return (f"only {best.events} opens (fewer than {self.min_events}): segment {name!s} "
                f"engages most at {span}")


def next_send_at(hour: int, after: datetime, timezone: str) -> datetime:
    """The first moment at or after ``after`` when it is ``hour``:00 in ``timezone`` (UTC)."""
    if not 0 <= hour <= 23:
        raise InvalidInput(f"hour must be 0-23, got {hour!r}", field="hour")
    try:
        tz = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown time zone {timezone!r}", field="timezone") from None
    local = after.astimezone(tz)
    for days in range(3):  # a DST gap can skip one day's hour
        day = (local + timedelta(days=days)).date()
        candidate = datetime(day.year, day.month, day.day, hour, tzinfo=tz)
        if candidate.astimezone(UTC) >= after.astimezone(UTC):
            return candidate.astimezone(UTC)
    raise AssertionError("unreachable: an hour occurs within three days")
