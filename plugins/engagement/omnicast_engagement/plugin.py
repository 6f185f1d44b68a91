"""Model plugin glue: each engagement estimator as a :class:`~chalicelib.plugin_api.Model`.

This module imports only the plugin API at its top: the estimators (numpy, scipy,
scikit-learn) are imported inside the methods that need them, so registering the plugins on
the HTTP path costs nothing. Extras read from the :class:`FeatureTable` beyond those
:mod:`chalicelib.features` builds (all optional, aligned with ``profile_ids``):

- ``in_stock``: product ids in stock now (recommendations never include others);
- ``timezones``: IANA time zone per customer (send time counts hours in local time);
- ``segments``: segment name per customer (send time falls back to the segment's hour);
- ``reachable``: channels each customer can be reached on (best channel picks among them);
- ``bandit_log``: ``{"row", "arm", "reward"}`` arrays of past outcomes to replay (bandit).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from chalicelib.plugin_api import (
    Artifact,
    Contribution,
    FeatureTable,
    Model,
    ModelError,
    PluginSettings,
    Score,
    TrainingSet,
)

if TYPE_CHECKING:
    import numpy as np

CHANNELS = ("email", "sms", "push", "messenger")


def _artifact(estimator: Any) -> Artifact:
    return Artifact(format="npz", data=estimator.to_bytes())


def _dump(model: Any) -> Artifact:
    """The estimator's npz artifact, or for a small shop's heuristic a JSON note of it."""
    if model.estimator is not None:
        return _artifact(model.estimator)
    if model.heuristic is None:
        raise ModelError(f"{model.name}: dump before fit")
    body = {"format": "omnicast-engagement/1", "model": model.name, "heuristic": model.heuristic}
    return Artifact(format="json", data=json.dumps(body).encode())


def _load(model: Any, cls: type, artifact: Artifact) -> None:
    if artifact.format == "json":
        try:
            body = json.loads(artifact.data)
        except ValueError:
            raise ModelError(f"{model.name}: artifact is not JSON") from None
        if not isinstance(body, dict) or body.get("model") != model.name or not isinstance(body.get("heuristic"), str):
            raise ModelError(f"{model.name}: not a heuristic artifact of this model")
        model.heuristic = body["heuristic"]
        model.estimator = None
        return
    model.estimator = _restore(cls, artifact)


def _restore(cls: type, artifact: Artifact) -> Any:
    from .artifact import ArtifactError

    if artifact.format != "npz":
        raise ModelError(f"expected an npz or json artifact, got {artifact.format!r}")
    try:
        return cls.from_bytes(artifact.data)  # type: ignore[attr-defined]
    except ArtifactError as exc:
        raise ModelError(str(exc)) from None


def _interactions(table: FeatureTable) -> dict[str, np.ndarray]:
    """The table's interactions with profile ids instead of row numbers, times in epoch seconds."""
    import numpy as np

    raw = table.extras.get("interactions")
    if raw is None:
        raise ModelError("the feature table has no 'interactions' extra")
    rows = np.asarray(raw["row"], dtype=np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= len(table.profile_ids)):
        raise ModelError("interactions.row points outside the feature table's profiles")
    ids = np.asarray(table.profile_ids, dtype=str)
    return {
        "customer_id": ids[rows] if len(rows) else np.array([], dtype=str),
        "item_id": np.asarray(raw["product"], dtype=str),
        "kind": np.asarray(raw["kind"], dtype=str),
        "timestamp": np.asarray(raw["time"], dtype=np.float64) * 86400.0,
    }


# --------------------------------------------------------------------------- recommendations
class RecommendationSettings(PluginSettings):
    # the scoring service trains as of now - 2 x horizon, evaluates on the next horizon and deploys
    # a model refitted as of now - horizon: engagement goes stale faster than churn labels
    horizon_days: float = 30.0
    k: int = 10
    similarity: str = "cosine"
    view_weight: float = 0.25
    half_life_days: float | None = None
    n_neighbors: int = 50
    min_support: int = 2


class ItemToItemModel(Model):
    """Item-to-item recommendations from co-purchase and co-view; popularity for cold customers."""

    name = "item_to_item"
    kind = "recommendations"
    version = "1"
    title = "Item-to-item recommendations (co-purchase, co-view) with a popularity fallback"
    outputs = ("personalised", "items", "sources", "because", "co_purchased")
    features = ()  # reads the ``interactions`` extra
    min_customers = 50
    Settings = RecommendationSettings

    def __init__(self, settings: PluginSettings) -> None:
        super().__init__(settings)
        self.estimator: Any = None
        self.evaluation: dict[str, Any] = {}
        self.trained_until: datetime | None = None

    def _new(self) -> Any:
        from .recommend import ItemToItemRecommender

        s = self.settings
        assert isinstance(s, RecommendationSettings)
        return ItemToItemRecommender(similarity=s.similarity, view_weight=s.view_weight,
                                     half_life_days=s.half_life_days, n_neighbors=s.n_neighbors,
                                     min_support=s.min_support)

    def fit(self, data: TrainingSet) -> ItemToItemModel:
        from ._tables import InvalidInput

        try:
            self.estimator = self._new().fit(_interactions(data.features))
        except InvalidInput as exc:
            raise ModelError(f"{exc} (field {exc.field})") from None
        self.trained_until = data.features.as_of
        return self

    def evaluate(self, data: TrainingSet) -> dict[str, Any]:
        """Precision@k and recall@k on the purchases after the training cutoff, against popularity."""
        from .recommend import precision_recall_at_k

        if self.estimator is None or self.heuristic is not None:
            return {}  # a heuristic has nothing fitted to evaluate
        k = self.settings.k  # type: ignore[attr-defined]
        table = _interactions(data.features)
        if self.trained_until is not None:  # only what happened after the training cutoff
            later = table["timestamp"] > self.trained_until.timestamp()
            table = {n: a[later] for n, a in table.items()}
        model = precision_recall_at_k(self.estimator, table, k)
        base = precision_recall_at_k(self.estimator.as_popularity(), table, k)
        self.evaluation = {
            "k": k,
            "precision_at_k": model["precision"], "recall_at_k": model["recall"],
            "popularity_precision_at_k": base["precision"], "popularity_recall_at_k": base["recall"],
            "customers": int(model["customers"]),
        }
        return self.evaluation

    def use_heuristic(self, reason: str, table: FeatureTable | None = None) -> None:
        """A small shop gets its most purchased items (popularity from ``table``, when it has
        usable interactions), still never bought or out of stock."""
        from ._tables import InvalidInput
        from .recommend import PopularityRecommender

        super().use_heuristic(reason, table)
        self.estimator = None
        if table is not None:
            try:
                self.estimator = PopularityRecommender().fit(_interactions(table))
            except (ModelError, InvalidInput):
                self.estimator = None  # scoring falls back to each chunk's own popularity

    def score(self, table: FeatureTable) -> list[Score]:
        """Up to k items per customer; ``because`` names the customer's item that each one was
        bought (or viewed) with, ``co_purchased`` by how many customers (None, 0: popular)."""

        from .recommend import PopularityRecommender

        interactions = _interactions(table)
        if self.estimator is not None:
            model = self.estimator.with_history(interactions)
        else:
            model = PopularityRecommender().fit(interactions) if len(interactions["item_id"]) else None
        k = self.settings.k  # type: ignore[attr-defined]
        if model is None:
            return [Score(pid, self.name, self.kind, self.artifact_version, table.as_of, 0.0,
                          {"personalised": 0.0, "items": [], "sources": [], "because": [], "co_purchased": []},
                          (Contribution("no_purchase_or_view_yet", 0.0, 0.0),), None, self.method)
                    for pid in table.profile_ids]
        ids = table.profile_ids
        idx, score, similar = model.recommend_indices(ids, k, in_stock=table.extras.get("in_stock"))
        anchor, together, _ = model.reasons(ids, idx, similar)
        item_ids = [*model.item_ids_.tolist(), None]  # index -1: no item
        personalised = (similar.sum(axis=1) / k).tolist()
        out: list[Score] = []
        rows = zip(ids, idx.tolist(), anchor.tolist(), together.tolist(), similar.tolist(), score.tolist(),
                   personalised, strict=True)
        for pid, picks, anchors, counts, sims, values, share in rows:
            n = k - picks.count(-1)
            items = [item_ids[j] for j in picks[:n]]
            because = [item_ids[a] for a in anchors[:n]]
            # the three strongest co-occurrence picks explain the list (similar ones come first)
            explanation = tuple(Contribution(f"bought_with:{because[s]}", float(counts[s]), values[s])
                                for s in range(min(3, n)) if sims[s])
            if not explanation and n:  # nothing co-occurs with this customer's items: the shop's bestsellers
                explanation = tuple(Contribution(f"popular:{items[s]}", 0.0, values[s]) for s in range(min(3, n)))
            if not explanation:
                explanation = (Contribution("no_item_in_stock", 0.0, 0.0),)
            out.append(Score(pid, self.name, self.kind, self.artifact_version, table.as_of, share,
                             {"personalised": share, "items": items,
                              "sources": ["similar" if x else "popular" for x in sims[:n]],
                              "because": because, "co_purchased": counts[:n]},
                             explanation, items[0] if items else None, self.method))
        return out

    def predict_matrix(self, X: Any) -> Any:
        if self.estimator is None:
            raise ModelError("predict before fit")
        return self.estimator.scores(X)

    def dump(self) -> Artifact:
        return _dump(self)

    def load(self, artifact: Artifact) -> None:
        from .recommend import ItemToItemRecommender, PopularityRecommender

        _load(self, PopularityRecommender if self.heuristic else ItemToItemRecommender, artifact)
        self._shop = None

    def recommendations_for(self, profile_id: str, k: int = 10, catalog: Any = None,
                            exclude: Any = ()) -> list[dict[str, Any]]:
        """The shop site's recommendations for one customer (see :mod:`omnicast_engagement.api`):
        in-stock products from ``catalog`` (a CatalogStore), each with why, leaving out
        ``exclude`` (product ids bought since the model's cutoff). Raises
        :class:`~omnicast_engagement.errors.InvalidInput` (a ValueError with ``field``) on bad
        input and :class:`ModelError` when nothing is trained."""
        from .api import ShopRecommendations

        if self.estimator is None:
            raise ModelError("item_to_item: no trained recommender (train the models first)")
        shop = getattr(self, "_shop", None)
        if shop is None or shop.recommender is not self.estimator or shop.catalog is not catalog:
            shop = self._shop = ShopRecommendations(self.estimator, catalog)
        return shop.recommendations_for(profile_id, k, exclude=exclude)

    def describe(self) -> dict[str, Any]:
        if self.estimator is None:
            return {"method": self.method}
        e = self.estimator
        return {"params": e.get_params(), "items": len(e.item_ids_), "customers": len(e.customer_ids_),
                "similar_pairs": int(e.similarity_.nnz), "evaluation": self.evaluation}


# --------------------------------------------------------------------------- send time
class SendTimeSettings(PluginSettings):
    # the scoring service trains as of now - 2 x horizon, evaluates on the next horizon and deploys
    # a model refitted as of now - horizon: engagement goes stale faster than churn labels
    horizon_days: float = 30.0
    prior_strength: float = 6.0
    segment_strength: float = 24.0
    min_events: int = 3
    n_samples: int = 64
    random_state: int = 0


def _local_counts(table: FeatureTable) -> np.ndarray:
    """``engagement_hours`` (UTC) moved to each customer's local hour, with the offset their
    time zone has at the table's cutoff (the features keep hours, not instants)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    import numpy as np

    hours = table.extras.get("engagement_hours")
    if hours is None:
        raise ModelError("the feature table has no 'engagement_hours' extra")
    counts = np.asarray(hours, dtype=np.float64)
    zones = table.extras.get("timezones")
    if zones is None:
        return counts
    zones = np.asarray(zones, dtype=str)
    out = np.empty_like(counts)
    at = table.as_of if table.as_of.tzinfo else table.as_of.replace(tzinfo=UTC)
    for name in np.unique(zones):
        try:
            offset = at.astimezone(ZoneInfo(name or "UTC")).utcoffset()
        except (ZoneInfoNotFoundError, ValueError):
            offset = None  # an unknown zone: keep UTC hours rather than fail the whole chunk
        shift = int((offset.total_seconds() // 3600) if offset is not None else 0)
        rows = zones == name
        out[rows] = np.roll(counts[rows], shift, axis=1)  # UTC hour h is local hour h + shift
    return out


class SendTimeModel(Model):
    """Best local hour per customer from open and click hours, smoothed toward the segment's."""

    name = "send_time"
    kind = "send_time"
    version = "1"
    title = "Send-time optimisation (Dirichlet-smoothed engagement hours)"
    outputs = ("hour", "confidence", "source", "events")
    features = ("peak_hour",)  # and the engagement_hours extra
    min_customers = 20
    Settings = SendTimeSettings

    def __init__(self, settings: PluginSettings) -> None:
        super().__init__(settings)
        self.estimator: Any = None

    def _new(self) -> Any:
        from .send_time import SendTimeOptimizer

        s = self.settings
        assert isinstance(s, SendTimeSettings)
        return SendTimeOptimizer(prior_strength=s.prior_strength, segment_strength=s.segment_strength,
                                 min_events=s.min_events, n_samples=s.n_samples, random_state=s.random_state)

    def fit(self, data: TrainingSet) -> SendTimeModel:
        t = data.features
        self.estimator = self._new().fit_counts(t.profile_ids, _local_counts(t), t.extras.get("segments"))
        return self

    def evaluate(self, data: TrainingSet) -> dict[str, Any]:
        """On opens and clicks after the training cutoff: the share within an hour of each
        customer's predicted hour, against everyone at the shop's single best hour."""
        import numpy as np

        from ._tables import lookup

        if self.estimator is None:
            return {}  # a heuristic has nothing fitted to evaluate
        e = self.estimator
        counts = _local_counts(data.features)
        rows = lookup(e.customer_ids_, data.features.profile_ids)
        before = np.zeros_like(counts)
        before[rows >= 0] = e.counts_[rows[rows >= 0]]
        new = np.clip(counts - before, 0, None)  # the features count from the start of time
        total = float(new.sum())
        if total == 0:
            return {"held_out_opens": 0}
        hours = np.array([b.hour for b in e.best_hours_for_counts(before, with_confidence=False)])
        window = (hours[:, None] + np.array([-1, 0, 1])[None, :]) % 24
        ours = float(np.take_along_axis(new, window, axis=1).sum()) / total
        best = int(e.global_dist_.argmax())
        base = float(new[:, [(best - 1) % 24, best, (best + 1) % 24]].sum()) / total
        return {"held_out_opens": int(total), "share_within_1h": ours, "global_hour_share_within_1h": base,
                "global_hour": best}

    def score(self, table: FeatureTable) -> list[Score]:
        counts = _local_counts(table)
        segments = table.extras.get("segments")
        estimator = self.estimator
        if self.heuristic is not None or estimator is None:
            # the shop's own customers as the population: no fitted priors to lean on
            estimator = self._new().fit_counts(table.profile_ids, counts, segments)
        best = estimator.best_hours_for_counts(counts, segments)
        share = estimator.predict_proba_for_counts(counts, segments)
        out = []
        for i, (pid, b) in enumerate(zip(table.profile_ids, best, strict=True)):
            h = b.hour
            out.append(Score(
                profile_id=pid, model=self.name, kind=self.kind, version=self.artifact_version, as_of=table.as_of,
                value=float(h),
                values={"hour": h, "confidence": b.confidence, "source": b.source, "events": b.events},
                explanation=(Contribution(f"opens_at_{h:02d}h", float(counts[i, h]), float(share[i, h])),
                             Contribution("opens_and_clicks", float(b.events), 0.0)),
                label=f"{h:02d}:00", method=self.method,
            ))
        return out

    def predict_matrix(self, X: Any) -> Any:
        if self.estimator is None:
            raise ModelError("predict before fit")
        return self.estimator.predict_proba_for_counts(X)

    def dump(self) -> Artifact:
        return _dump(self)

    def load(self, artifact: Artifact) -> None:
        from .send_time import SendTimeOptimizer

        _load(self, SendTimeOptimizer, artifact)

    def describe(self) -> dict[str, Any]:
        if self.estimator is None:
            return {"method": self.method}
        e = self.estimator
        return {"params": e.get_params(), "customers": len(e.customer_ids_),
                "segments": [str(s) for s in e.segment_ids_],
                "global_best_hour": int(e.global_dist_.argmax())}


# --------------------------------------------------------------------------- best channel
class BestChannelSettings(PluginSettings):
    # the scoring service trains as of now - 2 x horizon, evaluates on the next horizon and deploys
    # a model refitted as of now - horizon: engagement goes stale faster than churn labels
    horizon_days: float = 30.0
    min_prior_strength: float = 2.0
    max_prior_strength: float = 100.0
    n_samples: int = 64
    random_state: int = 0


class BestChannelModel(Model):
    """The channel each customer engages with most, among those they can be reached on."""

    name = "best_channel"
    kind = "best_channel"
    version = "1"
    title = "Best channel per customer (Beta posteriors of click rate, population prior)"
    outputs = ("rate", "channel", "probability_best", "messages", "engagements")
    features = (*(f"sent_{c}" for c in CHANNELS), *(f"clicked_{c}" for c in CHANNELS))
    min_customers = 20
    Settings = BestChannelSettings

    def __init__(self, settings: PluginSettings) -> None:
        super().__init__(settings)
        self.estimator: Any = None

    def _new(self) -> Any:
        from .best_channel import BestChannel

        s = self.settings
        assert isinstance(s, BestChannelSettings)
        return BestChannel(min_prior_strength=s.min_prior_strength, max_prior_strength=s.max_prior_strength,
                           n_samples=s.n_samples, random_state=s.random_state)

    @staticmethod
    def _counts(table: FeatureTable) -> tuple[list[str], Any, Any]:
        import numpy as np

        channels = [c for c in table.extras.get("channels", CHANNELS) if f"sent_{c}" in table.columns]
        sent = np.nan_to_num(table.matrix([f"sent_{c}" for c in channels]))
        clicked = np.nan_to_num(table.matrix([f"clicked_{c}" for c in channels]))
        used = sent.sum(axis=0) > 0  # a channel the shop sends nothing on is not a candidate
        return [c for c, u in zip(channels, used, strict=True) if u], sent[:, used], np.minimum(clicked, sent)[:, used]

    def fit(self, data: TrainingSet) -> BestChannelModel:
        channels, sent, clicked = self._counts(data.features)
        self.estimator = self._new().fit_counts(data.features.profile_ids, channels, sent, clicked)
        return self

    def evaluate(self, data: TrainingSet) -> dict[str, Any]:
        """On messages after the training cutoff: the click rate on each customer's predicted
        best channel against the click rate on their other channels."""
        import numpy as np

        from ._tables import lookup

        if self.estimator is None:
            return {}  # a heuristic has nothing fitted to evaluate
        e = self.estimator
        channels, sent, clicked = self._counts(data.features)
        rows = lookup(e.customer_ids_, data.features.profile_ids)
        cols = lookup(e.channels_, channels)
        before_sent, before_clicked = np.zeros_like(sent), np.zeros_like(clicked)
        known = np.ix_(np.nonzero(rows >= 0)[0], np.nonzero(cols >= 0)[0])
        before_sent[known] = e.messages_[np.ix_(rows[rows >= 0], cols[cols >= 0])]
        before_clicked[known] = e.engagements_[np.ix_(rows[rows >= 0], cols[cols >= 0])]
        new_sent = np.clip(sent - before_sent, 0, None)
        new_clicked = np.clip(clicked - before_clicked, 0, None)
        picks = e.best_channels_for_counts(channels, before_sent, before_clicked)
        best = np.array([channels.index(c.channel) if c.channel in channels else -1 for c in picks])
        on_best = np.zeros_like(new_sent, dtype=bool)
        on_best[best >= 0, best[best >= 0]] = True
        s_best, s_other = new_sent[on_best].sum(), new_sent[~on_best].sum()
        if s_best == 0 or s_other == 0:
            return {"held_out_messages": int(new_sent.sum())}
        return {"held_out_messages": int(new_sent.sum()),
                "click_rate_on_best_channel": float(new_clicked[on_best].sum() / s_best),
                "click_rate_on_other_channels": float(new_clicked[~on_best].sum() / s_other)}

    def score(self, table: FeatureTable) -> list[Score]:
        channels, sent, clicked = self._counts(table)
        estimator = self.estimator
        if self.heuristic is not None or estimator is None:
            estimator = self._new().fit_counts(table.profile_ids, channels, sent, clicked)
        reachable = table.extras.get("reachable")
        choices = estimator.best_channels_for_counts(channels, sent, clicked, reachable)
        out = []
        for pid, c in zip(table.profile_ids, choices, strict=True):
            out.append(Score(
                profile_id=pid, model=self.name, kind=self.kind, version=self.artifact_version, as_of=table.as_of,
                value=c.rate,
                values={"rate": c.rate, "channel": c.channel, "probability_best": c.probability_best,
                        "messages": c.messages, "engagements": c.engagements},
                explanation=(Contribution(f"clicked_{c.channel}", float(c.engagements), c.rate),
                             Contribution(f"sent_{c.channel}", float(c.messages), 0.0)) if c.channel
                else (Contribution("no_reachable_channel", 0.0, 0.0),),
                label=c.channel, method=self.method,
            ))
        return out

    def predict_matrix(self, X: Any) -> Any:
        """Posterior mean rate per fitted channel (``estimator.channels_``) for a prebuilt matrix
        whose columns are ``sent_<channel>`` then ``clicked_<channel>`` in that order."""
        import numpy as np

        if self.estimator is None:
            raise ModelError("predict before fit")
        channels = [str(c) for c in self.estimator.channels_]
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != 2 * len(channels):
            raise ModelError(f"expected {2 * len(channels)} columns (sent, clicked for {', '.join(channels)})")
        half = len(channels)
        alpha, beta, _, _ = self.estimator._posterior(channels, X[:, :half], np.minimum(X[:, half:], X[:, :half]))
        return alpha / (alpha + beta)

    def dump(self) -> Artifact:
        return _dump(self)

    def load(self, artifact: Artifact) -> None:
        from .best_channel import BestChannel

        _load(self, BestChannel, artifact)

    def describe(self) -> dict[str, Any]:
        if self.estimator is None:
            return {"method": self.method}
        e = self.estimator
        means = e.prior_alpha_ / (e.prior_alpha_ + e.prior_beta_)
        return {"params": e.get_params(),
                "population_rate": {str(c): float(m) for c, m in zip(e.channels_, means, strict=True)},
                "prior_strength": {str(c): float(a + b) for c, a, b in
                                   zip(e.channels_, e.prior_alpha_, e.prior_beta_, strict=True)}}


# --------------------------------------------------------------------------- bandit
class BanditSettings(PluginSettings):
    # the scoring service trains as of now - 2 x horizon, evaluates on the next horizon and deploys
    # a model refitted as of now - horizon: engagement goes stale faster than churn labels
    horizon_days: float = 30.0
    arms: tuple[str, ...] = ("A", "B")
    context_features: tuple[str, ...] = ()  # FeatureTable columns; empty: Beta-Bernoulli
    min_exploration: float = 0.05
    stop_probability: float = 0.95
    min_samples: int = 100
    max_expected_loss: float | None = None
    random_state: int = 0


class ThompsonBanditModel(Model):
    """Thompson sampling among message variants or offers (contextual when features are set)."""

    name = "thompson_bandit"
    kind = "bandit"
    version = "1"
    title = "Thompson sampling bandit with minimum exploration and a stop rule"
    outputs = ("probability_best", "arm", "stopped")
    min_customers = 0  # a bandit learns online: no minimum
    Settings = BanditSettings

    def __init__(self, settings: PluginSettings) -> None:
        super().__init__(settings)
        self.estimator: Any = None

    def _new(self) -> Any:
        from .bandit import LinearThompsonBandit, ThompsonBandit

        s = self.settings
        assert isinstance(s, BanditSettings)
        common = dict(arms=s.arms, min_exploration=s.min_exploration, stop_probability=s.stop_probability,
                      min_samples=s.min_samples, max_expected_loss=s.max_expected_loss, random_state=s.random_state)
        if s.context_features:
            return LinearThompsonBandit(n_features=len(s.context_features), **common)
        return ThompsonBandit(**common)

    def make_estimator(self, arms: tuple[str, ...], seed: int) -> Any:
        """A fresh Beta-Bernoulli bandit over ``arms`` with this plugin's guardrails, its draws
        seeded by ``seed``: the core's bandit split fits it to the measured results and asks it
        for one customer's variant."""
        from .bandit import ThompsonBandit

        s = self.settings
        assert isinstance(s, BanditSettings)
        return ThompsonBandit(arms=arms, min_exploration=s.min_exploration, stop_probability=s.stop_probability,
                              min_samples=s.min_samples, max_expected_loss=s.max_expected_loss, random_state=seed)

    def _contexts(self, table: FeatureTable) -> Any:
        import numpy as np

        names = self.settings.context_features  # type: ignore[attr-defined]
        if not names:
            return [None] * len(table)
        try:
            return np.nan_to_num(table.matrix(list(names)))
        except KeyError as exc:
            raise ModelError(str(exc)) from None

    def fit(self, data: TrainingSet) -> ThompsonBanditModel:
        """Replay the ``bandit_log`` extra (if any) into a fresh bandit."""
        import numpy as np

        bandit = self._new()
        log = data.features.extras.get("bandit_log")
        if log is None:
            bandit.fit([], [])
        else:
            rows = np.asarray(log["row"], dtype=np.int64)
            arms, rewards = list(log["arm"]), list(log["reward"])
            if self.settings.context_features:  # type: ignore[attr-defined]
                bandit.fit(arms, rewards, np.asarray(self._contexts(data.features))[rows])
            else:
                bandit.fit(arms, rewards)
        self.estimator = bandit
        return self

    def _bandit(self) -> Any:
        if self.estimator is None:
            self.estimator = self._new()
        return self.estimator

    def score(self, table: FeatureTable) -> list[Score]:
        """The arm each customer would be shown now (a Thompson draw per customer) and its
        posterior probability of being the best arm (for this customer's context)."""
        import numpy as np

        bandit = self._bandit()
        if self.settings.context_features:  # type: ignore[attr-defined]
            contexts = self._contexts(table)
            arms = bandit.choose_many(contexts) if len(table) else []
            p_best = bandit.probability_best_many(contexts) if len(table) else np.zeros((0, len(bandit.arms)))
        else:
            arms = bandit.choose_many(len(table))
            p_best = np.tile([bandit.probability_best()[a] for a in bandit.arms], (len(table), 1))
        names = list(bandit.arms)
        stopped = bandit.stopped
        out = []
        for pid, arm, p in zip(table.profile_ids, arms, p_best.tolist(), strict=True):
            chosen = p[names.index(arm)]
            out.append(Score(
                profile_id=pid, model=self.name, kind=self.kind, version=self.artifact_version, as_of=table.as_of,
                value=chosen, values={"probability_best": chosen, "arm": arm, "stopped": stopped},
                explanation=tuple(Contribution(f"p_best:{a}", v, v) for a, v in zip(names, p, strict=True)),
                label=arm, method=self.method,
            ))
        return out

    def dump(self) -> Artifact:
        return _artifact(self._bandit())

    def load(self, artifact: Artifact) -> None:
        from .bandit import LinearThompsonBandit, ThompsonBandit

        cls = LinearThompsonBandit if self.settings.context_features else ThompsonBandit  # type: ignore[attr-defined]
        self.estimator = _restore(cls, artifact)

    def describe(self) -> dict[str, Any]:
        b = self._bandit()
        b._init_state()
        contextual = bool(self.settings.context_features)  # type: ignore[attr-defined]
        return {"params": b.get_params(), "pulls": dict(zip(b.arms, b.pulls_, strict=True)),
                "winner": b.winner_, "explanation": None if contextual else b.explain()}


MODELS: tuple[type[Model], ...] = (ItemToItemModel, SendTimeModel, BestChannelModel, ThompsonBanditModel)
