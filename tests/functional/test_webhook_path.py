"""The core's webhook path with a minimal signed source: 401s, pings, dedupe, audit, catalog.

The real platforms' sources (plugins/source_*) have their own tests against the shared
fixtures; this file pins down what the core does around any source.
"""

from __future__ import annotations

import base64
import json
import types

import pytest
from chalice.test import Client

from chalicelib.plugin_api import (
    CatalogItem,
    Delivery,
    EventSource,
    SignatureError,
    SourceOutput,
    hmac_sha256,
    hookimpl,
    matches_any,
)
from chalicelib.plugin_host import PluginHost
from chalicelib.runtime import set_runtime

SECRET = "test-shop-secret"


class ShopUnderTest(EventSource):
    name = "testshop"

    def verify(self, request, secrets):
        given = request.header("x-test-hmac")
        if request.body == b"ping=1" and given is None:
            return
        if given is None:
            raise SignatureError("missing X-Test-Hmac header")
        if not matches_any([hmac_sha256(s, request.body) for s in secrets], [base64.b64decode(given)]):
            raise SignatureError("signature does not match")

    def delivery(self, request):
        if request.body == b"ping=1":
            return Delivery(delivery_id="ping", topic="ping", ping=True)
        delivery_id = request.header("x-test-delivery")
        if not delivery_id:
            raise ValueError("missing X-Test-Delivery header")
        return Delivery(delivery_id=delivery_id, topic=request.header("x-test-topic") or "?",
                        event_id=request.header("x-test-event"))

    def to_output(self, request):
        body = json.loads(request.body)
        if body.get("product"):
            p = body["product"]
            return SourceOutput(catalog=[CatalogItem(product_id=p["id"], variant_id="v1", title=p["title"],
                                                     price=p["price"], stock=p["stock"], status="active")])
        return SourceOutput(events=[{
            "type": "track", "event": "Order Completed", "messageId": f"testshop:{request.header('x-test-delivery')}",
            "userId": str(body["customer_id"]), "timestamp": "2026-03-02T09:00:00Z",
            "context": {"traits": {"email": body["email"]}},
            "properties": {"order_id": body["id"], "total": body["total"], "currency": "EUR"},
        }])


@hookimpl
def register_sources(register):
    register(ShopUnderTest)


@pytest.fixture
def shop(make_runtime, smtp_server):
    module = types.ModuleType("testshop_plugin")
    module.register_sources = register_sources
    runtime = make_runtime(smtp_server)
    runtime.host = PluginHost().load(extra=[("testshop", module)])
    runtime.sources.host = runtime.host
    runtime.credentials.add_webhook_secret("testshop", SECRET)
    set_runtime(runtime)
    import app as app_module

    with Client(app_module.app) as client:
        yield runtime, client


def post(client, body, *, delivery="d1", topic="orders/create", secret=SECRET, event=None, extra=None):
    raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
    headers = {"Content-Type": "application/json", "X-Test-Delivery": delivery, "X-Test-Topic": topic}
    if secret is not None:
        headers["X-Test-Hmac"] = base64.b64encode(hmac_sha256(secret, raw)).decode()
    if event:
        headers["X-Test-Event"] = event
    headers.update(extra or {})
    return client.http.post("/webhooks/testshop", headers=headers, body=raw)


ORDER = {"id": 9007199254740993, "customer_id": 820982911946154508, "email": "Buyer@Example.com", "total": 59.9}


def test_a_signed_order_becomes_a_canonical_event_on_the_right_profile(shop):
    runtime, client = shop
    r = post(client, ORDER)
    assert r.status_code == 200, r.body
    assert json.loads(r.body)["delivery_id"] == "d1"
    runtime.drain()
    profile_id = runtime.stores.profiles.resolve("user_id", "820982911946154508")
    assert profile_id == runtime.stores.profiles.resolve("email", "buyer@example.com")
    [event] = [e for e in runtime.stores.events.for_profile(profile_id) if e.source == "testshop"]
    assert event.event == "Order Completed" and event.payload["properties"]["order_id"] == ORDER["id"]
    raw = runtime.stores.events.get("raw:testshop", "d1")
    assert json.loads(raw.payload["body"]) == ORDER and "x-test-hmac" in raw.payload["headers"]


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"secret": None}, "missing X-Test-Hmac header"),
        ({"secret": "someone-else"}, "signature does not match"),
    ],
)
def test_unsigned_or_wrongly_signed_requests_get_401_with_the_reason(shop, kwargs, reason):
    runtime, client = shop
    r = post(client, ORDER, **kwargs)
    assert r.status_code == 401
    assert json.loads(r.body)["message"] == reason
    assert runtime.stores.queue.depth("ingest") == 0


def test_a_tampered_body_is_refused(shop):
    runtime, client = shop
    raw = json.dumps(ORDER).encode()
    sig = base64.b64encode(hmac_sha256(SECRET, raw)).decode()
    tampered = raw.replace(b"59.9", b"0.01")
    r = client.http.post("/webhooks/testshop", body=tampered, headers={
        "Content-Type": "application/json", "X-Test-Hmac": sig, "X-Test-Delivery": "d1"})
    assert r.status_code == 401 and runtime.stores.queue.depth("ingest") == 0


def test_without_any_secret_the_401_says_how_to_add_one(shop):
    runtime, client = shop
    runtime.credentials.remove_webhook_secrets("testshop")
    r = post(client, ORDER)
    assert r.status_code == 401 and "omnicast webhook-secret add testshop" in json.loads(r.body)["message"]


def test_secret_rotation_accepts_old_and_new(shop):
    runtime, client = shop
    runtime.credentials.add_webhook_secret("testshop", "the-new-secret")
    assert post(client, ORDER, delivery="old").status_code == 200
    assert post(client, ORDER, secret="the-new-secret", delivery="new").status_code == 200


def test_unknown_source_is_404_and_missing_delivery_header_400(shop):
    _, client = shop
    r = client.http.post("/webhooks/magento", headers={"Content-Type": "application/json"}, body="{}")
    assert r.status_code == 404 and "testshop" in json.loads(r.body)["message"]
    r = post(client, ORDER, delivery="")
    assert r.status_code == 400 and "X-Test-Delivery" in json.loads(r.body)["message"]


def test_ping_is_answered_and_ignored(shop):
    runtime, client = shop
    r = client.http.post("/webhooks/testshop", headers={"Content-Type": "application/x-www-form-urlencoded"},
                         body="ping=1")
    assert r.status_code == 200 and json.loads(r.body)["ping"] is True
    assert runtime.stores.queue.depth("ingest") == 0


def test_retries_and_repeated_actions_change_nothing(shop, smtp_server):
    runtime, client = shop
    post(client, ORDER, delivery="d1", event="evt-1")
    post(client, ORDER, delivery="d1", event="evt-1")  # the platform retried the delivery
    post(client, ORDER, delivery="d2", event="evt-1")  # the same action delivered again
    runtime.drain()
    profile_id = runtime.stores.profiles.resolve("user_id", "820982911946154508")
    assert len([e for e in runtime.stores.events.for_profile(profile_id) if e.source == "testshop"]) == 1
    assert runtime.stores.profiles.get(profile_id).traits["orders_count"] == 1


def test_a_large_body_travels_through_the_blob_store(shop):
    runtime, client = shop
    big = {**ORDER, "note": "x" * 300_000}
    assert post(client, big, delivery="big").status_code == 200
    [message] = runtime.stores.queue.receive("ingest")
    assert "body_blob" in message.body and "body_b64" not in message.body
    runtime.stores.queue.send("ingest", message.body)
    runtime.drain()
    raw = runtime.stores.events.get("raw:testshop", "big")
    assert raw.processed and "body" not in raw.payload
    kept = json.loads(runtime.stores.blobs.get(raw.payload["raw"]))  # large bodies are kept in the blob store
    assert json.loads(kept["body"])["note"] == "x" * 300_000 and "x-test-hmac" in kept["headers"]


def test_catalog_changes_emit_back_in_stock_and_price_drop(shop):
    runtime, client = shop
    post(client, {"product": {"id": "p1", "title": "Tee", "price": 30.0, "stock": 0}}, delivery="p-1",
         topic="products/create")
    post(client, {"product": {"id": "p1", "title": "Tee", "price": 24.0, "stock": 5}}, delivery="p-2",
         topic="products/update")
    runtime.drain()
    product = runtime.stores.catalog.get("p1", "v1")
    assert (product.price, product.stock) == (24.0, 5)
    catalog_events = [runtime.stores.events.get("catalog", m) for m in _catalog_ids(runtime)]
    assert sorted(e.event for e in catalog_events) == [
        "Product Back In Stock", "Product Price Dropped", "Product Published"]
    drop = next(e for e in catalog_events if e.event == "Product Price Dropped")
    assert drop.payload["properties"]["drop_percent"] == 20.0


def _catalog_ids(runtime):
    db = runtime.stores.events.db  # the local adapter: read the log directly
    return [r[0] for r in db.query("SELECT message_id FROM events WHERE source='catalog'")]


def test_replay_maps_kept_deliveries_again_and_duplicates_change_nothing(shop, monkeypatch):
    runtime, client = shop
    post(client, ORDER, delivery="r1")
    post(client, {**ORDER, "id": 5}, delivery="r2")
    runtime.drain()
    assert runtime.webhook_processor.replay("testshop") == (2, 0)  # nothing new: all duplicates
    source = runtime.sources.get("testshop")
    original = source.to_output

    def fixed_mapping(request):  # a later plugin version maps one more event per order
        out = original(request)
        extra = dict(out.events[0], event="Order Reviewed", messageId=out.events[0]["messageId"] + ":review")
        out.events.append(extra)
        return out

    monkeypatch.setattr(source, "to_output", fixed_mapping)
    decisions = len(runtime.stores.ledger.all())
    assert runtime.webhook_processor.replay("testshop") == (2, 2)
    assert runtime.webhook_processor.replay("testshop") == (2, 0)
    assert runtime.stores.events.count("testshop") == 4
    runtime.drain()
    assert len(runtime.stores.ledger.all()) == decisions  # replays start no journeys, send nothing
    from chalicelib.errors import NotFound

    with pytest.raises(NotFound):
        runtime.webhook_processor.replay("magento")
