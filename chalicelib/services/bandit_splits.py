"""Bandit mode for a journey's split step: variants chosen by the bandit model plugin.

A ``split`` step with ``mode: bandit`` asks the enabled model plugin of kind ``bandit``
(``plugins/engagement``: Thompson sampling with a minimum exploration share and a stop
rule) which variant each customer gets, instead of the fixed weights. The bandit learns
from the experiment's own results as Omnicast measures them (:meth:`Measurement.experiment`:
a unit converts when the customer orders within the click window after the message), read
again at most every ``refresh_seconds``, so every worker decides from the same evidence
and nothing needs a separate feedback loop. The draw is seeded by the customer, journey and
step, so a retried event assigns the same variant. Without a bandit plugin, or before any
variant was sent, the fixed weights decide, and the decision says so.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

from chalicelib.journey_model import SplitStep

log = logging.getLogger("omnicast.bandit_splits")


class BanditSplits:
    def __init__(
        self,
        experiment: Callable[[str], dict[str, Any]],
        bandit_class: Callable[[], Any | None],
        refresh_seconds: float = 900.0,
    ) -> None:
        self.experiment = experiment  # journey -> Measurement.experiment(...) result
        self.bandit_class = bandit_class  # the enabled bandit Model class, or None
        self.refresh_seconds = refresh_seconds
        self._cache: dict[str, tuple[float, dict[str, tuple[int, int]]]] = {}

    def evidence(self, journey: str) -> dict[str, tuple[int, int]]:
        """variant -> (units, conversions), as measured, refreshed at most every refresh_seconds."""
        cached = self._cache.get(journey)
        if cached is not None and time.monotonic() - cached[0] < self.refresh_seconds:
            return cached[1]
        result = self.experiment(journey)
        counts = {str(v["variant"]): (int(v["units"]), int(v["conversions"])) for v in result.get("variants", [])}
        self._cache[journey] = (time.monotonic(), counts)
        return counts

    def choose(self, journey: str, step: SplitStep, profile_id: str) -> tuple[str | None, str]:
        """(variant, why); variant None means: use the fixed weights."""
        model = self.bandit_class()
        if model is None:
            return None, "no bandit model plugin is enabled: fixed weights"
        arms = tuple(sorted(step.variants))
        counts = self.evidence(journey)
        pulled, rewards = [], []
        for arm in arms:
            units, conversions = counts.get(arm, (0, 0))
            pulled += [arm] * units
            rewards += [1.0] * conversions + [0.0] * (units - conversions)
        seed = int.from_bytes(hashlib.sha256(f"bandit|{journey}|{step.id}|{profile_id}".encode()).digest()[:4], "big")
        estimator = model.make_estimator(arms, seed)
        if pulled:
            estimator.fit(pulled, rewards)
        arm = str(estimator.choose())
        best = estimator.probability_best()
        why = f"bandit ({model.name}): P(best) " + ", ".join(f"{a} {best[a]:.2f}" for a in arms)
        if getattr(estimator, "stopped", False):
            why += f"; stopped, winner {arm}"
        return arm, why
