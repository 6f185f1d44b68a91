"""Stripe source against the real events in ../shared/fixtures/webhooks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from omnicast_source_stripe import Stripe, StripeSettings, amount

from chalicelib.events import parse_call
from chalicelib.plugin_api import SignatureError, WebhookRequest, hmac_sha256

FIXTURES = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "webhooks"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"shared fixtures not found at {FIXTURES}")
FILES = sorted(p.name for p in FIXTURES.glob("stripe__*.json")) if FIXTURES.is_dir() else []


def vectors():
    return json.loads((FIXTURES / "signature_vectors.json").read_text())


def secret():
    return vectors()["secrets"]["stripe"]


def sign(body: bytes, t: int, secret_: str | None = None) -> str:
    return f"t={t},v1={hmac_sha256(secret_ or secret(), f'{t}.'.encode() + body).hex()}"


def request(body: bytes, header: str | None, at: datetime):
    headers = {"stripe-signature": header} if header is not None else {}
    return WebhookRequest(source="stripe", headers=headers, body=body, received_at=at)


def src():
    return Stripe(StripeSettings())


VECTOR_TIME = datetime.fromtimestamp(1700000000, UTC)
NOW = datetime(2026, 3, 2, 10, tzinfo=UTC)


def test_known_answer_vector_needs_a_pinned_clock():
    kat = vectors()["kat"]["stripe Stripe-Signature over b'{\"id\":1}'"]
    src().verify(request(b'{"id":1}', kat, VECTOR_TIME + timedelta(seconds=10)), [secret()])
    with pytest.raises(SignatureError, match="timestamp outside the 300 s tolerance"):
        src().verify(request(b'{"id":1}', kat, NOW), [secret()])  # a correct verifier refuses a 2023 signature


@pytest.mark.parametrize("name", FILES)
def test_fixtures_verify_map_and_validate(name):
    raw = (FIXTURES / name).read_bytes()
    header = vectors()["files"][name]["Stripe-Signature"]
    src().verify(request(raw, header, VECTOR_TIME), [secret()])
    with pytest.raises(SignatureError, match="no signature matches"):
        src().verify(request(raw + b"\n", header, VECTOR_TIME), [secret()])
    fresh = sign(raw, int(NOW.timestamp()))
    req = request(raw, fresh, NOW + timedelta(seconds=30))
    src().verify(req, ["whsec_old", secret()])
    delivery = src().delivery(req)
    assert delivery.topic == vectors()["files"][name]["event_type"]
    out = src().to_output(req)
    assert len(out.events) == 1
    for event in out.events:
        parse_call(event["type"], event, NOW)


def test_checkout_session_is_an_order_with_a_converted_amount():
    raw = (FIXTURES / "stripe__checkout.session.completed__stripe-ruby-mock.json").read_bytes()
    [order] = src().to_output(request(raw, None, NOW)).events
    assert order["event"] == "Order Completed" and order["properties"]["total"] == 30.0
    assert order["properties"]["currency"] == "USD"
    assert {"id": "cus_00000000000000", "type": "stripe_customer_id", "collection": "users"} in \
        order["context"]["externalIds"]


def test_several_signatures_and_rejections():
    body = b'{"id": "evt_1", "type": "customer.created", "data": {"object": {"id": "cus_1"}}}'
    t = int(NOW.timestamp())
    both = sign(body, t, "whsec_other") + "," + sign(body, t).split(",")[1]
    src().verify(request(body, both, NOW), [secret()])
    for header, reason in [(None, "missing Stripe-Signature"), ("t=abc", "malformed"), ("v1=00", "malformed"),
                           (sign(body, t - 301), "tolerance"), (sign(body, t + 301), "tolerance"),
                           (sign(body, t, "whsec_wrong"), "no signature matches")]:
        with pytest.raises(SignatureError, match=reason):
            src().verify(request(body, header, NOW), [secret()])


def test_zero_decimal_currencies():
    assert amount(1500, "jpy") == 1500.0 and amount(1500, "usd") == 15.0 and amount("x", "usd") is None
