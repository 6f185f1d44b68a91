"""WooCommerce source against the real payloads in ../shared/fixtures/webhooks."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from omnicast_source_woocommerce import WooCommerce

from chalicelib.events import parse_call
from chalicelib.plugin_api import NoSettings, SignatureError, WebhookRequest, hmac_sha256

FIXTURES = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "webhooks"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"shared fixtures not found at {FIXTURES}")
NOW = datetime(2026, 3, 2, 10, tzinfo=UTC)
FILES = {"woocommerce__order__rest-v3-docs-create-order-response.json": "order.created",
         "woocommerce__customer__rest-v3-docs-create-customer-response.json": "customer.created"}


def vectors():
    return json.loads((FIXTURES / "signature_vectors.json").read_text())


def secret():
    return vectors()["secrets"]["woocommerce"]


def request(body: bytes, topic: str | None, sig: str | bool | None = None, delivery="d-1", content_type=None):
    headers = {"X-WC-Webhook-Topic": topic, "X-WC-Webhook-Delivery-ID": delivery, "X-WC-Webhook-ID": "7",
               "X-WC-Webhook-Source": "https://woo.example/"}
    headers = {k: v for k, v in headers.items() if v is not None}
    if sig is not False:
        headers["X-WC-Webhook-Signature"] = sig or base64.b64encode(hmac_sha256(secret(), body)).decode()
    if content_type:
        headers["Content-Type"] = content_type
    return WebhookRequest(source="woocommerce", headers={k.lower(): v for k, v in headers.items()}, body=body,
                          received_at=NOW)


def src():
    return WooCommerce(NoSettings())


def test_known_answer_vector():
    kat = vectors()["kat"]["woocommerce X-WC-Webhook-Signature over b'{\"id\":1}'"]
    assert src().verify(request(b'{"id":1}', "order.created", sig=kat), [secret()]) is None
    with pytest.raises(SignatureError):
        src().verify(request(b'{"id":1}', "order.created", sig=kat), ["another-secret"])


@pytest.mark.parametrize("name", sorted(FILES))
def test_fixtures_verify_map_and_validate(name):
    raw = (FIXTURES / name).read_bytes()
    source = src()
    source.verify(request(raw, FILES[name], sig=vectors()["files"][name]["X-WC-Webhook-Signature"]), [secret()])
    with pytest.raises(SignatureError):
        source.verify(request(raw.replace(b"John", b"Jane"), FILES[name],
                              sig=vectors()["files"][name]["X-WC-Webhook-Signature"]), [secret()])
    req = request(raw, FILES[name])
    source.verify(req, ["rotated-out", secret()])
    assert source.delivery(req).delivery_id == "7:d-1"
    out = source.to_output(req)
    assert out.events
    for event in out.events:
        parse_call(event["type"], event, NOW)


def test_order_mapping():
    raw = (FIXTURES / "woocommerce__order__rest-v3-docs-create-order-response.json").read_bytes()
    [order] = src().to_output(request(raw, "order.created")).events
    assert order["event"] == "Order Completed"  # status processing
    p = order["properties"]
    assert (p["order_id"], p["total"], p["currency"]) == ("727", 29.35, "USD")
    assert p["products"][0] == {"product_id": "93", "name": "Woo Single #1", "price": 3.0, "quantity": 2}
    assert order["context"]["traits"]["email"] == "john.doe@example.com"
    assert order["timestamp"] == "2017-03-22T19:28:08Z"
    body = json.loads(raw)
    body["status"] = "cancelled"
    [cancelled] = src().to_output(request(json.dumps(body).encode(), "order.updated")).events
    assert cancelled["event"] == "Order Cancelled"


def test_the_unsigned_creation_ping_is_accepted_and_nothing_else_unsigned():
    ping = request(b"webhook_id=15", None, sig=False, content_type="application/x-www-form-urlencoded")
    src().verify(ping, [secret()])
    assert src().delivery(ping).ping
    with pytest.raises(SignatureError, match="missing X-WC-Webhook-Signature"):
        src().verify(request(b'{"id": 1}', "order.created", sig=False), [secret()])
    with pytest.raises(SignatureError, match="missing"):
        src().verify(request(b"webhook_id=15&x=1", None, sig=False), [secret()])


def test_products_feed_the_catalog():
    body = {"id": 799, "name": "Ship Your Idea", "price": "21.99", "stock_quantity": 0, "status": "publish",
            "permalink": "https://woo.example/product/ship-your-idea", "categories": [{"id": 9, "name": "Clothing"}],
            "images": [{"src": "https://woo.example/img.jpg"}]}
    [item] = src().to_output(request(json.dumps(body).encode(), "product.updated")).catalog
    assert (item.product_id, item.price, item.stock, item.categories) == ("799", 21.99, 0, ("Clothing",))
