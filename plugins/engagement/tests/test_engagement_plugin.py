"""The engagement estimators as Model plugins: registered through the entry point, fitted,
evaluated and scored on FeatureTables built by the core's own feature builder, dumped and
loaded through the explicit artifact format, and cheap to import."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import numpy as np
import pytest
from omnicast_engagement import synthetic
from omnicast_engagement.plugin import (
    BanditSettings,
    BestChannelModel,
    BestChannelSettings,
    ItemToItemModel,
    RecommendationSettings,
    SendTimeModel,
    SendTimeSettings,
    ThompsonBanditModel,
    _interactions,
)

from chalicelib.features import build, days
from chalicelib.plugin_api import Artifact, ModelError, Score, TrainingSet
from chalicelib.plugin_host import PluginHost
from chalicelib.ports import Activity

TRAIN_AT = datetime(2026, 4, 1, tzinfo=UTC)  # synthetic interactions span 2026-01-01 + 120 days
TEST_AT = datetime(2026, 5, 1, tzinfo=UTC)


def activity(n=1500, seed=2) -> Activity:
    """A shop's activity: planted co-purchases, views, sends and clicks by channel, open hours."""
    data = synthetic.interactions(n, 300, n_groups=30, seed=seed)
    rng = np.random.default_rng(seed)
    a = Activity()
    t_days = data["timestamp"] / 86400.0
    for c, item, kind, t in zip(data["customer_id"], data["item_id"], data["kind"], t_days, strict=True):
        if kind == "purchase":
            a.item_profile.append(str(c))
            a.item_time.append(float(t))
            a.item_product.append(str(item))
            a.order_profile.append(str(c))
            a.order_time.append(float(t))
            a.order_total.append(20.0)
            a.order_id.append(f"o-{c}-{t}")
        else:
            a.view_profile.append(str(c))
            a.view_time.append(float(t))
            a.view_product.append(str(item))
            a.view_category.append("")
    # messages: odd customers click SMS, even customers click e-mail, at 08, 11, 14, 17 or 20 UTC
    start = days(datetime(2026, 1, 10, tzinfo=UTC))
    for i in range(n):
        for j, ch in enumerate(("email", "sms")):
            for m in range(10):  # every 12 days: seven before TRAIN_AT, three before TEST_AT
                key = f"k-{i}-{ch}-{m}"
                sent = start + m * 12 + j
                a.send_key.append(key)
                a.send_profile.append(f"c{i}")
                a.send_channel.append(ch)
                a.send_time.append(sent)
                likes = (ch == "sms") == (i % 2 == 1)
                if rng.random() < (0.6 if likes else 0.05):
                    a.engagement_profile.append(f"c{i}")
                    a.engagement_time.append(sent + (8 + (i % 5) * 3) / 24.0 - (sent % 1.0) + 0.01)
                    a.engagement_kind.append("click")
                    a.engagement_key.append(key)
    return a


@pytest.fixture(scope="module")
def shop():
    act = activity()
    ids = sorted({*act.item_profile, *act.view_profile, *act.send_profile})
    train = build(act, ids, TRAIN_AT)
    test = build(act, ids, TEST_AT)
    return TrainingSet(train, {}, 30.0), TrainingSet(test, {}, 30.0), act, ids


def test_plugins_register_through_the_entry_point():
    host = PluginHost().load()
    models = {name: cls for name, cls in host.registry.models.items()
              if cls.__module__.startswith("omnicast_engagement")}
    assert {n: c.kind for n, c in models.items()} == {
        "item_to_item": "recommendations", "send_time": "send_time", "best_channel": "best_channel",
        "thompson_bandit": "bandit"}
    assert any(p.name == "engagement" and "register_models" in p.hooks for p in host.loaded)


def test_importing_the_plugin_does_not_import_numpy():
    code = ("import sys, omnicast_engagement, omnicast_engagement.plugin, omnicast_engagement.api;"
            "print(sorted(m for m in ('numpy', 'scipy', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_recommendations_fit_evaluate_score_and_round_trip(shop):
    train, test, act, ids = shop
    model = ItemToItemModel(RecommendationSettings(k=5)).fit(train)
    metrics = model.evaluate(test)
    assert metrics["customers"] > 200
    assert metrics["precision_at_k"] > 2 * metrics["popularity_precision_at_k"] > 0
    assert metrics["recall_at_k"] > 2 * metrics["popularity_recall_at_k"]
    in_stock = [f"p{i}" for i in range(300) if i % 4]
    table = build(act, ids[:40], TEST_AT)  # a chunk of customers, as the scoring job builds it
    table.extras["in_stock"] = in_stock
    scores = model.score(table)
    assert len(scores) == 40 and all(isinstance(s, Score) for s in scores)
    rows = np.asarray(table.extras["interactions"]["row"])
    products = np.asarray(table.extras["interactions"]["product"])
    kinds = np.asarray(table.extras["interactions"]["kind"])
    for i, s in enumerate(scores):
        items = s.values["items"]
        assert len(items) == 5 and not set(items) - set(in_stock)
        assert not set(items) & set(products[(rows == i) & (kinds == "purchase")])  # bought before TEST_AT
        assert s.value == sum(x == "similar" for x in s.values["sources"]) / 5
        assert s.label == items[0] and s.model == "item_to_item" and s.method == "model"
        assert s.version == model.artifact_version
        if s.values["sources"][0] == "similar":
            because = s.values["because"][0]
            assert because in set(products[rows == i])  # an item this customer bought or viewed
            why = model.estimator.with_history(_interactions(table)).reason(s.profile_id, items[0])
            assert (why["because"], why["co_purchased"]) == (because, s.values["co_purchased"][0])
            assert s.explanation and s.explanation[0].feature == f"bought_with:{because}"
        else:
            assert s.values["because"][0] is None
    assert sum(s.value for s in scores) > 20  # most customers get personalised picks
    back = ItemToItemModel(RecommendationSettings(k=5))
    back.load(model.dump())
    assert [s.values["items"] for s in back.score(table)] == [s.values["items"] for s in scores]
    with pytest.raises(ModelError):
        back.load(Artifact("pickle", b"\x80\x04."))
    with pytest.raises(ModelError):
        back.load(Artifact("npz", b"not an archive"))
    assert model.describe()["items"] > 100 and model.describe()["evaluation"] == metrics


def test_recommendations_heuristic_is_popularity_from_the_table(shop):
    _, _, act, ids = shop
    model = ItemToItemModel(RecommendationSettings(k=3))
    model.use_heuristic("heuristic: 30 customers < 50")
    scores = model.score(build(act, ids[:10], TEST_AT))
    assert all(s.method == "heuristic: 30 customers < 50" for s in scores)
    assert all(src == "popular" for s in scores for src in s.values["sources"])
    assert all(s.value == 0.0 and len(s.values["items"]) == 3 for s in scores)


def test_send_time_from_feature_hours(shop):
    train, test = shop[:2]
    model = SendTimeModel(SendTimeSettings()).fit(train)
    metrics = model.evaluate(test)
    assert metrics["held_out_opens"] > 300
    assert metrics["share_within_1h"] > 0.9 > metrics["global_hour_share_within_1h"]
    table = test.features
    scores = model.score(table)
    by_id = {s.profile_id: s for s in scores}
    # customer i clicks at 8 + (i % 5) * 3 UTC
    checked = 0
    for i in range(20):
        s = by_id[f"c{i}"]
        if s.values["source"] == "customer":
            hour = 8 + (i % 5) * 3
            assert s.value == hour and s.label == f"{hour:02d}:00"
            assert s.explanation[0].feature == f"opens_at_{hour:02d}h"
            checked += 1
    assert checked >= 10
    assert sum(s.values["source"] == "customer" for s in scores) > 500
    # with time zones the hour moves to local time (Paris is UTC+2 on 2026-05-01)
    table.extras["timezones"] = ["Europe/Paris"] * len(table)
    local = {s.profile_id: s for s in model.score(table)}
    del table.extras["timezones"]
    moved = [i for i in range(30) if by_id[f"c{i}"].values["source"] == "customer"]
    assert moved and all(local[f"c{i}"].value == (by_id[f"c{i}"].value + 2) % 24 for i in moved)
    back = SendTimeModel(SendTimeSettings())
    back.load(model.dump())
    first = table.rows(np.arange(20))
    again = back.score(first)
    for s in again:  # the same verdict; the confidence is a Monte Carlo estimate of the chunk
        want = by_id[s.profile_id].values
        assert {k: v for k, v in s.values.items() if k != "confidence"} == {
            k: v for k, v in want.items() if k != "confidence"}
        assert s.values["confidence"] == pytest.approx(want["confidence"], abs=0.2)
    assert [s.values for s in back.score(first)] == [s.values for s in again]  # seeded: repeatable


def test_best_channel_from_sent_and_clicked_columns(shop):
    train, test = shop[:2]
    model = BestChannelModel(BestChannelSettings()).fit(train)
    metrics = model.evaluate(test)
    assert metrics["held_out_messages"] > 1000
    assert metrics["click_rate_on_best_channel"] > 3 * metrics["click_rate_on_other_channels"]
    scores = model.score(test.features)
    right = [s.label == ("sms" if int(s.profile_id[1:]) % 2 else "email") for s in scores]
    assert np.mean(right) > 0.9
    table = test.features
    table.extras["reachable"] = [["email"]] * len(table)
    assert {s.label for s in model.score(table)} == {"email"}
    del table.extras["reachable"]
    assert model.estimator.channels_.tolist() == ["email", "sms"]  # push and messenger are unused here
    rates = model.predict_matrix(np.array([[4, 4, 4, 0], [4, 4, 0, 4]]))
    assert rates.shape == (2, 2) and rates[0, 0] > rates[0, 1] and rates[1, 1] > rates[1, 0]
    with pytest.raises(ModelError):
        model.predict_matrix(np.zeros((1, 8)))
    desc = model.describe()
    assert set(desc["population_rate"]) >= {"email", "sms"}


def test_bandit_plugin_replays_its_log_and_scores(shop):
    train, test = shop[:2]
    log_rows = np.arange(600) % len(train.features)
    rng = np.random.default_rng(0)
    arms = np.where(np.arange(600) % 2 == 0, "A", "B")
    rewards = (rng.random(600) < np.where(arms == "B", 0.3, 0.05)).astype(float)
    train.features.extras["bandit_log"] = {"row": log_rows, "arm": arms, "reward": rewards}
    model = ThompsonBanditModel(BanditSettings(arms=("A", "B"), min_samples=100)).fit(train)
    del train.features.extras["bandit_log"]
    assert model.estimator.stopped and model.estimator.winner_ == "B"
    scores = model.score(test.features.rows(np.arange(5)))
    assert {s.label for s in scores} == {"B"} and all(s.value > 0.95 and s.values["stopped"] for s in scores)
    ctx = ThompsonBanditModel(BanditSettings(arms=("A", "B"), context_features=("orders", "views")))
    assert ctx.describe()["pulls"] == {"A": 0, "B": 0}  # describable before any outcome
    ctx_scores = ctx.score(test.features.rows(np.arange(5)))
    assert len(ctx_scores) == 5 and all(s.label in ("A", "B") for s in ctx_scores)
    back = ThompsonBanditModel(BanditSettings(arms=("A", "B"), min_samples=100))
    back.load(model.dump())
    assert back.estimator.winner_ == "B"
    bad = ThompsonBanditModel(BanditSettings(arms=("A", "B"), context_features=("no_such_feature",)))
    with pytest.raises(ModelError):
        bad.score(test.features.rows(np.arange(2)))


def test_recommendations_train_on_the_cores_training_set():
    """features.training_set keeps buyers only: the interactions must follow their customers."""
    from chalicelib.features import training_set

    act = activity(n=600, seed=5)
    ids = sorted({*act.item_profile, *act.view_profile, *act.send_profile, "only-viewed"})
    act.view_profile.append("only-viewed")  # a customer without orders: training_set drops them
    act.view_time.append(days(datetime(2026, 2, 1, tzinfo=UTC)))
    act.view_product.append("p1")
    act.view_category.append("")
    data = training_set(act, ids, TRAIN_AT, 30.0)
    model = ItemToItemModel(RecommendationSettings(k=5)).fit(data)
    table = data.features
    inter = table.extras["interactions"]
    for row, product, kind in zip(inter["row"], inter["product"], inter["kind"], strict=True):
        if kind == "purchase":
            pid = table.profile_ids[row]
            assert model.estimator.purchased_[np.searchsorted(model.estimator.customer_ids_, pid),
                                              np.searchsorted(model.estimator.item_ids_, product)]
