"""Stripe webhooks as canonical events.

``Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`` where each v1 is
HMAC-SHA256(endpoint secret, "<t>.<raw body>") in hex; several v1 appear while Stripe
rolls a secret, and we may hold several secrets too: any pair that matches is enough.
The timestamp must lie within the tolerance (300 s by default) of the time the request
arrived, on the core's clock, which defeats replays. The event id (``evt_...``) is the
delivery id: Stripe retries with the same one.

Amounts are integers in the currency's smallest unit; zero-decimal currencies (JPY,
KRW, ...) are not divided by 100.

| type | canonical event |
|---|---|
| checkout.session.completed | Order Completed (order_id = the session id, or metadata.order_id) |
| charge.succeeded | Payment Succeeded |
| charge.refunded | Order Refunded |
| customer.created, customer.updated | identify |
| invoice.payment_succeeded | Order Completed (order_id = the invoice id; subscription renewals count as orders) |
| customer.subscription.deleted | Subscription Cancelled |
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from pydantic import Field

from chalicelib.plugin_api import (
    Delivery,
    EventSource,
    PluginSettings,
    SignatureError,
    SourceOutput,
    WebhookRequest,
    hmac_sha256,
    hookimpl,
)

ZERO_DECIMAL = {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf",
                "xof", "xpf"}


class StripeSettings(PluginSettings):
    tolerance_seconds: int = Field(300, ge=1, le=3600)


def amount(value: Any, currency: Any) -> float | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    return float(value) if str(currency).lower() in ZERO_DECIMAL else round(value / 100, 2)


class Stripe(EventSource):
    name = "stripe"
    title = "Stripe"
    Settings = StripeSettings
    replay_tolerance_seconds = 300

    def verify(self, request: WebhookRequest, secrets: list[str]) -> None:
        header = request.header("stripe-signature")
        if not header:
            raise SignatureError("missing Stripe-Signature header")
        timestamp, signatures = None, []
        for part in header.split(","):
            key, _, value = part.strip().partition("=")
            if key == "t" and value.isdigit():
                timestamp = int(value)
            elif key == "v1":
                try:
                    signatures.append(bytes.fromhex(value))
                except ValueError:
                    continue
        if timestamp is None or not signatures:
            raise SignatureError("malformed Stripe-Signature header")
        tolerance = self.settings.tolerance_seconds  # type: ignore[attr-defined]
        if abs(request.received_at.timestamp() - timestamp) > tolerance:
            raise SignatureError(f"timestamp outside the {tolerance} s tolerance")
        payload = f"{timestamp}.".encode() + request.body
        found = False
        for secret in secrets:
            expected = hmac_sha256(secret, payload)
            for given in signatures:
                found |= hmac.compare_digest(expected, given)
        if not found:
            raise SignatureError("no signature matches")

    def delivery(self, request: WebhookRequest) -> Delivery:
        try:
            event = json.loads(request.body)
        except json.JSONDecodeError as exc:
            raise ValueError(f"body is not JSON: {exc}") from exc
        if not isinstance(event, dict) or not event.get("id") or not event.get("type"):
            raise ValueError("a Stripe event needs id and type")
        return Delivery(delivery_id=str(event["id"]), topic=str(event["type"]))

    def to_output(self, request: WebhookRequest) -> SourceOutput:
        event = json.loads(request.body)
        kind = event.get("type")
        obj = (event.get("data") or {}).get("object") or {}
        context = {"source": {"name": "stripe", "type": kind, "livemode": event.get("livemode")}}
        when = event.get("created")
        out = SourceOutput()
        mapped: dict[str, Any] | None = None
        if kind == "checkout.session.completed":
            details = obj.get("customer_details") or {}
            email = obj.get("customer_email") or details.get("email")
            mapped = self._track("Order Completed", obj.get("customer"), email, {
                "order_id": (obj.get("metadata") or {}).get("order_id") or obj.get("id"),
                "checkout_id": obj.get("id"), "total": amount(obj.get("amount_total"), obj.get("currency")),
                "revenue": amount(obj.get("amount_subtotal"), obj.get("currency")),
                "currency": str(obj.get("currency") or "").upper() or None,
                "payment_status": obj.get("payment_status"),
            }, context, details.get("phone"))
        elif kind in ("charge.succeeded", "charge.refunded"):
            billing = obj.get("billing_details") or {}
            email = obj.get("receipt_email") or billing.get("email")
            refunded = kind == "charge.refunded"
            mapped = self._track("Order Refunded" if refunded else "Payment Succeeded", obj.get("customer"), email, {
                "order_id": (obj.get("metadata") or {}).get("order_id") or obj.get("payment_intent") or obj.get("id"),
                "charge_id": obj.get("id"),
                "total": amount(obj.get("amount_refunded") if refunded else obj.get("amount"), obj.get("currency")),
                "currency": str(obj.get("currency") or "").upper() or None,
            }, context, billing.get("phone"))
        elif kind in ("customer.created", "customer.updated"):
            email = obj.get("email")
            traits = {"email": email.strip().lower() if isinstance(email, str) else None, "name": obj.get("name"),
                      "phone": obj.get("phone")}
            ids = self._ids(obj.get("id"), traits["email"], obj.get("phone"))
            mapped = {"type": "identify", "anonymousId": f"stripe:customer:{obj.get('id')}",
                      "traits": {k: v for k, v in traits.items() if v}, "context": {**context, "externalIds": ids}}
        elif kind == "invoice.payment_succeeded":
            mapped = self._track("Order Completed", obj.get("customer"), obj.get("customer_email"), {
                "order_id": obj.get("id"), "total": amount(obj.get("amount_paid"), obj.get("currency")),
                "currency": str(obj.get("currency") or "").upper() or None,
                "subscription_id": obj.get("subscription"), "billing_reason": obj.get("billing_reason"),
            }, context, obj.get("customer_phone"))
        elif kind == "customer.subscription.deleted":
            mapped = self._track("Subscription Cancelled", obj.get("customer"), None, {
                "subscription_id": obj.get("id"), "status": obj.get("status"),
                "cancellation_reason": (obj.get("cancellation_details") or {}).get("reason"),
            }, context, None)
        if mapped is not None:
            mapped["messageId"] = f"stripe:{event.get('id')}:0"
            if isinstance(when, int):
                from datetime import UTC, datetime

                mapped["timestamp"] = datetime.fromtimestamp(when, UTC).isoformat()
            out.events.append(mapped)
        return out

    @staticmethod
    def _ids(customer: Any, email: Any, phone: Any) -> list[dict[str, str]]:
        ids = []
        if isinstance(customer, str) and customer:
            ids.append({"id": customer, "type": "stripe_customer_id", "collection": "users"})
        if isinstance(email, str) and "@" in email:
            ids.append({"id": email.strip().lower(), "type": "email", "collection": "users"})
        if isinstance(phone, str) and phone:
            ids.append({"id": phone, "type": "phone", "collection": "users"})
        return ids

    def _track(self, name: str, customer: Any, email: Any, props: dict[str, Any], context: dict[str, Any],
               phone: Any) -> dict[str, Any]:
        anonymous = f"stripe:customer:{customer}" if isinstance(customer, str) and customer else (
            f"stripe:email:{email.strip().lower()}" if isinstance(email, str) and email else
            f"stripe:{props.get('order_id') or props.get('subscription_id')}")
        event: dict[str, Any] = {
            "type": "track", "event": name, "anonymousId": anonymous,
            "properties": {k: v for k, v in props.items() if v is not None},
            "context": {**context, "externalIds": self._ids(customer, email, phone)},
        }
        if isinstance(email, str) and "@" in email:
            event["context"]["traits"] = {"email": email.strip().lower()}
        return event


@hookimpl
def register_sources(register):  # type: ignore[no-untyped-def]
    """Register the Stripe source."""
    register(Stripe)
