"""Send-time optimisation: planted preferred hours are found in the customer's own time zone,
short histories fall back to the segment's hour, the confidence means something."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from omnicast_engagement._tables import InvalidInput
from omnicast_engagement.send_time import SendTimeOptimizer, local_hours, next_send_at

JAN = datetime(2026, 1, 5, tzinfo=UTC).timestamp()
JUL = datetime(2026, 7, 6, tzinfo=UTC).timestamp()


def planted(n=400, events=12, peak_share=0.6, seed=0):
    """Customers in three time zones, each with a preferred local hour."""
    rng = np.random.default_rng(seed)
    zones = np.array(["Europe/Paris", "America/New_York", "Asia/Tokyo"])
    offsets = {"Europe/Paris": 1, "America/New_York": -5, "Asia/Tokyo": 9}  # in January
    pref = rng.integers(0, 24, n)
    zone = zones[rng.integers(0, 3, n)]
    cust = np.repeat(np.arange(n), events)
    local = np.where(rng.random(len(cust)) < peak_share, pref[cust], rng.integers(0, 24, len(cust)))
    utc_hour = (local - np.array([offsets[z] for z in zone[cust]])) % 24
    ts = JAN + rng.integers(0, 20, len(cust)) * 86400 + utc_hour * 3600 + rng.integers(0, 3600, len(cust))
    return {"customer_id": cust, "timestamp": ts.astype(float), "timezone": zone[cust]}, pref


def test_finds_each_customers_preferred_local_hour():
    table, pref = planted()
    model = SendTimeOptimizer().fit(table)
    best = model.best_hours(np.arange(len(pref)))
    hit = np.mean([b.hour == p for b, p in zip(best, pref, strict=True)])
    assert hit > 0.95
    assert all(b.source == "customer" and b.events == 12 for b in best)
    assert np.mean([b.confidence for b in best]) > 0.8


def test_without_time_zones_the_utc_hour_is_wrong_for_most():
    table, pref = planted()
    utc_only = {k: v for k, v in table.items() if k != "timezone"}
    best = SendTimeOptimizer().fit(utc_only).predict(np.arange(len(pref)))
    assert np.mean(best == pref) < 0.5  # the time zone matters: the test above can fail


def test_daylight_saving_time_is_respected():
    # 19:xx in Paris is 18:xx UTC in winter and 17:xx UTC in summer
    ts = np.array([JAN + 18 * 3600 + 600, JUL + 17 * 3600 + 600])
    assert local_hours(ts, np.array(["Europe/Paris", "Europe/Paris"])).tolist() == [19, 19]
    assert local_hours(ts, None).tolist() == [18, 17]
    assert local_hours(np.array([JAN + 13 * 3600]), np.array(["Asia/Kolkata"])).tolist() == [18]  # +05:30


def test_confidence_grows_with_evidence():
    few = {"customer_id": ["a"] * 4, "timestamp": [JAN + 19 * 3600 + d * 86400 for d in range(4)]}
    many = {"customer_id": ["a"] * 40, "timestamp": [JAN + 19 * 3600 + d * 86400 for d in range(40)]}
    background = {"customer_id": [f"b{i}" for i in range(240)],
                  "timestamp": [JAN + (i % 24) * 3600 for i in range(240)]}
    join = lambda t: {k: np.concatenate([t[k], background[k]]) for k in t}  # noqa: E731
    c_few = SendTimeOptimizer().fit(join(few)).best_hours(["a"])[0]
    c_many = SendTimeOptimizer().fit(join(many)).best_hours(["a"])[0]
    assert c_few.hour == c_many.hour == 19
    assert 0.3 < c_few.confidence < c_many.confidence
    assert c_many.confidence > 0.99


def test_short_history_falls_back_to_the_segment():
    rng = np.random.default_rng(1)
    rows = []
    for i in range(50):  # night owls engage at 22:00, early birds at 07:00
        rows += [(f"owl{i}", JAN + (22 * 3600) + d * 86400, "owls") for d in range(rng.integers(3, 8))]
        rows += [(f"bird{i}", JAN + (7 * 3600) + d * 86400, "birds") for d in range(rng.integers(3, 8))]
    rows += [("new_owl", JAN + 12 * 3600, "owls"), ("new_bird", JAN + 12 * 3600, "birds")]
    table = {"customer_id": [r[0] for r in rows], "timestamp": [r[1] for r in rows], "segment": [r[2] for r in rows]}
    model = SendTimeOptimizer().fit(table)
    owl, bird, owl0 = model.best_hours(["new_owl", "new_bird", "owl0"])
    assert (owl.hour, owl.source, owl.events) == (22, "segment", 1)
    assert (bird.hour, bird.source) == (7, "segment")
    assert (owl0.hour, owl0.source) == (22, "customer")
    # a customer the model never saw, told their segment
    (stranger,) = model.best_hours(["stranger"], segments=["birds"])
    assert (stranger.hour, stranger.source, stranger.events) == (7, "segment", 0)
    assert model.explain("new_owl") == "only 1 opens (fewer than 3): segment owls engages most at 22:00-23:00"


def test_explanation_counts_the_opens():
    hours = [19] * 14 + [8, 9, 10, 12, 20, 21]
    table = {"customer_id": ["a"] * 20, "timestamp": [JAN + h * 3600 + i * 86400 for i, h in enumerate(hours)],
             "timezone": ["UTC"] * 20}
    model = SendTimeOptimizer().fit(table)
    assert model.explain("a").startswith("opens mostly 19:00-20:00 (14 of 20 opens); confidence ")


def test_fresh_counts_use_the_fitted_priors_and_seed_makes_it_repeatable():
    table, _ = planted(n=100)
    model = SendTimeOptimizer().fit(table)
    counts = np.zeros((2, 24))
    counts[0, 5] = 6
    a = model.best_hours_for_counts(counts)
    b = model.best_hours_for_counts(counts)
    assert a == b and a[0].hour == 5 and a[0].source == "customer"
    assert a[1].source == "segment" and a[1].hour == int(model.global_dist_.argmax())
    proba = model.predict_proba_for_counts(counts)
    assert proba.shape == (2, 24) and np.allclose(proba.sum(axis=1), 1.0)


def test_artifact_round_trip():
    table, _ = planted(n=60)
    model = SendTimeOptimizer().fit(table)
    back = SendTimeOptimizer.from_bytes(model.to_bytes())
    assert back.best_hours(np.arange(60)) == model.best_hours(np.arange(60))


def test_next_send_at_is_the_next_local_occurrence():
    after = datetime(2026, 3, 28, 20, 0, tzinfo=UTC)  # 21:00 in Paris, the night before DST starts
    assert next_send_at(19, after, "Europe/Paris") == datetime(2026, 3, 29, 17, 0, tzinfo=UTC)  # 19:00 CEST
    assert next_send_at(22, after, "Europe/Paris") == datetime(2026, 3, 28, 21, 0, tzinfo=UTC)
    with pytest.raises(InvalidInput) as err:
        next_send_at(24, after, "UTC")
    assert err.value.field == "hour"


@pytest.mark.parametrize(("table", "field"), [
    ({"customer_id": ["a"], "timestamp": [JAN], "timezone": ["Mars/Olympus"]}, "timezone"),
    ({"customer_id": ["a"], "timestamp": [float("nan")]}, "timestamp"),
    ({"customer_id": ["a", "b"], "timestamp": [JAN]}, "timestamp"),
    ({"timestamp": [JAN]}, "customer_id"),
    ({"customer_id": [], "timestamp": []}, "customer_id"),
])
def test_bad_tables_name_the_column(table, field):
    with pytest.raises(InvalidInput) as err:
        SendTimeOptimizer().fit(table)
    assert err.value.field == field


def test_bad_counts_and_parameters():
    with pytest.raises(InvalidInput) as err:
        SendTimeOptimizer().fit_counts(["a"], np.zeros((1, 23)))
    assert err.value.field == "counts"
    with pytest.raises(InvalidInput) as err:
        SendTimeOptimizer().fit_counts(["a"], -np.ones((1, 24)))
    assert err.value.field == "counts"
    with pytest.raises(InvalidInput) as err:
        SendTimeOptimizer(prior_strength=0).fit_counts(["a"], np.ones((1, 24)))
    assert err.value.field == "prior_strength"


def test_confidence_matches_a_full_dirichlet_simulation():
    table, _ = planted(n=200, events=12)
    model = SendTimeOptimizer(n_samples=400).fit(table)
    rng = np.random.default_rng(0)
    counts = np.zeros((4, 24))
    counts[1, 19] = 3  # a little history
    counts[2, [8, 19]] = [2, 2]  # a tie
    counts[3, 19], counts[3, 7] = 30, 4  # a clear habit
    got = model.best_hours_for_counts(counts)
    alpha = counts + model.prior_strength * model.global_dist_
    for g, a in zip(got, alpha, strict=True):
        reference = (np.argmax(rng.dirichlet(a, 20000), axis=1) == g.hour).mean()
        assert g.confidence == pytest.approx(reference, abs=0.06), (g, reference)
    assert got[0].confidence < 0.25  # no history: one hour among 24 is rarely sure
    assert got[3].confidence > 0.95
