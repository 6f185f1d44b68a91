"""The engagement models through the core's scoring service on the local runtime: events
written through the ports, training writes cards and artifacts, a scoring run stores a score
with its explanation for every customer, a second run changes nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest
from omnicast_engagement import synthetic

from chalicelib.adapters.local import local_stores
from chalicelib.clock import ManualClock
from chalicelib.config import load_settings
from chalicelib.ports import LedgerEntry, StoredEvent
from chalicelib.runtime import Runtime, set_runtime

ENGAGEMENT = ["item_to_item", "send_time", "best_channel", "thompson_bandit"]
N = 400
DAYS = 360
NOW = datetime.fromtimestamp(synthetic.T0 + (DAYS + 1) * synthetic.DAY, UTC)


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(float(seconds), UTC)


def track(stores, pid, name, when, props, mid, source="segment"):
    stores.events.append(StoredEvent(
        message_id=mid, type="track", profile_id=pid, received_at=when, timestamp=when, event=name, source=source,
        payload={"type": "track", "event": name, "userId": pid, "properties": props}, processed=True))


def write_shop(stores) -> None:
    data = synthetic.interactions(N, 120, n_groups=12, per_customer=12.0, days=DAYS, seed=4)
    for i, (c, item, kind, t) in enumerate(zip(data["customer_id"], data["item_id"], data["kind"], data["timestamp"],
                                               strict=True)):
        if kind == "purchase":
            track(stores, str(c), "Order Completed", at(t),
                  {"order_id": f"o{i}", "total": 25.0, "products": [{"product_id": str(item)}]}, f"o{i}", "shopify")
        else:
            track(stores, str(c), "Product Viewed", at(t), {"product_id": str(item)}, f"v{i}")
    rng = np.random.default_rng(4)
    for i in range(N):  # a message every 20 days on e-mail and SMS; odd customers click SMS, even e-mail
        for j, channel in enumerate(("email", "sms")):
            for m in range(DAYS // 20):
                sent = synthetic.T0 + (m * 20 + j) * synthetic.DAY + 9 * 3600
                key = f"c{i}|newsletter|s{m}-{channel}|-"
                stores.ledger.claim(LedgerEntry(key=key, profile_id=f"c{i}", journey="newsletter", step=f"s{m}",
                                                channel=channel, status="sent", reason="sent", created_at=at(sent),
                                                updated_at=at(sent)))
                likes = (channel == "sms") == (i % 2 == 1)
                if rng.random() < (0.7 if likes else 0.05):
                    hour = 7 + (i % 4) * 4  # 07, 11, 15 or 19 UTC
                    click = synthetic.T0 + (m * 20 + j) * synthetic.DAY + hour * 3600 + 600
                    track(stores, f"c{i}", "Email Link Clicked", at(click), {"ledger_key": key}, f"k{i}-{j}-{m}",
                          "tracking")


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    settings = load_settings({}, overrides={"data_dir": str(tmp_path_factory.mktemp("data"))})
    rt = Runtime(settings, stores=local_stores(None), clock=ManualClock(NOW))
    write_shop(rt.stores)
    yield rt
    rt.close()
    set_runtime(None)


@pytest.fixture(scope="module")
def cards(runtime):
    return {c["name"]: c for c in runtime.scoring.train(ENGAGEMENT)}


def test_training_writes_a_card_and_an_explicit_artifact_for_each_model(runtime, cards):
    assert set(cards) == set(ENGAGEMENT)
    for name, card in cards.items():
        assert card["kind"] == runtime.host.registry.models[name].kind
        assert card["artifact"]["format"] in ("npz", "json")
        data = runtime.stores.blobs.get(card["artifact"]["key"])
        assert data is not None and len(data) == card["artifact"]["bytes"]
        assert not data.startswith(b"\x80")  # never a pickle
    assert cards["send_time"]["method"] == "model"
    assert cards["send_time"]["metrics"]["share_within_1h"] > 0.8
    assert cards["best_channel"]["method"] == "model"
    m = cards["best_channel"]["metrics"]
    assert m["click_rate_on_best_channel"] > 3 * m["click_rate_on_other_channels"]
    assert cards["thompson_bandit"]["model"]["pulls"] == {"A": 0, "B": 0}
    assert cards["item_to_item"]["horizon_days"] == 30.0  # the plugin's own horizon, not the churn one
    json.dumps(cards)  # cards are JSON


def test_a_scoring_run_stores_every_customer_s_scores_with_explanations(runtime, cards):
    report = runtime.scoring.run()
    assert report.customers > 0
    odd, even = runtime.scoring.for_profile("c1"), runtime.scoring.for_profile("c2")
    by_model = {s["model"]: s for s in odd}
    assert set(by_model) == set(ENGAGEMENT)
    assert by_model["best_channel"]["label"] == "sms"
    assert {s["model"]: s for s in even}["best_channel"]["label"] == "email"
    assert by_model["send_time"]["values"]["hour"] == 11  # c1 clicks at 07 + 1 * 4
    recs = by_model["item_to_item"]["values"]["items"]
    assert len(recs) == 10 and len(set(recs)) == 10
    for s in odd:
        assert s["version"] == cards[s["model"]]["version"]
    again = runtime.scoring.run()
    assert again.scores == 0 or again.skipped_shards == again.shards  # a repeated run writes nothing new
    assert runtime.scoring.for_profile("c1") == odd


def test_recommendations_are_trained_not_a_fallback(cards):
    assert cards["item_to_item"]["method"] == "model"
    metrics = cards["item_to_item"]["metrics"]
    assert metrics["customers"] > 50
    assert metrics["precision_at_k"] > 1.5 * metrics["popularity_precision_at_k"]


def test_the_shop_site_gets_recommendations_over_http(runtime, cards):
    """GET /v1/recommendations/{profile_id} through the Chalice app, with the trained model."""
    import base64

    from chalice.test import Client

    import app as app_module
    from chalicelib.ports import Product

    for item in range(120):
        runtime.stores.catalog.put(Product(f"p{item}", "-", title=f"Item {item}", price=10.0 + item, currency="EUR",
                                           stock=0 if item % 10 == 0 else 5))
    set_runtime(runtime)
    key = runtime.credentials.create_key("write", "site")
    auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    with Client(app_module.app) as client:
        r = client.http.get("/v1/recommendations/c1?k=5", headers=auth)
        assert r.status_code == 200, r.body
        body = json.loads(r.body)
        items = body["items"]
        assert body["model"] == "item_to_item" and body["version"] == cards["item_to_item"]["version"]
        assert 0 < len(items) <= 5 and all(int(i["product_id"][1:]) % 10 for i in items)  # nothing out of stock
        bought = {p["product_id"] for e in runtime.stores.events.for_profile("c1", limit=200)
                  if e.event == "Order Completed" for p in e.payload["properties"]["products"]}
        assert not bought & {i["product_id"] for i in items}  # nothing already bought
        assert all(i["reason"] for i in items)
        assert client.http.get("/v1/recommendations/c1?k=many", headers=auth).status_code == 400
        assert json.loads(client.http.get("/v1/recommendations/c1?k=x", headers=auth).body)["field"] == "k"
        assert client.http.get("/v1/recommendations/c1").status_code == 401
