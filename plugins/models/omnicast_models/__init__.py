"""Omnicast's built-in customer models: churn / purchase propensity, CLV, RFM.

This module is imported when the plugin host loads (also by the HTTP function), so it
imports neither numpy nor scikit-learn: the estimators live in ``churn``, ``clv`` and
``rfm`` and are imported inside methods, when a model is trained or scores.

| plugin | kind | estimator (import path) | outputs (``Score.values``) |
|---|---|---|---|
| ``churn`` | churn | ``omnicast_models.churn.ChurnClassifier`` | probability (of no order in ``horizon_days``), risk |
| ``clv`` | clv | ``omnicast_models.clv.BetaGeoModel`` + ``GammaGammaModel`` | expected_value, expected_purchases, |
| | | | p_alive, expected_order_value |
| ``rfm`` | rfm | ``omnicast_models.rfm.RFMSegmenter`` | code, r, f, m, segment |
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from pydantic import Field

from chalicelib.plugin_api import (
    Artifact,
    Contribution,
    FeatureTable,
    Model,
    ModelError,
    PluginSettings,
    Score,
    TrainingSet,
    hookimpl,
)

if TYPE_CHECKING:
    import numpy as np

FORMAT = "omnicast-models/1"


def _artifact(model: Model, state: dict[str, Any]) -> Artifact:
    body = {"format": FORMAT, "model": model.name, "kind": model.kind, "heuristic": model.heuristic, "state": state}
    return Artifact(format="json", data=json.dumps(body, sort_keys=True, allow_nan=False).encode())


def _state(model: Model, artifact: Artifact) -> dict[str, Any] | None:
    """The state in a JSON artifact written for this model; anything else is refused."""
    if artifact.format != "json":
        raise ModelError(f"{model.name}: artifact format {artifact.format!r} refused (only json)")
    try:
        body = json.loads(artifact.data.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"{model.name}: artifact is not JSON ({exc})") from exc
    if not isinstance(body, dict) or body.get("format") != FORMAT or body.get("model") != model.name:
        raise ModelError(f"{model.name}: artifact is not a {FORMAT} artifact of {model.name}")
    heuristic = body.get("heuristic")
    if heuristic is not None and not isinstance(heuristic, str):
        raise ModelError(f"{model.name}: artifact field heuristic must be text")
    model.heuristic = heuristic
    state = body.get("state")
    if state is not None and not isinstance(state, dict):
        raise ModelError(f"{model.name}: artifact field state must be an object")
    return state


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _top(X: np.ndarray, effects: np.ndarray, names: tuple[str, ...], k: int) -> list[tuple[Contribution, ...]]:
    """Each row's ``k`` features with the largest absolute effect, largest first."""
    import numpy as np

    if len(effects) == 0:
        return []
    k = min(k, effects.shape[1])
    mag = np.abs(np.nan_to_num(effects))
    idx = np.argpartition(-mag, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(-mag, idx, axis=1).argsort(axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, axis=1)
    vals = np.nan_to_num(np.take_along_axis(X, idx, axis=1), nan=0.0, posinf=0.0, neginf=0.0).round(4).tolist()
    effs = np.nan_to_num(np.take_along_axis(effects, idx, axis=1), nan=0.0, posinf=0.0, neginf=0.0).round(4).tolist()
    labels = np.asarray(names, dtype=object)[idx].tolist()
    # tuple.__new__ skips the named tuple's Python-level constructor: millions are made per run
    make = tuple.__new__
    return [
        tuple([make(Contribution, t) for t in zip(f, v, e, strict=True)])
        for f, v, e in zip(labels, vals, effs, strict=True)
    ]


# --------------------------------------------------------------------------- churn
CHURN_FEATURES = (
    "recency_days", "orders", "monetary", "aov", "age_days", "ipt_mean", "recency_over_ipt",
    "orders_90d", "spend_90d", "views_30d", "days_since_view", "open_rate_email", "clicked_email",
    "days_since_engagement", "top_category_share",
)
LOGGED = ("orders", "monetary", "aov", "orders_90d", "spend_90d", "views_30d", "clicked_email", "recency_over_ipt")


def churn_matrix(table: FeatureTable) -> tuple[np.ndarray, np.ndarray]:
    """(raw values shown in explanations, model input with skewed counts and money log1p'd)."""
    import numpy as np

    base = [c for c in CHURN_FEATURES if c != "recency_over_ipt"]
    raw = table.matrix(base)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = table.column("recency_days") / table.column("ipt_mean")
    raw = np.column_stack([raw[:, :6], ratio, raw[:, 6:]])
    model_in = raw.copy()
    for j, name in enumerate(CHURN_FEATURES):
        if name in LOGGED:
            model_in[:, j] = np.log1p(np.maximum(model_in[:, j], 0))
    return raw, model_in


class ChurnSettings(PluginSettings):
    horizon_days: float = Field(90, gt=0, le=730)  # churned = no order in the next N days
    min_customers: int = Field(500, ge=0)  # fewer customers with orders: heuristic
    C: float = Field(1.0, gt=0)
    calibration_cv: int = Field(3, ge=2, le=10)
    top_features: int = Field(3, ge=1, le=10)
    high_risk: float = Field(0.7, gt=0, lt=1)
    medium_risk: float = Field(0.4, gt=0, lt=1)


class ChurnModel(Model):
    """Probability that a customer places no order in the next ``horizon_days``."""

    name = "churn"
    kind = "churn"
    version = "1"
    title = "Churn / purchase propensity (calibrated logistic regression)"
    outputs = ("probability", "risk")
    features = CHURN_FEATURES
    min_customers = 500
    Settings = ChurnSettings

    def __init__(self, settings: PluginSettings) -> None:
        super().__init__(settings)
        self.estimator_: Any = None
        self.typical_gap_: float = float(getattr(settings, "horizon_days", 90))

    @property
    def cfg(self) -> ChurnSettings:
        assert isinstance(self.settings, ChurnSettings)
        return self.settings

    def estimator(self) -> Any:
        from omnicast_models.churn import ChurnClassifier

        return ChurnClassifier(C=self.cfg.C, calibration_cv=self.cfg.calibration_cv)

    @staticmethod
    def labels(data: TrainingSet) -> np.ndarray:
        """1 = churned: no order in the window after the cutoff."""
        return (data.outcomes["orders"] == 0).astype(int)  # type: ignore[no-any-return]

    def fit(self, data: TrainingSet) -> ChurnModel:
        import numpy as np

        _, X = churn_matrix(data.features)
        y = self.labels(data)
        if len(np.unique(y)) < 2:
            raise ModelError("churn: every customer has the same label; need churned and retained customers")
        self.estimator_ = self.estimator().fit(X, y)
        self._fit_gap(data.features)
        return self

    def _fit_gap(self, table: FeatureTable) -> None:
        import numpy as np

        gaps = table.column("ipt_mean")
        gaps = gaps[np.isfinite(gaps)]
        self.typical_gap_ = float(np.median(gaps)) if len(gaps) else float(self.cfg.horizon_days)

    def use_heuristic(self, reason: str, table: FeatureTable | None = None) -> None:
        """The small-shop heuristic learns one number: the shop's median days between orders."""
        super().use_heuristic(reason, table)
        if table is not None:
            self._fit_gap(table)

    def _heuristic(self, table: FeatureTable) -> tuple[np.ndarray, np.ndarray]:
        # alive ~ exp(-recency / 2 gap); buys within h if alive ~ 1 - exp(-h / gap)
        import numpy as np

        gap = np.where(np.isfinite(table.column("ipt_mean")), table.column("ipt_mean"), self.typical_gap_)
        gap = np.maximum(gap, 1.0)
        recency = np.nan_to_num(table.column("recency_days"), nan=table.column("tenure_days"))
        alive = np.exp(-recency / (2 * gap))
        buys = 1 - np.exp(-self.cfg.horizon_days / gap)
        p = 1 - alive * buys
        effects = np.column_stack([
            (1 - alive) * buys,  # what the time since the last order adds
            p - (1 - alive) * buys,  # what the customer's usual gap adds
        ])
        return p, effects

    def predict_matrix(self, X: Any) -> Any:
        return self.estimator_.predict_proba(X)[:, 1]

    def probabilities(self, table: FeatureTable) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
        """(probability, explanation values, effects, feature names)."""
        import numpy as np

        if self.heuristic:
            p, effects = self._heuristic(table)
            raw = np.column_stack([table.column("recency_days"), table.column("ipt_mean")])
            return p, raw, effects, ("recency_days", "ipt_mean")
        if self.estimator_ is None:
            raise ModelError("churn: not trained")
        raw, X = churn_matrix(table)
        p = self.estimator_.predict_proba(X)[:, 1]
        return p, raw, self.estimator_.explain(X), CHURN_FEATURES

    def score(self, table: FeatureTable) -> list[Score]:
        import numpy as np

        if len(table) == 0:
            return []
        p, raw, effects, names = self.probabilities(table)
        tops = _top(raw, effects, names, self.cfg.top_features)
        risk = np.where(p >= self.cfg.high_risk, "high", np.where(p >= self.cfg.medium_risk, "medium", "low")).tolist()
        probs = p.round(4).tolist()
        method = self.method
        return [
            Score(pid, self.name, self.kind, self.artifact_version, table.as_of, pr,
                  {"probability": pr, "risk": rk, "horizon_days": self.cfg.horizon_days}, top, rk, method)
            for pid, pr, rk, top in zip(table.profile_ids, probs, risk, tops, strict=True)
        ]

    def evaluate(self, data: TrainingSet) -> dict[str, Any]:
        from omnicast_models.metrics import classifier_report

        p, *_ = self.probabilities(data.features)
        return classifier_report(self.labels(data), p)

    def dump(self) -> Artifact:
        state: dict[str, Any] = {"typical_gap": self.typical_gap_}
        if self.estimator_ is not None:
            state["estimator"] = self.estimator_.state()
            state["features"] = list(CHURN_FEATURES)
        return _artifact(self, state)

    def load(self, artifact: Artifact) -> None:
        state = _state(self, artifact) or {}
        try:
            self.typical_gap_ = float(state.get("typical_gap", self.cfg.horizon_days))
            if "estimator" in state:
                if state.get("features") != list(CHURN_FEATURES):
                    raise ModelError("churn: artifact was trained on other features")
                from omnicast_models.churn import ChurnClassifier

                self.estimator_ = ChurnClassifier.from_state(state["estimator"])
            elif not self.heuristic:
                raise ModelError("churn: artifact has neither an estimator nor a heuristic")
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ModelError):
                raise
            raise ModelError(f"churn: artifact state refused ({exc})") from exc

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"estimator": "omnicast_models.churn.ChurnClassifier", "features": list(CHURN_FEATURES),
                               "log1p": list(LOGGED), "typical_gap_days": round(self.typical_gap_, 2)}
        if self.estimator_ is not None:
            out["params"] = self.estimator_.get_params()
            out["coefficients"] = dict(zip(CHURN_FEATURES, self.estimator_.coef_.round(4).tolist(), strict=True))
            out["calibration"] = self.estimator_.calibration_.round(4).tolist()
        return out


# --------------------------------------------------------------------------- clv
class ClvSettings(PluginSettings):
    horizon_days: float = Field(90, gt=0, le=730)  # the holdout window its error is measured on
    value_days: float = Field(365, gt=0, le=3650)  # expected_value covers this many days ahead
    min_customers: int = Field(500, ge=0)
    penalizer: float = Field(0.0, ge=0)


def bgnbd_summary(table: FeatureTable) -> np.ndarray:
    """(frequency, recency, T) in days, from the feature table."""
    import numpy as np

    x = table.column("repeat_orders")
    tx = np.nan_to_num(table.column("active_days"))
    T = np.nan_to_num(table.column("age_days"))
    return np.column_stack([x, np.minimum(tx, T), T])


class ClvModel(Model):
    """Expected purchases and spend: BG/NBD + Gamma-Gamma."""

    name = "clv"
    kind = "clv"
    version = "1"
    title = "Customer lifetime value (BG/NBD + Gamma-Gamma, maximum likelihood)"
    outputs = ("expected_value", "expected_purchases", "p_alive", "expected_order_value")
    features = ("repeat_orders", "active_days", "age_days", "repeat_aov", "aov", "orders")
    min_customers = 500
    Settings = ClvSettings

    def __init__(self, settings: PluginSettings) -> None:
        super().__init__(settings)
        self.bgnbd_: Any = None
        self.gamma_gamma_: Any = None
        self.shop_rate_: float = 0.0  # heuristic: orders per customer-day
        self.shop_aov_: float = 0.0

    @property
    def cfg(self) -> ClvSettings:
        assert isinstance(self.settings, ClvSettings)
        return self.settings

    def fit(self, data: TrainingSet) -> ClvModel:
        import numpy as np

        from omnicast_models.clv import BetaGeoModel, GammaGammaModel

        table = data.features
        self.bgnbd_ = BetaGeoModel(penalizer=self.cfg.penalizer, predict_days=self.cfg.horizon_days).fit(
            bgnbd_summary(table))
        m = np.column_stack([table.column("repeat_orders"), np.nan_to_num(table.column("repeat_aov"))])
        try:
            self.gamma_gamma_ = GammaGammaModel(penalizer=self.cfg.penalizer).fit(m)
        except ValueError:
            self.gamma_gamma_ = None  # too few repeat buyers: the shop's average order value
        self._fit_shop(table)
        return self

    def use_heuristic(self, reason: str, table: FeatureTable | None = None) -> None:
        super().use_heuristic(reason, table)
        if table is not None:
            self._fit_shop(table)

    def _fit_shop(self, table: FeatureTable) -> None:
        import numpy as np

        orders = table.column("orders")
        age = np.maximum(np.nan_to_num(table.column("age_days")), 1)
        self.shop_rate_ = float(np.sum(np.maximum(orders - 1, 0)) / np.sum(age)) if len(orders) else 0.0
        self.shop_aov_ = float(np.nanmean(table.column("aov"))) if len(orders) else 0.0

    def predictions(self, table: FeatureTable, days: float) -> dict[str, np.ndarray]:
        import numpy as np

        aov = np.nan_to_num(table.column("aov"), nan=self.shop_aov_)
        if self.heuristic or self.bgnbd_ is None:
            if not self.heuristic:
                raise ModelError("clv: not trained")
            # a customer buys at their own past rate (or the shop's) while alive
            X = bgnbd_summary(table)
            age = np.maximum(X[:, 2], 30)
            rate = np.where(X[:, 0] > 0, X[:, 0] / age, self.shop_rate_)
            gap = np.where(rate > 0, 1 / np.maximum(rate, 1e-9), 365)
            recency = X[:, 2] - X[:, 1]
            alive = np.exp(-recency / (2 * gap))
            purchases = alive * rate * days
            order_value = aov
        else:
            X = bgnbd_summary(table)
            alive = self.bgnbd_.probability_alive(X)
            purchases = self.bgnbd_.expected_purchases(days, X)
            if self.gamma_gamma_ is not None:
                order_value = self.gamma_gamma_.expected_order_value(
                    np.column_stack([X[:, 0], np.nan_to_num(table.column("repeat_aov"))]))
                order_value = np.where(np.isfinite(order_value), order_value, aov)
            else:
                order_value = aov
        return {"expected_purchases": purchases, "p_alive": alive, "expected_order_value": order_value,
                "expected_value": purchases * order_value}

    def predict_matrix(self, X: Any) -> Any:
        return self.bgnbd_.expected_purchases(self.cfg.value_days, X)

    def score(self, table: FeatureTable) -> list[Score]:
        import numpy as np

        if len(table) == 0:
            return []
        pred = self.predictions(table, self.cfg.value_days)
        # explanation in currency: what each input moves the value by, against the shop average
        value = pred["expected_value"]
        mean_purchases = float(np.mean(pred["expected_purchases"]))
        mean_order = float(np.mean(pred["expected_order_value"]))
        effects = np.column_stack([
            (pred["expected_purchases"] - mean_purchases) * mean_order,
            (pred["expected_order_value"] - mean_order) * pred["expected_purchases"],
            (pred["p_alive"] - 1) * value / np.maximum(pred["p_alive"], 1e-9),
        ])
        X = bgnbd_summary(table)
        raw = np.column_stack([X[:, 0], np.nan_to_num(table.column("aov")), X[:, 2] - X[:, 1]])
        tops = _top(raw, effects, ("repeat_orders", "aov", "days_since_last_order"), 3)
        cols = {k: v.round(4).tolist() for k, v in pred.items()}
        method = self.method
        out = []
        for i, pid in enumerate(table.profile_ids):
            values = {k: cols[k][i] for k in self.outputs}
            values["value_days"] = self.cfg.value_days
            out.append(Score(pid, self.name, self.kind, self.artifact_version, table.as_of,
                             values["expected_value"], values, tops[i], None, method))
        return out

    def evaluate(self, data: TrainingSet) -> dict[str, Any]:
        from omnicast_models.metrics import regression_report

        pred = self.predictions(data.features, data.horizon_days)
        report = {
            "spend": regression_report(data.outcomes["spend"], pred["expected_value"]),
            "orders": regression_report(data.outcomes["orders"], pred["expected_purchases"]),
        }
        # the naive baseline: every customer repeats their past daily spend rate
        import numpy as np

        age = np.maximum(np.nan_to_num(data.features.column("age_days")), 1)
        naive = data.features.column("monetary") / age * data.horizon_days
        report["spend_naive_baseline"] = regression_report(data.outcomes["spend"], naive)
        return report

    def dump(self) -> Artifact:
        state: dict[str, Any] = {"shop_rate": self.shop_rate_, "shop_aov": self.shop_aov_}
        if self.bgnbd_ is not None:
            b = self.bgnbd_
            state["bgnbd"] = {"r": b.r_, "alpha": b.alpha_, "a": b.a_, "b": b.b_, "penalizer": b.penalizer,
                              "predict_days": b.predict_days}
        if self.gamma_gamma_ is not None:
            g = self.gamma_gamma_
            state["gamma_gamma"] = {"p": g.p_, "q": g.q_, "v": g.v_, "penalizer": g.penalizer}
        return _artifact(self, state)

    def load(self, artifact: Artifact) -> None:
        from omnicast_models.clv import BetaGeoModel, GammaGammaModel

        state = _state(self, artifact) or {}
        try:
            self.shop_rate_ = float(state["shop_rate"])
            self.shop_aov_ = float(state["shop_aov"])
            if "bgnbd" in state:
                s = state["bgnbd"]
                b = BetaGeoModel(penalizer=float(s["penalizer"]), predict_days=float(s["predict_days"]))
                b.r_, b.alpha_, b.a_, b.b_ = (_positive(s[k], k) for k in ("r", "alpha", "a", "b"))
                b.n_features_in_ = 3
                self.bgnbd_ = b
            elif not self.heuristic:
                raise ModelError("clv: artifact has neither BG/NBD parameters nor a heuristic")
            if "gamma_gamma" in state:
                s = state["gamma_gamma"]
                g = GammaGammaModel(penalizer=float(s["penalizer"]))
                g.p_, g.q_, g.v_ = (_positive(s[k], k) for k in ("p", "q", "v"))
                g.n_features_in_ = 2
                self.gamma_gamma_ = g
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ModelError):
                raise
            raise ModelError(f"clv: artifact state refused ({exc})") from exc

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "estimators": ["omnicast_models.clv.BetaGeoModel", "omnicast_models.clv.GammaGammaModel"],
            "value_days": self.cfg.value_days,
        }
        if self.bgnbd_ is not None:
            b = self.bgnbd_
            out["bgnbd"] = {"r": round(b.r_, 4), "alpha": round(b.alpha_, 4), "a": round(b.a_, 4), "b": round(b.b_, 4)}
        if self.gamma_gamma_ is not None:
            g = self.gamma_gamma_
            out["gamma_gamma"] = {"p": round(g.p_, 4), "q": round(g.q_, 4), "v": round(g.v_, 4)}
        return out


def _positive(value: Any, name: str) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive number")
    return v


# --------------------------------------------------------------------------- rfm
class RfmSettings(PluginSettings):
    min_customers: int = Field(0, ge=0)


RFM_FEATURES = ("recency_days", "orders", "monetary")


class RfmModel(Model):
    """Quintile scores for recency, frequency, monetary value and the segment they name."""

    name = "rfm"
    kind = "rfm"
    version = "1"
    title = "RFM segments (quintile scores 1-5)"
    outputs = ("code", "r", "f", "m", "segment")
    features = RFM_FEATURES
    min_customers = 0
    Settings = RfmSettings

    def __init__(self, settings: PluginSettings) -> None:
        super().__init__(settings)
        self.estimator_: Any = None

    def fit(self, data: TrainingSet) -> RfmModel:
        return self.fit_table(data.features)

    def fit_table(self, table: FeatureTable) -> RfmModel:
        from omnicast_models.rfm import RFMSegmenter

        if len(table) == 0:
            raise ModelError("rfm: no customers with orders")
        self.estimator_ = RFMSegmenter().fit(table.matrix(RFM_FEATURES))
        return self

    def use_heuristic(self, reason: str, table: FeatureTable | None = None) -> None:
        # quintiles need no fitting worth the name: RFM scores a small shop the same way
        if table is not None and len(table):
            self.fit_table(table)

    def predict_matrix(self, X: Any) -> Any:
        return self.estimator_.transform(X)

    def score(self, table: FeatureTable) -> list[Score]:
        import numpy as np

        if len(table) == 0:
            return []
        if self.estimator_ is None:
            raise ModelError("rfm: not trained")
        X = table.matrix(RFM_FEATURES)
        scores = self.estimator_.transform(X)
        names = self.estimator_.segments(scores).tolist()
        tops = _top(X, (scores - 3).astype(np.float64), ("recency_days", "orders", "monetary"), 3)
        codes = (scores[:, 0] * 100 + scores[:, 1] * 10 + scores[:, 2]).tolist()
        sl = scores.tolist()
        method = self.method
        return [
            Score(pid, self.name, self.kind, self.artifact_version, table.as_of, float(code),
                  {"code": code, "r": s[0], "f": s[1], "m": s[2], "segment": seg}, top, seg, method)
            for pid, code, s, seg, top in zip(table.profile_ids, codes, sl, names, tops, strict=True)
        ]

    def evaluate(self, data: TrainingSet) -> dict[str, Any]:
        import numpy as np

        if self.estimator_ is None:
            return {}
        segs = self.estimator_.segment(data.features.matrix(RFM_FEATURES))
        bought = data.outcomes["orders"] > 0
        out = {}
        for name in sorted(set(segs.tolist())):
            sel = segs == name
            out[name] = {"customers": int(sel.sum()), "bought_in_holdout": round(float(np.mean(bought[sel])), 4)}
        return {"segments": out}

    def dump(self) -> Artifact:
        state = {"edges": self.estimator_.edges_.tolist()} if self.estimator_ is not None else {}
        return _artifact(self, state)

    def load(self, artifact: Artifact) -> None:
        import numpy as np

        from omnicast_models.rfm import RFMSegmenter

        state = _state(self, artifact) or {}
        try:
            edges = np.asarray(state["edges"], dtype=np.float64)
            if edges.shape != (3, 4) or not np.all(np.isfinite(edges)):
                raise ValueError("edges must be 3 x 4 finite numbers")
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"rfm: artifact state refused ({exc})") from exc
        est = RFMSegmenter()
        est.edges_ = edges
        est.n_features_in_ = 3
        self.estimator_ = est

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"estimator": "omnicast_models.rfm.RFMSegmenter", "features": list(RFM_FEATURES)}
        if self.estimator_ is not None:
            out["quintile_edges"] = dict(zip(RFM_FEATURES, self.estimator_.edges_.round(4).tolist(), strict=True))
        return out


MODELS: tuple[type[Model], ...] = (ChurnModel, ClvModel, RfmModel)


@hookimpl
def register_models(register: Any) -> None:
    for cls in MODELS:
        register(cls)


__all__ = ["ChurnModel", "ClvModel", "RfmModel", "register_models"]
