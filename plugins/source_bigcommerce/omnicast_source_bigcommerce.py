"""BigCommerce webhooks as canonical events.

Verification follows Standard Webhooks (``webhook-id``, ``webhook-timestamp``,
``webhook-signature: v1,<base64> [v1,<base64> ...]`` over ``<id>.<timestamp>.<body>``),
keyed by the app's client secret, with a 300 s tolerance on the core's clock.

Payloads are light (scope, store_id, data{type, id}); the worker fetches the resource
through the store's API (``X-Auth-Token``). A resource deleted meanwhile (404) yields no
event; 429 and 5xx raise :class:`StoreApiRetryable` so the queue delivers it again later;
401/403 raise :class:`StoreApiError` (a configuration problem: it ends in the dead-letter
queue with the reason, after the retries).

| scope | canonical event |
|---|---|
| store/order/created | Order Completed, or Order Updated while unpaid (pending, awaiting payment, declined) |
| store/order/statusUpdated | by new status: Order Fulfilled (shipped), Refunded, Cancelled, Completed, Updated |
| store/cart/abandoned | Checkout Started (checkout_id = the cart id) |
| store/cart/created, updated | Cart Updated |
| store/customer/created, updated | identify |
| store/product/inventory/updated, store/product/inventory/order/updated | catalog stock |
"""

from __future__ import annotations

import base64
import binascii
import json
import urllib.error
import urllib.request
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from pydantic import Field, SecretStr

from chalicelib.plugin_api import (
    CatalogItem,
    Delivery,
    EventSource,
    PluginSettings,
    SignatureError,
    SourceOutput,
    WebhookRequest,
    hookimpl,
    matches_any,
    money,
    standard_webhooks_signature,
)

PAID = {2, 3, 8, 9, 10, 11}  # shipped, partially shipped, awaiting pickup/shipment, completed, awaiting fulfillment
UNPAID = {0, 1, 6, 7, 12}


class BigCommerceSettings(PluginSettings):
    store_hash: str = ""
    access_token: SecretStr = SecretStr("")
    api_base_url: str = "https://api.bigcommerce.com"
    store_url: str | None = None  # for cart recovery links
    timeout: float = Field(10.0, gt=0)
    tolerance_seconds: int = Field(300, ge=1, le=3600)


class StoreApiError(Exception):
    """The store API refused us (credentials, scope): fix the configuration."""


class StoreApiRetryable(StoreApiError):
    """Rate limited or a server error: try again later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def when(value: Any) -> str | None:
    if isinstance(value, int):
        return datetime.fromtimestamp(value, UTC).isoformat()
    if isinstance(value, str) and value:
        try:
            return parsedate_to_datetime(value).isoformat()  # the v2 API's RFC 2822 dates
        except (TypeError, ValueError):
            return value
    return None


class BigCommerce(EventSource):
    name = "bigcommerce"
    title = "BigCommerce"
    Settings = BigCommerceSettings
    replay_tolerance_seconds = 300

    # ------------------------------------------------------------------ HTTP path
    def verify(self, request: WebhookRequest, secrets: list[str]) -> None:
        msg_id = request.header("webhook-id")
        stamp = request.header("webhook-timestamp")
        header = request.header("webhook-signature")
        if not msg_id or not stamp or not header:
            raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature header")
        if not stamp.isdigit():
            raise SignatureError("malformed webhook-timestamp")
        tolerance = self.settings.tolerance_seconds  # type: ignore[attr-defined]
        if abs(request.received_at.timestamp() - int(stamp)) > tolerance:
            raise SignatureError(f"timestamp outside the {tolerance} s tolerance")
        given = []
        for part in header.split():
            version, _, value = part.partition(",")
            if version == "v1":
                try:
                    given.append(base64.b64decode(value, validate=True))
                except (binascii.Error, ValueError):
                    continue
        if not given:
            raise SignatureError("malformed webhook-signature header")
        expected = [base64.b64decode(standard_webhooks_signature(s, msg_id, int(stamp), request.body)[3:])
                    for s in secrets]
        if not matches_any(expected, given):
            raise SignatureError("signature does not match")

    def delivery(self, request: WebhookRequest) -> Delivery:
        try:
            body = json.loads(request.body)
        except json.JSONDecodeError as exc:
            raise ValueError(f"body is not JSON: {exc}") from exc
        if not isinstance(body, dict) or not body.get("scope"):
            raise ValueError("a BigCommerce webhook needs a scope")
        return Delivery(delivery_id=str(request.header("webhook-id")), topic=str(body["scope"]),
                        event_id=str(body["hash"]) if body.get("hash") else None)

    # ------------------------------------------------------------------ store API
    def _get(self, path: str) -> Any:
        s: BigCommerceSettings = self.settings  # type: ignore[assignment]
        url = f"{s.api_base_url.rstrip('/')}/stores/{s.store_hash}{path}"
        req = urllib.request.Request(url, headers={  # noqa: S310 - the configured store API
            "X-Auth-Token": s.access_token.get_secret_value(), "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=s.timeout) as resp:  # noqa: S310
                raw = resp.read()
                return json.loads(raw) if raw.strip() else None
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            if exc.code == 429 or exc.code >= 500:
                retry = exc.headers.get("Retry-After") or ""
                seconds = float(retry) if retry.isdigit() else None
                raise StoreApiRetryable(f"store API {exc.code} for {path}", seconds) from None
            raise StoreApiError(f"store API refused {path}: HTTP {exc.code}") from None
        except (urllib.error.URLError, TimeoutError) as exc:
            raise StoreApiRetryable(f"store API unreachable for {path}: {type(exc).__name__}") from None

    # ------------------------------------------------------------------ mapping
    def to_output(self, request: WebhookRequest) -> SourceOutput:
        body = json.loads(request.body)
        scope: str = body.get("scope", "")
        data = body.get("data") or {}
        context = {"source": {"name": "bigcommerce", "scope": scope, "store_id": body.get("store_id")}}
        out = SourceOutput()
        if scope.startswith("store/order/"):
            event = self._order(scope, data, context)
            if event:
                out.events.append(event)
        elif scope.startswith("store/cart/") and scope != "store/cart/deleted":
            event = self._cart(scope, data, context)
            if event:
                out.events.append(event)
        elif scope in ("store/customer/created", "store/customer/updated"):
            event = self._customer(data, context)
            if event:
                out.events.append(event)
        elif scope.startswith("store/product/inventory/"):
            inventory = data.get("inventory") or {}
            if inventory.get("method") == "absolute" and isinstance(inventory.get("value"), int):
                variant = inventory.get("variant_id")
                out.catalog.append(CatalogItem(product_id=str(inventory.get("product_id") or data.get("id")),
                                               variant_id=str(variant) if variant else None,
                                               stock=inventory["value"]))
        for i, event in enumerate(out.events):
            event["messageId"] = f"bigcommerce:{request.header('webhook-id')}:{i}"
            event.setdefault("timestamp", when(body.get("created_at")))
        return out

    @staticmethod
    def _ids(customer_id: Any, email: Any) -> list[dict[str, str]]:
        ids = []
        if customer_id not in (None, 0, "0", ""):
            ids.append({"id": str(customer_id), "type": "bigcommerce_customer_id", "collection": "users"})
        if isinstance(email, str) and "@" in email:
            ids.append({"id": email.strip().lower(), "type": "email", "collection": "users"})
        return ids

    def _order(self, scope: str, data: dict[str, Any], context: dict[str, Any]) -> dict[str, Any] | None:
        order_id = data.get("id")
        order = self._get(f"/v2/orders/{order_id}")
        if not order:
            return None
        status = int(order.get("status_id") or 0)
        if scope == "store/order/statusUpdated":
            status = int((data.get("status") or {}).get("new_status_id", status))
            name = {2: "Order Fulfilled", 3: "Order Fulfilled", 4: "Order Refunded", 14: "Order Refunded",
                    5: "Order Cancelled"}.get(status, "Order Completed" if status in PAID else "Order Updated")
        elif scope == "store/order/created":
            name = "Order Updated" if status in UNPAID else "Order Completed"
        else:
            name = "Order Updated"
        lines = self._get(f"/v2/orders/{order_id}/products") or []
        billing = order.get("billing_address") or {}
        email = billing.get("email")
        props = {
            "order_id": str(order_id), "status": order.get("status"), "checkout_id": order.get("cart_id"),
            "total": money(order.get("total_inc_tax")), "revenue": money(order.get("subtotal_ex_tax")),
            "tax": money(order.get("total_tax")), "shipping": money(order.get("shipping_cost_inc_tax")),
            "discount": money(order.get("discount_amount")), "currency": order.get("currency_code"),
            "products": [{k: v for k, v in {
                "product_id": str(li.get("product_id")), "variant": str(li["variant_id"]) if li.get("variant_id")
                else None, "sku": li.get("sku") or None, "name": li.get("name"),
                "price": money(li.get("price_inc_tax")), "quantity": li.get("quantity")}.items() if v is not None}
                for li in lines],
        }
        customer_id = order.get("customer_id")
        event: dict[str, Any] = {
            "type": "track", "event": name,
            "anonymousId": f"bigcommerce:customer:{customer_id}" if customer_id else f"bigcommerce:order:{order_id}",
            "properties": {k: v for k, v in props.items() if v is not None},
            "context": {**context, "externalIds": self._ids(customer_id, email)},
        }
        if isinstance(email, str) and "@" in email:
            event["context"]["traits"] = {"email": email.strip().lower()}
        stamp = when(order.get("date_modified") or order.get("date_created"))
        if stamp:
            event["timestamp"] = stamp
        return event

    def _cart(self, scope: str, data: dict[str, Any], context: dict[str, Any]) -> dict[str, Any] | None:
        cart = (self._get(f"/v3/carts/{data.get('id')}") or {}).get("data")
        if not cart:
            return None
        items = (cart.get("line_items") or {})
        lines = (items.get("physical_items") or []) + (items.get("digital_items") or [])
        settings: BigCommerceSettings = self.settings  # type: ignore[assignment]
        recover = None
        if settings.store_url and data.get("token"):
            recover = f"{settings.store_url.rstrip('/')}/cart.php?action=load&id={cart['id']}&token={data['token']}"
        props = {
            "checkout_id": cart.get("id"), "cart_id": cart.get("id"), "checkout_url": recover,
            "total": money(cart.get("cart_amount")), "currency": (cart.get("currency") or {}).get("code"),
            "products": [{k: v for k, v in {
                "product_id": str(li.get("product_id")), "variant": str(li.get("variant_id")),
                "sku": li.get("sku") or None, "name": li.get("name"), "price": money(li.get("sale_price")),
                "quantity": li.get("quantity"), "url": li.get("url")}.items() if v is not None} for li in lines],
        }
        customer_id, email = cart.get("customer_id"), cart.get("email")
        event: dict[str, Any] = {
            "type": "track", "event": "Checkout Started" if scope == "store/cart/abandoned" else "Cart Updated",
            "anonymousId": f"bigcommerce:customer:{customer_id}" if customer_id else f"bigcommerce:cart:{cart['id']}",
            "properties": {k: v for k, v in props.items() if v is not None},
            "context": {**context, "externalIds": self._ids(customer_id, email)},
        }
        if isinstance(email, str) and "@" in email:
            event["context"]["traits"] = {"email": email.strip().lower()}
        return event

    def _customer(self, data: dict[str, Any], context: dict[str, Any]) -> dict[str, Any] | None:
        found = (self._get(f"/v3/customers?id:in={data.get('id')}") or {}).get("data") or []
        if not found:
            return None
        c = found[0]
        email = (c.get("email") or "").strip().lower() or None
        traits = {"email": email, "first_name": c.get("first_name") or None, "last_name": c.get("last_name") or None,
                  "phone": c.get("phone") or None, "created_at": when(c.get("date_created"))}
        return {"type": "identify", "anonymousId": f"bigcommerce:customer:{c.get('id')}",
                "traits": {k: v for k, v in traits.items() if v is not None},
                "context": {**context, "externalIds": self._ids(c.get("id"), email)},
                "timestamp": when(c.get("date_modified") or c.get("date_created"))}


@hookimpl
def register_sources(register):  # type: ignore[no-untyped-def]
    """Register the BigCommerce source."""
    register(BigCommerce)
