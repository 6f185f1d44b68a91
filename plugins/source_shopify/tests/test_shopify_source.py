"""Shopify source against the real payloads in ../shared/fixtures/webhooks."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from omnicast_source_shopify import Shopify, ShopifySettings, exact_id

from chalicelib.events import parse_call
from chalicelib.plugin_api import SignatureError, WebhookRequest, hmac_sha256

FIXTURES = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "webhooks"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"shared fixtures not found at {FIXTURES}")
NOW = datetime(2026, 3, 2, 10, tzinfo=UTC)

TOPICS = {
    "shopify__orders_create__docs-sample-2026-04__gadget-metadata.json": "orders/create",
    "shopify__orders__anonymized-real-exemplar-2025-04__gadget.json": "orders/create",
    "shopify__checkouts_create__docs-sample-2026-04__gadget-metadata.json": "checkouts/create",
    "shopify__customers_create__docs-sample-2026-04__gadget-metadata.json": "customers/create",
    "shopify__customers__anonymized-real-exemplar-2025-04__gadget.json": "customers/update",
    "shopify__products_update__docs-sample-2026-04__gadget-metadata.json": "products/update",
    "shopify__inventory_levels_update__docs-sample-2024-04__gadget-metadata.json": "inventory_levels/update",
    "shopify__inventory_levels__anonymized-real-exemplar-2025-04__gadget.json": "inventory_levels/update",
    "shopify__order__rest-fixture__shopify_python_api.json": "orders/updated",
}


def vectors():
    return json.loads((FIXTURES / "signature_vectors.json").read_text())


def secret():
    return vectors()["secrets"]["shopify"]


def body_of(name: str) -> bytes:
    data = json.loads((FIXTURES / name).read_text())
    if "response" in data and "access_scopes" in data:
        data = data["response"]
    if "order" in data and len(data) == 1:
        data = data["order"]
    return json.dumps(data).encode()


def request(body: bytes, topic: str, sig: str | None = None, prefix: str = "X-", delivery="wh-1", **extra):
    headers = {f"{prefix}Shopify-Topic": topic, f"{prefix}Shopify-Webhook-Id": delivery,
               f"{prefix}Shopify-Shop-Domain": "demo.myshopify.com", **extra}
    if sig is not False:
        headers[f"{prefix}Shopify-Hmac-Sha256"] = sig or base64.b64encode(hmac_sha256(secret(), body)).decode()
    return WebhookRequest(source="shopify", headers={k.lower(): v for k, v in headers.items()}, body=body,
                          received_at=NOW)


def source():
    return Shopify(ShopifySettings(shop_url="https://demo.example"))


def test_known_answer_vector():
    kat = vectors()["kat"]["shopify X-Shopify-Hmac-Sha256 over b'{\"id\":1}'"]
    req = request(b'{"id":1}', "orders/create", sig=kat)
    assert source().verify(req, [secret()]) is None
    with pytest.raises(SignatureError):
        source().verify(request(b'{"id":2}', "orders/create", sig=kat), [secret()])


@pytest.mark.parametrize("name", sorted(TOPICS))
def test_precomputed_signatures_over_the_stored_bytes_verify(name):
    raw = (FIXTURES / name).read_bytes()
    sig = vectors()["files"][name]["X-Shopify-Hmac-Sha256"]
    source().verify(request(raw, TOPICS[name], sig=sig), [secret()])
    with pytest.raises(SignatureError, match="does not match"):
        source().verify(request(raw + b" ", TOPICS[name], sig=sig), [secret()])


@pytest.mark.parametrize("name", sorted(TOPICS))
def test_every_fixture_maps_to_valid_canonical_events(name):
    body = body_of(name)
    req = request(body, TOPICS[name])
    src = source()
    src.verify(req, ["old-secret", secret()])  # rotation: any active secret
    assert src.delivery(req).delivery_id == "wh-1"
    out = src.to_output(req)
    raw = json.loads(body)
    if TOPICS[name] == "inventory_levels/update" and raw.get("available") is None:
        assert out.catalog == [] and out.events == []  # nothing to count
    else:
        assert out.events or out.catalog
    for event in out.events:
        [call] = parse_call(event["type"], event, NOW).calls
        assert call.messageId.startswith("shopify:wh-1:")


def test_order_ids_stay_exact_and_products_map():
    out = source().to_output(request(body_of(
        "shopify__orders_create__docs-sample-2026-04__gadget-metadata.json"), "orders/create"))
    [order] = out.events
    assert order["event"] == "Order Completed"
    assert order["properties"]["order_id"] == "820982911946154508"  # from the gid, not the rounded id
    body = json.loads(body_of("shopify__orders_create__docs-sample-2026-04__gadget-metadata.json"))
    assert order["properties"]["total"] == float(body["current_total_price"])  # after edits
    assert order["properties"]["currency"] == "USD"
    assert order["properties"]["products"][0]["quantity"] >= 1
    ext = {e["type"]: e["id"] for e in order["context"]["externalIds"]}
    assert ext["shopify_customer_id"] == "115310627314723954" and ext["email"] == "jon@example.com"


def test_checkout_carries_the_cart_for_abandoned_cart_journeys():
    out = source().to_output(request(body_of(
        "shopify__checkouts_create__docs-sample-2026-04__gadget-metadata.json"), "checkouts/create"))
    [checkout] = out.events
    assert checkout["event"] == "Checkout Started" and checkout["properties"]["checkout_id"] == "123123123"
    assert "recover" in checkout["properties"]["checkout_url"]
    assert checkout["properties"]["products"][0]["name"] == "IPod Nano - 8GB"


def test_customers_become_identify_calls_with_consent():
    body = json.loads(body_of("shopify__customers_create__docs-sample-2026-04__gadget-metadata.json"))
    body["email_marketing_consent"] = {"state": "unsubscribed", "opt_in_level": "single_opt_in"}
    out = source().to_output(request(json.dumps(body).encode(), "customers/marketing_consent_update"))
    [identify] = out.events
    assert identify["type"] == "identify" and identify["traits"]["email"] == "bob@biller.com"
    assert identify["traits"]["consent"] == {"email": "unsubscribed"}
    assert identify["anonymousId"] == "shopify:customer:706405506930370084"


def test_products_become_catalog_items_per_variant():
    out = source().to_output(request(body_of(
        "shopify__products_update__docs-sample-2026-04__gadget-metadata.json"), "products/update"))
    first = out.catalog[0]
    assert first.product_id == "788032119674292922" and first.variant_id == "642667041472713922"
    assert first.price == 19.99 and first.stock == 75 and "Shirts" in first.categories
    assert first.url == "https://demo.example/products/example-t-shirt"


def test_headers_without_the_x_prefix_and_missing_ones():
    body = b'{"id": 5}'
    src = source()
    req = request(body, "orders/create", prefix="")
    src.verify(req, [secret()])
    assert src.delivery(req).topic == "orders/create"
    with pytest.raises(SignatureError, match="missing X-Shopify-Hmac-Sha256"):
        src.verify(request(body, "orders/create", sig=False), [secret()])
    with pytest.raises(SignatureError, match="does not match"):
        src.verify(request(body, "orders/create"), ["wrong"])
    with pytest.raises(ValueError, match="X-Shopify-Webhook-Id"):
        src.delivery(request(body, "orders/create", delivery=""))


def test_exact_id_prefers_the_gid():
    assert exact_id({"id": 820982911946154500, "admin_graphql_api_id": "gid://shopify/Order/820982911946154508"}) \
        == "820982911946154508"
    assert exact_id({"id": 9007199254740993}) == "9007199254740993"
