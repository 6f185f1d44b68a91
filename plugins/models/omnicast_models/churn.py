"""Churn / purchase propensity: a calibrated logistic regression with exact explanations.

``ChurnClassifier`` is a scikit-learn classifier (binary: 1 = churned, i.e. no order in
the label window). ``fit`` imputes missing values with the training medians,
standardises, fits a logistic regression inside ``CalibratedClassifierCV`` (sigmoid /
Platt calibration on cross-validated predictions, ``ensemble=False``: one model fitted
on all rows, calibrated on out-of-fold scores), then keeps only plain arrays:

    p(churn) = 1 / (1 + exp(a * (w . z + w0) + b)),   z = (fill(x) - mean) / scale

Because calibration is a monotone map of the logit, the calibrated log-odds is exactly
``sum_i (-a * w_i * z_i) + const``: ``explain`` returns those terms, the per-customer
contribution of each feature in calibrated log-odds (positive pushes towards churn).
Predicting needs only numpy, and the state is a handful of numbers (JSON artifact).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data


class ChurnClassifier(ClassifierMixin, BaseEstimator):
    """Calibrated logistic regression over standardised features, NaN-tolerant.

    Parameters: ``C`` (inverse L2 strength), ``calibration_cv`` (folds for calibration),
    ``class_weight`` (None or "balanced"), ``max_iter``.
    Learned: ``classes_``, ``fill_``, ``mean_``, ``scale_``, ``coef_``, ``intercept_``,
    ``calibration_`` (a, b), ``n_features_in_``.
    """

    def __init__(self, C: float = 1.0, calibration_cv: int = 3, class_weight: str | None = None,
                 max_iter: int = 1000) -> None:
        self.C = C
        self.calibration_cv = calibration_cv
        self.class_weight = class_weight
        self.max_iter = max_iter

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.classifier_tags.multi_class = False
        return tags

    def fit(self, X: Any, y: Any) -> ChurnClassifier:
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold

        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=np.float64)
        check_classification_targets(y)
        self.classes_, yi = np.unique(y, return_inverse=True)
        if len(self.classes_) > 2:
            raise ValueError("Only binary classification is supported. y must be churned or not.")
        if len(self.classes_) < 2:
            raise ValueError(f"y has one class only ({self.classes_[0]!r}): need churned and retained customers")
        with np.errstate(all="ignore"):
            fill = np.nanmedian(np.where(np.isfinite(X), X, np.nan), axis=0) if len(X) else np.zeros(X.shape[1])
        self.fill_ = np.nan_to_num(fill)
        Z = np.where(np.isnan(X), self.fill_, X)
        self.mean_ = Z.mean(axis=0)
        scale = Z.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        Z = (Z - self.mean_) / self.scale_
        folds = min(self.calibration_cv, int(np.bincount(yi).min()))
        base = LogisticRegression(C=self.C, class_weight=self.class_weight, max_iter=self.max_iter)
        if folds >= 2:
            cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
            calibrated = CalibratedClassifierCV(base, method="sigmoid", cv=cv, ensemble=False).fit(Z, yi)
            member = calibrated.calibrated_classifiers_[0]
            lr = member.estimator
            sig = member.calibrators[0]
            self.calibration_ = np.array([float(sig.a_), float(sig.b_)])
        else:  # too few of one class to calibrate out of fold: the regression's own probabilities
            lr = base.fit(Z, yi)
            self.calibration_ = np.array([-1.0, 0.0])
        self.coef_ = lr.coef_.ravel().astype(np.float64)
        self.n_iter_ = np.asarray(lr.n_iter_)
        self.intercept_ = float(lr.intercept_[0])
        return self

    def _z(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float64)
        return (np.where(np.isnan(X), self.fill_, X) - self.mean_) / self.scale_

    def decision_function(self, X: Any) -> np.ndarray:
        """Calibrated log-odds of the positive class."""
        z = self._z(X)
        a, b = self.calibration_
        return -(a * (z @ self.coef_ + self.intercept_) + b)

    def predict_proba(self, X: Any) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.column_stack([1 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "coef_")
        return self.classes_[(self.decision_function(X) > 0).astype(int)]

    def explain(self, X: Any) -> np.ndarray:
        """Per-row, per-feature contributions to the calibrated log-odds (n x features)."""
        z = self._z(X)
        return -self.calibration_[0] * z * self.coef_

    # ---- explicit state for the JSON artifact
    def state(self) -> dict[str, Any]:
        check_is_fitted(self, "coef_")
        return {
            "params": self.get_params(),
            "classes": self.classes_.tolist(),
            "fill": self.fill_.tolist(),
            "mean": self.mean_.tolist(),
            "scale": self.scale_.tolist(),
            "coef": self.coef_.tolist(),
            "intercept": self.intercept_,
            "calibration": self.calibration_.tolist(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ChurnClassifier:
        est = cls(**state["params"])
        n = len(state["coef"])
        arrays = {k: np.asarray(state[k], dtype=np.float64) for k in ("fill", "mean", "scale", "coef")}
        if any(a.shape != (n,) for a in arrays.values()) or len(state["calibration"]) != 2:
            raise ValueError("inconsistent array shapes")
        est.fill_, est.mean_, est.scale_, est.coef_ = arrays["fill"], arrays["mean"], arrays["scale"], arrays["coef"]
        est.intercept_ = float(state["intercept"])
        est.calibration_ = np.asarray(state["calibration"], dtype=np.float64)
        est.classes_ = np.asarray(state["classes"])
        est.n_features_in_ = n
        values = np.r_[est.fill_, est.mean_, est.scale_, est.coef_, est.intercept_, est.calibration_]
        if not np.all(np.isfinite(values)):
            raise ValueError("non-finite numbers")
        return est
