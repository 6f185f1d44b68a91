"""Holdout metrics written into model cards."""

from __future__ import annotations

from typing import Any

import numpy as np


def classifier_report(y: Any, p: Any, bins: int = 10) -> dict[str, Any]:
    """AUC, Brier score, reliability bins and lift by decile of a probability ``p`` of ``y == 1``."""
    from sklearn.metrics import brier_score_loss, roc_auc_score

    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    n = len(y)
    base = float(y.mean()) if n else 0.0
    out: dict[str, Any] = {"customers": n, "positive_rate": round(base, 4)}
    if n == 0:
        return out
    out["auc"] = round(float(roc_auc_score(y, p)), 4) if 0 < y.sum() < n else None
    out["brier"] = round(float(brier_score_loss(y, p)), 4)
    # the Brier score of always predicting the base rate: the bar a model must clear
    out["brier_baseline"] = round(base * (1 - base), 4)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    reliability = []
    for b in range(bins):
        sel = which == b
        if sel.any():
            reliability.append({
                "bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}", "customers": int(sel.sum()),
                "predicted": round(float(p[sel].mean()), 4), "observed": round(float(y[sel].mean()), 4),
            })
    out["reliability"] = reliability
    order = np.argsort(-p, kind="stable")
    deciles = np.array_split(order, 10)
    out["lift_by_decile"] = [
        {"decile": i + 1, "customers": len(d), "rate": round(float(y[d].mean()), 4),
         "lift": round(float(y[d].mean()) / base, 3) if base else None}
        for i, d in enumerate(deciles) if len(d)
    ]
    return out


def regression_report(actual: Any, predicted: Any) -> dict[str, Any]:
    """MAE, RMSE and totals of a prediction against what happened."""
    a = np.asarray(actual, dtype=np.float64)
    f = np.asarray(predicted, dtype=np.float64)
    if len(a) == 0:
        return {"customers": 0}
    err = f - a
    return {
        "customers": len(a),
        "mae": round(float(np.mean(np.abs(err))), 4),
        "rmse": round(float(np.sqrt(np.mean(err**2))), 4),
        "actual_total": round(float(a.sum()), 2),
        "predicted_total": round(float(f.sum()), 2),
    }
