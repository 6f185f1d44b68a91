"""Every platform's real payloads, signed as the platform signs, through POST /webhooks/{source}
into canonical events on the right profiles; tampered, stale and duplicate deliveries change nothing."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from chalice.test import Client

from chalicelib.plugin_api import hmac_sha256, standard_webhooks_signature
from chalicelib.runtime import set_runtime
from tests.conftest import SHARED_FIXTURES

pytestmark = pytest.mark.skipif(not SHARED_FIXTURES.is_dir(), reason=f"no shared fixtures at {SHARED_FIXTURES}")

SHOPIFY_TOPICS = {
    "orders_create": "orders/create", "orders__": "orders/create", "checkouts_create": "checkouts/create",
    "customers_create": "customers/create", "customers__": "customers/update", "products_update": "products/update",
    "inventory_levels": "inventory_levels/update", "order__rest": "orders/updated",
}
BC_ROUTES = {
    "/stores/h/v2/orders/250": {"id": 250, "customer_id": 32, "status_id": 11, "total_inc_tax": "225.0000",
                                "currency_code": "USD", "billing_address": {"email": "jane@example.com"},
                                "date_created": "Tue, 25 Jun 2019 16:15:35 +0000"},
    "/stores/h/v2/orders/250/products": [{"product_id": 77, "variant_id": 101, "name": "Towel", "quantity": 1,
                                          "price_inc_tax": "225.0000"}],
    "/stores/h/v3/carts/09346904-4175-44fd-be53-f7e598531b6c": {"data": {
        "id": "09346904-4175-44fd-be53-f7e598531b6c", "customer_id": 32, "email": "jane@example.com",
        "cart_amount": 10, "currency": {"code": "USD"}, "line_items": {"physical_items": []}}},
    "/stores/h/v3/customers?id:in=32": {"data": [{"id": 32, "email": "jane@example.com", "first_name": "Jane"}]},
}


class Store(BaseHTTPRequestHandler):
    def do_GET(self):
        body = BC_ROUTES.get(self.path)
        raw = json.dumps(body if body is not None else {"status": 404}).encode()
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@pytest.fixture
def shop(make_runtime, clock):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Store)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    vectors = json.loads((SHARED_FIXTURES / "signature_vectors.json").read_text())
    runtime = make_runtime(
        channels={"email": "smtp"}, journeys={"disabled": ["welcome"]},
        plugin_settings={"bigcommerce": {"store_hash": "h", "access_token": "t",
                                         "api_base_url": f"http://127.0.0.1:{server.server_address[1]}"}},
    )
    for source, key in [("shopify", "shopify"), ("woocommerce", "woocommerce"), ("stripe", "stripe"),
                        ("bigcommerce", "bigcommerce_client_secret")]:
        runtime.credentials.add_webhook_secret(source, vectors["secrets"][key])
    set_runtime(runtime)
    import app as app_module

    with Client(app_module.app) as client:
        yield runtime, client, vectors["secrets"]
    server.shutdown()
    server.server_close()


def signed(source: str, name: str, body: bytes, secrets: dict[str, str], now: int, n: int) -> dict[str, str]:
    if source == "shopify":
        topic = next(t for k, t in SHOPIFY_TOPICS.items() if k in name)
        return {"X-Shopify-Topic": topic, "X-Shopify-Webhook-Id": f"wh-{n}", "X-Shopify-Shop-Domain": "d.example",
                "X-Shopify-Hmac-Sha256": base64.b64encode(hmac_sha256(secrets["shopify"], body)).decode()}
    if source == "woocommerce":
        topic = "order.created" if "order" in name else "customer.created"
        return {"X-WC-Webhook-Topic": topic, "X-WC-Webhook-Delivery-ID": f"d-{n}", "X-WC-Webhook-ID": "3",
                "X-WC-Webhook-Signature": base64.b64encode(hmac_sha256(secrets["woocommerce"], body)).decode()}
    if source == "stripe":
        return {"Stripe-Signature": f"t={now},v1={hmac_sha256(secrets['stripe'], f'{now}.'.encode() + body).hex()}"}
    sig = standard_webhooks_signature(secrets["bigcommerce_client_secret"], f"msg-{n}", now, body)
    return {"webhook-id": f"msg-{n}", "webhook-timestamp": str(now), "webhook-signature": sig}


def body_for(source: str, path, n: int) -> bytes:
    data = json.loads(path.read_text())
    if source == "shopify" and "access_scopes" in data:
        data = data["response"]
    if source == "shopify" and list(data) == ["order"]:
        data = data["order"]
    if source == "stripe":
        data["id"] = f"evt_fixture_{n}"  # the fixtures share one zeroed id; Stripe's are unique
    return json.dumps(data).encode()


def test_every_fixture_is_accepted_and_lands_once(shop):
    runtime, client, secrets = shop
    now = int(runtime.clock.now().timestamp())
    posted = []
    for n, path in enumerate(sorted(SHARED_FIXTURES.glob("*__*.json"))):
        source = path.name.split("__")[0]
        body = body_for(source, path, n)
        headers = {"Content-Type": "application/json", **signed(source, path.name, body, secrets, now, n)}
        r = client.http.post(f"/webhooks/{source}", headers=headers, body=body)
        assert r.status_code == 200, (path.name, r.body)
        again = client.http.post(f"/webhooks/{source}", headers=headers, body=body)  # a retry
        assert again.status_code == 200
        tampered = client.http.post(f"/webhooks/{source}", headers=headers, body=body.replace(b"{", b"{ ", 1))
        assert tampered.status_code == 401, path.name
        posted.append((source, headers))
    runtime.drain()
    raw = {s: 0 for s in ("shopify", "woocommerce", "stripe", "bigcommerce")}
    for source, _headers in posted:
        raw[source] += 1
    db = runtime.stores.events.db
    stored_raw = dict(db.query("SELECT source, COUNT(*) FROM events WHERE source LIKE 'raw:%' GROUP BY source"))
    assert stored_raw == {f"raw:{s}": n for s, n in raw.items()}  # retries deduplicated
    canonical = dict(db.query("SELECT source, COUNT(*) FROM events WHERE source IN "
                              "('shopify', 'woocommerce', 'stripe', 'bigcommerce') GROUP BY source"))
    assert set(canonical) == set(raw) and all(canonical.values())
    unprocessed = db.query("SELECT source, message_id FROM events WHERE processed = 0")
    assert unprocessed == []
    # the right profiles: one customer per platform identity, joined by e-mail where they share one
    john = runtime.stores.profiles.resolve("email", "john.doe@example.com")
    assert john and runtime.stores.profiles.resolve("woocommerce_customer_id", "25") == john
    jane = runtime.stores.profiles.resolve("bigcommerce_customer_id", "32")
    assert jane == runtime.stores.profiles.resolve("email", "jane@example.com")
    order = runtime.stores.profiles.resolve("shopify_customer_id", "115310627314723954")
    assert order and runtime.stores.profiles.get(order).traits["orders_count"] >= 1
    assert runtime.stores.catalog.get("788032119674292922", "642667041472713922").price == 19.99


def test_stale_stripe_deliveries_are_refused(shop):
    runtime, client, secrets = shop
    path = SHARED_FIXTURES / "stripe__charge.succeeded__stripe-ruby-mock.json"
    body = path.read_bytes()
    stale = int(runtime.clock.now().timestamp()) - 3600
    headers = {"Content-Type": "application/json", **signed("stripe", path.name, body, secrets, stale, 0)}
    r = client.http.post("/webhooks/stripe", headers=headers, body=body)
    assert r.status_code == 401 and "tolerance" in json.loads(r.body)["message"]
