"""Best channel: Beta posteriors per customer and channel with a population prior, among the
channels the customer can be reached on."""

from __future__ import annotations

import numpy as np
import pytest
from omnicast_engagement._tables import InvalidInput
from omnicast_engagement.best_channel import BestChannel

CHANNELS = ("email", "sms", "push")


def simulated(n=600, seed=0):
    """Each customer has a true engagement rate per channel; population means 15 %, 20 %, 10 %."""
    rng = np.random.default_rng(seed)
    rates = np.column_stack([rng.beta(3, 17, n), rng.beta(4, 16, n), rng.beta(2, 18, n)])
    sends = rng.integers(0, 60, (n, 3))
    rows = {"customer_id": [], "channel": [], "engaged": []}
    for i in range(n):
        for j, ch in enumerate(CHANNELS):
            hits = rng.random(sends[i, j]) < rates[i, j]
            rows["customer_id"] += [f"c{i}"] * sends[i, j]
            rows["channel"] += [ch] * sends[i, j]
            rows["engaged"] += hits.astype(int).tolist()
    return rows, rates, sends


def test_prior_is_the_population_and_posteriors_find_the_best_channel():
    table, rates, _ = simulated()
    model = BestChannel().fit(table)
    means = model.prior_alpha_ / (model.prior_alpha_ + model.prior_beta_)
    assert model.channels_.tolist() == ["email", "push", "sms"]
    assert means == pytest.approx([0.15, 0.10, 0.20], abs=0.02)
    strength = model.prior_alpha_ + model.prior_beta_
    assert np.all((strength > 8) & (strength < 40))  # true strengths are 20: customers do differ
    ids = [f"c{i}" for i in range(len(rates))]
    chosen = model.predict(ids)
    true_best = np.array(CHANNELS)[rates.argmax(axis=1)]
    # where the true best beats the runner-up clearly, the posterior finds it most of the time
    top2 = np.sort(rates, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 0.1
    assert np.mean(chosen[clear] == true_best[clear]) > 0.8
    # and it does better than everyone on the population's best channel (sms)
    assert np.mean(chosen == true_best) > np.mean(true_best == "sms") + 0.1


def test_respects_reachable_channels():
    table, _, _ = simulated(n=200)
    model = BestChannel().fit(table)
    choices = model.best_channels(["c1", "c2", "c3"], reachable=[["email"], ["push", "email"], []])
    assert choices[0].channel == "email" and choices[0].probability_best == 1.0
    assert choices[1].channel in ("push", "email")
    assert choices[2].channel is None
    everyone_push = model.best_channels(["c1", "c2"], reachable=["push"])
    assert [c.channel for c in everyone_push] == ["push", "push"]


def test_a_new_customer_gets_the_population_best_and_own_history_overrides_it():
    table = {"customer_id": [], "channel": [], "engaged": []}
    for i in range(100):  # the population engages on email (30 %) more than sms (10 %)
        for ch, hit in (("email", i % 10 < 3), ("sms", i % 10 < 1)):
            for _ in range(2):
                table["customer_id"].append(f"p{i}")
                table["channel"].append(ch)
                table["engaged"].append(int(hit))
    table["customer_id"] += ["texter"] * 30
    table["channel"] += ["email"] * 20 + ["sms"] * 10
    table["engaged"] += [0] * 20 + [1] * 8 + [0] * 2
    model = BestChannel().fit(table)
    new, texter = model.best_channels(["newcomer", "texter"])
    assert (new.channel, new.messages) == ("email", 0)
    assert (texter.channel, texter.messages, texter.engagements) == ("sms", 10, 8)
    assert texter.probability_best > 0.95
    text = model.explain("texter")
    assert text.startswith("sms: 8 of 10 messages engaged (est. ")
    assert "vs email: 0 of 20 (est. " in text and text.endswith(f"P(best)={texter.probability_best:.2f}")


def test_unknown_channel_gets_the_pooled_prior_and_counts_entry_point():
    model = BestChannel().fit_counts(["a", "b"], ["email"], [[10], [10]], [[1], [3]])
    (choice,) = model.best_channels(["a"], reachable=["whatsapp"])
    assert choice.channel == "whatsapp" and choice.messages == 0
    fresh = model.best_channels_for_counts(["email", "sms"], [[5, 0], [0, 0]], [[5, 0], [0, 0]])
    assert fresh[0].channel == "email" and fresh[0].engagements == 5
    back = BestChannel.from_bytes(model.to_bytes())
    assert back.best_channels(["a", "b"]) == model.best_channels(["a", "b"])


@pytest.mark.parametrize(("table", "field"), [
    ({"customer_id": ["a"], "channel": ["email"], "engaged": [2]}, "engaged"),
    ({"customer_id": ["a"], "channel": ["email"], "engaged": ["maybe"]}, "engaged"),
    ({"customer_id": ["a"], "channel": ["email"]}, "engaged"),
    ({"customer_id": ["a"], "channel": ["email", "sms"], "engaged": [1]}, "channel"),
    ({"customer_id": [], "channel": [], "engaged": []}, "customer_id"),
])
def test_bad_tables_name_the_column(table, field):
    with pytest.raises(InvalidInput) as err:
        BestChannel().fit(table)
    assert err.value.field == field


def test_bad_reachable_and_counts():
    model = BestChannel().fit_counts(["a"], ["email"], [[1]], [[1]])
    with pytest.raises(InvalidInput) as err:
        model.best_channels(["a", "b"], reachable="email")
    assert err.value.field == "reachable"
    with pytest.raises(InvalidInput) as err:
        model.best_channels(["a", "b"], reachable=[["email"]] * 3)
    assert err.value.field == "reachable"
    with pytest.raises(InvalidInput) as err:
        BestChannel().fit_counts(["a"], ["email"], [[-1]], [[0]])
    assert err.value.field == "messages"
