"""Bandits choosing among message variants or offers, with guardrails.

:class:`ThompsonBandit`: Beta-Bernoulli Thompson sampling. :class:`LinearThompsonBandit`: its
contextual version, Bayesian linear regression of the reward on the context per arm (linear
Thompson sampling, Agrawal and Goyal 2013), for when the context (segment, channel, basket
size...) changes which arm is best.

Guardrails shared by both:

- minimum exploration: with probability ``min_exploration * n_arms`` the arm is drawn
  uniformly, so each arm gets at least ``min_exploration`` of the traffic until the stop;
- stop rule: once every arm has ``min_samples`` pulls, the experiment stops when the leading
  arm's posterior probability of being best reaches ``stop_probability``, or (if
  ``max_expected_loss`` is set) when the expected loss of choosing it falls below that; after
  the stop every choice is the winner;
- determinism: every draw comes from a generator seeded with (``random_state``, a counter of
  the state), so a sequence of calls gives the same choices for the same seed, and
  :meth:`probability_best` is a pure function of the state;
- idempotence: an ``update`` carrying an ``update_id`` already seen changes nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from ._tables import InvalidInput
from .artifact import ExplicitArtifact

DEDUPE_WINDOW = 100_000  # update ids remembered to ignore a redelivered outcome


class _BanditBase(ExplicitArtifact, BaseEstimator):
    arms: tuple[str, ...]
    min_exploration: float
    stop_probability: float
    min_samples: int
    max_expected_loss: float | None
    n_samples: int
    random_state: int | None

    def _check_common(self) -> None:
        arms = tuple(self.arms)
        if len(arms) < 2 or len(set(arms)) != len(arms) or not all(isinstance(a, str) and a for a in arms):
            raise InvalidInput(f"arms must be two or more distinct names, got {self.arms!r}", field="arms")
        if not 0 <= self.min_exploration <= 1.0 / len(arms):
            raise InvalidInput(f"min_exploration must be in [0, 1/{len(arms)}], got {self.min_exploration!r}",
                               field="min_exploration")
        if not 0.5 < self.stop_probability <= 1:
            raise InvalidInput(f"stop_probability must be in (0.5, 1], got {self.stop_probability!r}",
                               field="stop_probability")
        if int(self.min_samples) < 0:
            raise InvalidInput(f"min_samples must be >= 0, got {self.min_samples!r}", field="min_samples")
        if int(self.n_samples) < 100:
            raise InvalidInput(f"n_samples must be >= 100, got {self.n_samples!r}", field="n_samples")

    def _rng(self, stream: int) -> np.random.Generator:
        seed = 0 if self.random_state is None else int(self.random_state)
        if stream == 1:  # a choice: fresh for every call
            return np.random.default_rng([seed, stream, self.n_choices_, self.n_updates_])
        # posterior summaries: the same draws for the same evidence, so the stop rule and
        # probability_best() agree and asking twice gives one answer
        return np.random.default_rng([seed, 3, self.n_updates_])

    def _arm_index(self, arm: str) -> int:
        try:
            return list(self.arms).index(arm)
        except ValueError:
            raise InvalidInput(f"unknown arm {arm!r}; arms are {', '.join(self.arms)}", field="arm") from None

    def _check_reward(self, reward: Any) -> float:
        try:
            r = float(reward)
        except (TypeError, ValueError):
            raise InvalidInput(f"reward must be a number, got {reward!r}", field="reward") from None
        if not np.isfinite(r):
            raise InvalidInput(f"reward must be finite, got {reward!r}", field="reward")
        return r

    def _seen(self, update_id: str | None) -> bool:
        """True if ``update_id`` was applied already (among the last DEDUPE_WINDOW ids)."""
        if update_id is None:
            return False
        index = self.__dict__.get("_seen_index")
        if index is None or len(index) != len(self.seen_updates_):
            index = self.__dict__["_seen_index"] = set(self.seen_updates_)
        if update_id in index:
            return True
        self.seen_updates_.append(update_id)
        index.add(update_id)
        if len(self.seen_updates_) > DEDUPE_WINDOW:
            index.discard(self.seen_updates_.pop(0))
        return False

    def _choose(self, sampled_means: Any) -> str:
        """Exploration floor, then the stopped winner, then the Thompson draw."""
        if self.winner_ is not None:
            self.n_choices_ += 1
            return self.winner_
        rng = self._rng(1)
        n = len(self.arms)
        if rng.random() < self.min_exploration * n:
            arm = int(rng.integers(n))
        else:
            arm = int(np.argmax(sampled_means(rng)))
        self.n_choices_ += 1
        return self.arms[arm]

    def _choose_many(self, n: int, sampled_means: Any) -> list[str]:
        """:meth:`_choose` for ``n`` sends at once (one generator, vectorised draws)."""
        if self.winner_ is not None:
            self.n_choices_ += n
            return [self.winner_] * n
        rng = self._rng(1)
        k = len(self.arms)
        explore = rng.random(n) < self.min_exploration * k
        uniform = rng.integers(k, size=n)
        arm = np.where(explore, uniform, np.argmax(sampled_means(rng, n), axis=1))
        self.n_choices_ += n
        return [self.arms[a] for a in arm.tolist()]

    def _check_stop(self, posterior_draws: Any) -> None:
        """``posterior_draws()``: (n_samples, n_arms) posterior draws of each arm's mean reward."""
        if self.winner_ is not None or min(self.pulls_) < int(self.min_samples):
            return
        draws = posterior_draws()
        best = np.argmax(draws, axis=1)
        p_best = np.bincount(best, minlength=len(self.arms)) / len(draws)
        leader = int(np.argmax(p_best))
        loss = float(np.mean(draws.max(axis=1) - draws[:, leader]))
        if p_best[leader] >= self.stop_probability or (
            self.max_expected_loss is not None and loss <= self.max_expected_loss
        ):
            self.winner_ = self.arms[leader]
            self.stopped_at_ = self.n_updates_

    @property
    def stopped(self) -> bool:
        return getattr(self, "winner_", None) is not None


class ThompsonBandit(_BanditBase):
    """Beta-Bernoulli Thompson sampling over named arms, with guardrails (module docstring).

    Parameters
    ----------
    arms : names of the variants or offers
    prior_alpha, prior_beta : Beta prior of every arm's conversion rate
    min_exploration : least share of traffic each arm keeps until the stop
    stop_probability : P(best) at which the leader wins
    min_samples : pulls every arm needs before the stop rule applies
    max_expected_loss : optional second stop rule (conversion-rate points lost by stopping)
    n_samples : posterior draws for P(best) and the expected loss
    random_state : seed
    """

    def __init__(self, arms: tuple[str, ...] = ("A", "B"), prior_alpha: float = 1.0, prior_beta: float = 1.0,
                 min_exploration: float = 0.05, stop_probability: float = 0.95, min_samples: int = 100,
                 max_expected_loss: float | None = None, n_samples: int = 4000, random_state: int | None = 0) -> None:
        self.arms = arms
        self.prior_alpha = prior_alpha
        self.prior_beta = prior_beta
        self.min_exploration = min_exploration
        self.stop_probability = stop_probability
        self.min_samples = min_samples
        self.max_expected_loss = max_expected_loss
        self.n_samples = n_samples
        self.random_state = random_state

    def _init_state(self) -> None:
        if hasattr(self, "successes_"):
            return
        self._check_common()
        if not (self.prior_alpha > 0 and self.prior_beta > 0):
            raise InvalidInput("prior_alpha and prior_beta must be > 0", field="prior_alpha")
        n = len(self.arms)
        self.successes_ = [0.0] * n
        self.failures_ = [0.0] * n
        self.pulls_ = [0] * n
        self.n_choices_ = 0
        self.n_updates_ = 0
        self.seen_updates_: list[str] = []
        self.winner_: str | None = None
        self.stopped_at_: int | None = None

    def fit(self, arms: Any, rewards: Any, update_ids: Any = None) -> ThompsonBandit:
        """Replay a log of (arm, reward in [0, 1]) from a fresh state; returns self."""
        for name in ("successes_", "failures_", "pulls_", "n_choices_", "n_updates_", "seen_updates_",
                     "winner_", "stopped_at_", "_seen_index"):
            self.__dict__.pop(name, None)
        self._init_state()
        arms, rewards = list(arms), list(rewards)
        if len(arms) != len(rewards):
            raise InvalidInput(f"rewards has {len(rewards)} entries, arms has {len(arms)}", field="rewards")
        ids = [None] * len(arms) if update_ids is None else list(update_ids)
        for arm, reward, uid in zip(arms, rewards, ids, strict=True):
            self.update(arm, reward, update_id=uid)
        return self

    def _draws(self, rng: np.random.Generator, size: int) -> np.ndarray:
        a = self.prior_alpha + np.asarray(self.successes_)
        b = self.prior_beta + np.asarray(self.failures_)
        return rng.beta(a, b, size=(size, len(self.arms)))

    def choose(self, context: Any = None) -> str:
        """The arm to show next (``context`` is ignored: see :class:`LinearThompsonBandit`)."""
        self._init_state()
        return self._choose(lambda rng: self._draws(rng, 1)[0])

    def choose_many(self, n: int) -> list[str]:
        """The arms for the next ``n`` sends (a scoring run, a broadcast), drawn at once."""
        self._init_state()
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise InvalidInput(f"n must be a non-negative integer, got {n!r}", field="n")
        return self._choose_many(int(n), lambda rng, m: self._draws(rng, m))

    def update(self, arm: str, reward: float, context: Any = None, *, update_id: str | None = None) -> None:
        """Record that ``arm`` earned ``reward`` (1 converted, 0 not; fractions allowed)."""
        self._init_state()
        i = self._arm_index(arm)
        r = self._check_reward(reward)
        if not 0 <= r <= 1:
            raise InvalidInput(f"reward must be in [0, 1], got {reward!r}", field="reward")
        if self._seen(update_id):
            return
        self.successes_[i] += r
        self.failures_[i] += 1.0 - r
        self.pulls_[i] += 1
        self.n_updates_ += 1
        self._check_stop(lambda: self._draws(self._rng(3), int(self.n_samples)))

    def probability_best(self, context: Any = None) -> dict[str, float]:
        """Posterior probability that each arm has the highest conversion rate."""
        self._init_state()
        draws = self._draws(self._rng(3), int(self.n_samples))
        p = np.bincount(np.argmax(draws, axis=1), minlength=len(self.arms)) / len(draws)
        return {a: float(x) for a, x in zip(self.arms, p, strict=True)}

    def explain(self, arm: str | None = None) -> str:
        """Why the bandit prefers what it prefers, e.g. "arm B P(best)=0.97 (41/400 vs ...)"."""
        p = self.probability_best()
        arm = arm or max(p, key=lambda a: p[a])
        self._arm_index(arm)
        rates = ", ".join(
            f"{a}: {self.successes_[j]:g}/{self.pulls_[j]}" for j, a in enumerate(self.arms)
        )
        state = f"stopped, winner {self.winner_}" if self.winner_ else "exploring"
        return f"arm {arm} P(best)={p[arm]:.2f} ({rates}; {state})"


class LinearThompsonBandit(_BanditBase):
    """Contextual Thompson sampling: per arm, reward ~ N(x . w, noise) with w ~ N(0, prior_variance I).

    ``context`` is a 1-D array of ``n_features`` numbers (an intercept is added). The posterior
    of each arm is exact (conjugate): precision B = I / prior_variance + X^T X / noise_variance.
    The stop rule and :meth:`probability_best` look at a given context, or by default at the
    mean context seen so far.
    """

    def __init__(self, arms: tuple[str, ...] = ("A", "B"), n_features: int = 1, prior_variance: float = 1.0,
                 noise_variance: float = 0.25, min_exploration: float = 0.05, stop_probability: float = 0.95,
                 min_samples: int = 100, max_expected_loss: float | None = None, n_samples: int = 4000,
                 random_state: int | None = 0) -> None:
        self.arms = arms
        self.n_features = n_features
        self.prior_variance = prior_variance
        self.noise_variance = noise_variance
        self.min_exploration = min_exploration
        self.stop_probability = stop_probability
        self.min_samples = min_samples
        self.max_expected_loss = max_expected_loss
        self.n_samples = n_samples
        self.random_state = random_state

    def _init_state(self) -> None:
        if hasattr(self, "precision_"):
            return
        self._check_common()
        if int(self.n_features) < 0:
            raise InvalidInput(f"n_features must be >= 0, got {self.n_features!r}", field="n_features")
        if not (self.prior_variance > 0 and self.noise_variance > 0):
            raise InvalidInput("prior_variance and noise_variance must be > 0", field="prior_variance")
        d = int(self.n_features) + 1
        n = len(self.arms)
        self.precision_ = np.tile(np.eye(d) / self.prior_variance, (n, 1, 1))
        self.xty_ = np.zeros((n, d))
        self.context_sum_ = np.zeros(d)
        self.pulls_ = [0] * n
        self.n_choices_ = 0
        self.n_updates_ = 0
        self.seen_updates_: list[str] = []
        self.winner_: str | None = None
        self.stopped_at_: int | None = None

    def fit(self, arms: Any, rewards: Any, contexts: Any = None, update_ids: Any = None) -> LinearThompsonBandit:
        """Replay a log of (arm, reward, context) from a fresh state; returns self."""
        for name in ("precision_", "xty_", "context_sum_", "pulls_", "n_choices_", "n_updates_", "seen_updates_",
                     "winner_", "stopped_at_", "_seen_index"):
            self.__dict__.pop(name, None)
        self._init_state()
        arms, rewards = list(arms), list(rewards)
        if len(arms) != len(rewards):
            raise InvalidInput(f"rewards has {len(rewards)} entries, arms has {len(arms)}", field="rewards")
        ctx = [None] * len(arms) if contexts is None else list(np.asarray(contexts, dtype=float))
        ids = [None] * len(arms) if update_ids is None else list(update_ids)
        for arm, reward, x, uid in zip(arms, rewards, ctx, ids, strict=True):
            self.update(arm, reward, x, update_id=uid)
        return self

    def _x(self, context: Any) -> np.ndarray:
        d = int(self.n_features)
        if context is None:
            if d == 0:
                return np.ones(1)
            if self.n_updates_ == 0:
                raise InvalidInput(f"context needs {d} numbers", field="context")
            return self.context_sum_ / self.n_updates_
        try:
            x = np.asarray(context, dtype=float).ravel()
        except (TypeError, ValueError):
            raise InvalidInput(f"context must be {d} numbers, got {context!r}", field="context") from None
        if x.shape != (d,) or not np.isfinite(x).all():
            raise InvalidInput(f"context must be {d} finite numbers, got {context!r}", field="context")
        return np.concatenate([[1.0], x])

    def _posterior(self) -> tuple[np.ndarray, np.ndarray]:
        cov = np.linalg.inv(self.precision_)
        mean = np.einsum("aij,aj->ai", cov, self.xty_ / self.noise_variance)
        return mean, cov

    def _draws(self, rng: np.random.Generator, x: np.ndarray, size: int) -> np.ndarray:
        """(size, n_arms) draws of each arm's expected reward at context ``x``."""
        mean, cov = self._posterior()
        mu = mean @ x
        sd = np.sqrt(np.einsum("i,aij,j->a", x, cov, x))
        return mu + sd * rng.standard_normal((size, len(self.arms)))

    def choose(self, context: Any = None) -> str:
        self._init_state()
        x = self._x(context)
        return self._choose(lambda rng: self._draws(rng, x, 1)[0])

    def _contexts(self, contexts: Any) -> np.ndarray:
        d = int(self.n_features)
        try:
            X = np.asarray(contexts, dtype=float)
        except (TypeError, ValueError):
            raise InvalidInput(f"contexts must be rows of {d} numbers", field="context") from None
        if X.ndim != 2 or X.shape[1] != d or not np.isfinite(X).all():
            raise InvalidInput(f"contexts must be an (n, {d}) array of finite numbers", field="context")
        return np.column_stack([np.ones(len(X)), X])

    def _moments(self, X1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, sd) of each arm's expected reward at each context row: (n, n_arms) each."""
        mean, cov = self._posterior()
        return X1 @ mean.T, np.sqrt(np.einsum("ni,aij,nj->na", X1, cov, X1))

    def choose_many(self, contexts: Any) -> list[str]:
        """The arms for a batch of sends, one context row each, drawn at once."""
        self._init_state()
        X1 = self._contexts(contexts)
        mu, sd = self._moments(X1)
        return self._choose_many(len(X1), lambda rng, m: mu + sd * rng.standard_normal(mu.shape))

    def probability_best_many(self, contexts: Any) -> np.ndarray:
        """P(best) of each arm at each context row, shape (n, n_arms): exact for two arms (the
        posteriors are independent normals), from ``n_samples`` / 16 draws per row otherwise."""
        from scipy.special import ndtr

        self._init_state()
        X1 = self._contexts(contexts)
        mu, sd = self._moments(X1)
        if len(self.arms) == 2:
            p0 = ndtr((mu[:, 0] - mu[:, 1]) / np.maximum(np.hypot(sd[:, 0], sd[:, 1]), 1e-12))
            return np.column_stack([p0, 1 - p0])
        rng = self._rng(3)
        s = max(int(self.n_samples) // 16, 64)
        out = np.zeros(mu.shape)
        for start in range(0, len(mu), 2048):
            m, v = mu[start:start + 2048], sd[start:start + 2048]
            draws = m[:, None, :] + v[:, None, :] * rng.standard_normal((len(m), s, len(self.arms)))
            best = np.argmax(draws, axis=2)
            out[start:start + len(m)] = (best[:, :, None] == np.arange(len(self.arms))).mean(axis=1)
        return out

    def update(self, arm: str, reward: float, context: Any = None, *, update_id: str | None = None) -> None:
        self._init_state()
        i = self._arm_index(arm)
        r = self._check_reward(reward)
        if context is None and int(self.n_features) > 0:
            raise InvalidInput(f"update needs the context the arm was chosen in ({self.n_features} numbers)",
                               field="context")
        x = self._x(context)
        if self._seen(update_id):
            return
        self.precision_[i] += np.outer(x, x) / self.noise_variance
        self.xty_[i] += r * x
        self.context_sum_ += x
        self.pulls_[i] += 1
        self.n_updates_ += 1
        self._check_stop(lambda: self._draws(self._rng(3), self.context_sum_ / self.n_updates_, int(self.n_samples)))

    def probability_best(self, context: Any = None) -> dict[str, float]:
        self._init_state()
        x = self._x(context)
        draws = self._draws(self._rng(3), x, int(self.n_samples))
        p = np.bincount(np.argmax(draws, axis=1), minlength=len(self.arms)) / len(draws)
        return {a: float(v) for a, v in zip(self.arms, p, strict=True)}

    def explain(self, context: Any = None) -> str:
        p = self.probability_best(context)
        mean, _ = self._posterior()
        x = self._x(context)
        arm = max(p, key=lambda a: p[a])
        expected = ", ".join(f"{a}: {float(mean[j] @ x):.3f}" for j, a in enumerate(self.arms))
        return f"arm {arm} P(best)={p[arm]:.2f} for this context (expected reward {expected})"
