"""Bandits on simulated arms with known rates: convergence, minimum exploration, stop rule,
determinism, idempotent updates, and the contextual version where context matters."""

from __future__ import annotations

import numpy as np
import pytest
from omnicast_engagement._tables import InvalidInput
from omnicast_engagement.bandit import LinearThompsonBandit, ThompsonBandit

RATES = {"A": 0.04, "B": 0.07, "C": 0.05}


def run(bandit, rates, steps, seed=0, stop=True):
    """Simulate ``steps`` sends; returns the arms chosen in order."""
    rng = np.random.default_rng(seed)
    chosen = []
    for t in range(steps):
        arm = bandit.choose()
        chosen.append(arm)
        bandit.update(arm, float(rng.random() < rates[arm]), update_id=f"send-{t}")
        if stop and bandit.stopped:
            break
    return chosen


def test_converges_to_the_best_arm_and_stops_by_its_rule():
    bandit = ThompsonBandit(arms=("A", "B", "C"), min_exploration=0.05, stop_probability=0.95, min_samples=200,
                            random_state=3)
    chosen = run(bandit, RATES, 40_000)
    assert bandit.stopped and bandit.winner_ == "B"
    p = bandit.probability_best()
    assert p["B"] >= 0.95 and abs(sum(p.values()) - 1) < 1e-9
    assert min(bandit.pulls_) >= 200
    # most traffic went to the best arm once it was clear
    late = chosen[len(chosen) // 2:]
    assert late.count("B") / len(late) > 0.6
    # after the stop every choice is the winner
    assert {bandit.choose() for _ in range(50)} == {"B"}
    assert bandit.explain().startswith("arm B P(best)=")
    assert "stopped, winner B" in bandit.explain()


def test_keeps_the_minimum_exploration_share():
    rates = {"A": 0.0, "B": 0.5, "C": 0.0}  # A and C are hopeless: Thompson alone would starve them
    bandit = ThompsonBandit(arms=("A", "B", "C"), min_exploration=0.1, stop_probability=1.0, min_samples=10**9,
                            random_state=1)
    chosen = run(bandit, rates, 6000, stop=False)
    shares = {a: chosen.count(a) / len(chosen) for a in rates}
    assert shares["A"] >= 0.09 and shares["C"] >= 0.09  # 0.1 each, minus sampling noise
    assert shares["A"] < 0.15 and shares["C"] < 0.15  # and not much more: the rest is exploitation
    no_floor = ThompsonBandit(arms=("A", "B", "C"), min_exploration=0.0, stop_probability=1.0,
                              min_samples=10**9, random_state=1)
    starved = run(no_floor, rates, 6000, stop=False)
    assert starved.count("A") / len(starved) < 0.02  # without the floor the share does collapse


def test_does_not_stop_before_the_minimum_sample():
    bandit = ThompsonBandit(arms=("A", "B"), min_samples=500, random_state=0)
    rng = np.random.default_rng(0)
    for _ in range(300):  # B is obviously better, but A has not had its 500 pulls
        bandit.update("A", 0.0)
        bandit.update("B", float(rng.random() < 0.5))
    assert bandit.probability_best()["B"] > 0.999
    assert not bandit.stopped
    for _ in range(200):
        bandit.update("A", 0.0)
        bandit.update("B", float(rng.random() < 0.5))
    assert bandit.stopped and bandit.winner_ == "B" and bandit.stopped_at_ == 1000


def test_expected_loss_rule_stops_between_equal_arms():
    # two arms with the same record: P(best) stays near 0.5, so only the loss rule can stop
    outcomes = [float(i % 20 == 0) for i in range(1500)]  # 5 %
    log = [a for o in outcomes for a in ("A", "B")]
    rewards = [o for o in outcomes for _ in (0, 1)]
    by_probability = ThompsonBandit(arms=("A", "B"), min_samples=100, random_state=2).fit(log, rewards)
    by_loss = ThompsonBandit(arms=("A", "B"), min_samples=100, max_expected_loss=0.005, random_state=2).fit(
        log, rewards)
    assert not by_probability.stopped
    assert 0.4 < by_probability.probability_best()["A"] < 0.6
    assert by_loss.stopped  # choosing either costs less than half a point of conversion
    assert 200 <= by_loss.stopped_at_ < 3000


def test_same_seed_same_choices_other_seed_other_choices():
    a = run(ThompsonBandit(arms=("A", "B", "C"), random_state=11), RATES, 500, stop=False)
    b = run(ThompsonBandit(arms=("A", "B", "C"), random_state=11), RATES, 500, stop=False)
    c = run(ThompsonBandit(arms=("A", "B", "C"), random_state=12), RATES, 500, stop=False)
    assert a == b
    assert a != c
    bandit = ThompsonBandit(arms=("A", "B"), random_state=0).fit(["A", "B", "B"], [0, 1, 1])
    assert bandit.probability_best() == bandit.probability_best()  # asking does not change the answer


def test_duplicate_updates_change_nothing():
    bandit = ThompsonBandit(arms=("A", "B"))
    bandit.update("A", 1, update_id="m1")
    bandit.update("A", 1, update_id="m1")
    bandit.update("A", 0, update_id="m2")
    assert bandit.pulls_ == [2, 0] and bandit.successes_ == [1.0, 0.0]
    replay = ThompsonBandit(arms=("A", "B")).fit(["A", "A", "A"], [1, 1, 0], update_ids=["m1", "m1", "m2"])
    assert replay.pulls_ == bandit.pulls_ and replay.probability_best() == bandit.probability_best()


def test_artifact_round_trip_continues_identically():
    bandit = ThompsonBandit(arms=("A", "B", "C"), random_state=5)
    run(bandit, RATES, 300, stop=False)
    copy = ThompsonBandit.from_bytes(bandit.to_bytes())
    assert copy.get_params() == bandit.get_params()
    assert run(copy, RATES, 200, seed=9, stop=False) == run(bandit, RATES, 200, seed=9, stop=False)


def contextual_world(x):
    """Segment 0 converts best on A, segment 1 on B."""
    return {"A": 0.12 if x == 0 else 0.03, "B": 0.03 if x == 0 else 0.12}


def test_contextual_bandit_learns_the_best_arm_per_context_and_earns_more():
    rng = np.random.default_rng(4)
    linear = LinearThompsonBandit(arms=("A", "B"), n_features=1, min_samples=10**9, random_state=4)
    plain = ThompsonBandit(arms=("A", "B"), min_samples=10**9, random_state=4)
    earned = {"linear": 0.0, "plain": 0.0}
    for t in range(4000):
        x = int(rng.random() < 0.5)
        u = rng.random()
        for name, bandit in (("linear", linear), ("plain", plain)):
            arm = bandit.choose([x]) if name == "linear" else bandit.choose()
            reward = float(u < contextual_world(x)[arm])
            bandit.update(arm, reward, [x] if name == "linear" else None, update_id=str(t))
            earned[name] += reward
    assert linear.probability_best([0])["A"] > 0.95
    assert linear.probability_best([1])["B"] > 0.95
    assert earned["linear"] > 1.3 * earned["plain"], earned
    assert linear.explain([1]).startswith("arm B P(best)=")
    copy = LinearThompsonBandit.from_bytes(linear.to_bytes())
    assert copy.probability_best([0]) == linear.probability_best([0])


def test_contextual_stop_rule_and_minimum_exploration():
    rng = np.random.default_rng(8)
    bandit = LinearThompsonBandit(arms=("A", "B"), n_features=1, min_exploration=0.1, min_samples=100,
                                  random_state=8)
    chosen = []
    for _ in range(20000):
        x = float(rng.random())
        arm = bandit.choose([x])
        chosen.append(arm)
        bandit.update(arm, float(rng.random() < (0.10 if arm == "A" else 0.05)), [x])
        if bandit.stopped:
            break
    assert bandit.stopped and bandit.winner_ == "A"
    assert chosen.count("B") / len(chosen) >= 0.09


@pytest.mark.parametrize(("params", "field"), [
    ({"arms": ("A",)}, "arms"), ({"arms": ("A", "A")}, "arms"), ({"min_exploration": 0.6}, "min_exploration"),
    ({"stop_probability": 0.4}, "stop_probability"), ({"n_samples": 10}, "n_samples"),
])
def test_bad_parameters_name_the_parameter(params, field):
    with pytest.raises(InvalidInput) as err:
        ThompsonBandit(**params).choose()
    assert err.value.field == field


def test_bad_updates_name_the_field():
    bandit = ThompsonBandit(arms=("A", "B"))
    for args, field in ((("Z", 1), "arm"), (("A", 2), "reward"), (("A", "yes"), "reward"),
                        (("A", float("nan")), "reward")):
        with pytest.raises(InvalidInput) as err:
            bandit.update(*args)
        assert err.value.field == field
    assert bandit.pulls_ == [0, 0]
    linear = LinearThompsonBandit(arms=("A", "B"), n_features=2)
    with pytest.raises(InvalidInput) as err:
        linear.update("A", 1, [1.0])
    assert err.value.field == "context"
    with pytest.raises(InvalidInput) as err:
        linear.update("A", 1)
    assert err.value.field == "context"


def test_batch_choices_are_deterministic_and_keep_the_guardrails():
    bandit = ThompsonBandit(arms=("A", "B", "C"), min_exploration=0.1, min_samples=10**9, random_state=3).fit(
        ["A", "B", "C"] * 400, [0, 1, 0] * 400)  # B is clearly best
    twin = ThompsonBandit.from_bytes(bandit.to_bytes())
    batch = bandit.choose_many(20000)
    assert batch == twin.choose_many(20000)
    shares = {a: batch.count(a) / len(batch) for a in ("A", "B", "C")}
    assert shares["A"] >= 0.09 and shares["C"] >= 0.09 and shares["B"] > 0.75
    assert bandit.choose_many(5) != batch[:5] or bandit.n_choices_ == 20005  # the counter moved on
    with pytest.raises(InvalidInput) as err:
        bandit.choose_many(-1)
    assert err.value.field == "n"


def test_contextual_batch_probability_best_matches_the_sampled_one():
    rng = np.random.default_rng(6)
    linear = LinearThompsonBandit(arms=("A", "B"), n_features=1, min_samples=10**9, random_state=6)
    for t in range(3000):
        x = int(rng.random() < 0.5)
        arm = ("A", "B")[t % 2]
        linear.update(arm, float(rng.random() < contextual_world(x)[arm]), [x])
    exact = linear.probability_best_many([[0.0], [1.0], [0.5]])
    for row, x in zip(exact, (0.0, 1.0, 0.5), strict=True):
        sampled = linear.probability_best([x])
        assert row.tolist() == pytest.approx([sampled["A"], sampled["B"]], abs=0.03)
    assert exact[0, 0] > 0.99 and exact[1, 1] > 0.99
    arms = linear.choose_many(np.r_[np.zeros((2000, 1)), np.ones((2000, 1))])
    assert arms[:2000].count("A") > 1700 and arms[2000:].count("B") > 1700
    three = LinearThompsonBandit(arms=("A", "B", "C"), n_features=1).fit(["A", "B", "C"], [1, 0, 0], [[0], [0], [0]])
    p = three.probability_best_many([[0.0], [2.0]])
    assert p.shape == (2, 3) and np.allclose(p.sum(axis=1), 1.0)
    with pytest.raises(InvalidInput) as err:
        linear.choose_many([[0.0, 1.0]])
    assert err.value.field == "context"
