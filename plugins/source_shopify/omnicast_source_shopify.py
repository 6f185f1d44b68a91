"""Shopify webhooks as canonical events.

Verification: ``X-Shopify-Hmac-Sha256`` = base64(HMAC-SHA256(app secret, raw body)),
checked against every active secret in constant time; the headers also arrive without
the ``X-`` prefix. ``X-Shopify-Webhook-Id`` identifies a delivery (retries repeat it),
``X-Shopify-Event-Id`` one merchant action (shared by its deliveries).

Ids: Shopify ids exceed 2**53. The exact id is taken from ``admin_graphql_api_id``
(``gid://shopify/Order/820982911946154508``) when present, because payloads that passed
through JavaScript carry a rounded numeric ``id``; otherwise the JSON integer, parsed
exactly by Python.

| topic | canonical event |
|---|---|
| orders/create | Order Completed |
| orders/paid | Order Paid |
| orders/updated | Order Updated |
| orders/fulfilled | Order Fulfilled |
| orders/cancelled | Order Cancelled |
| refunds/create | Order Refunded |
| fulfillment_events/create (status delivered) | Order Delivered |
| checkouts/create | Checkout Started (checkout_id = checkout token) |
| checkouts/update | Checkout Updated (nothing once completed) |
| customers/create, customers/update | identify |
| customers/marketing_consent_update | identify (consent traits) |
| products/create, products/update | catalog: one item per variant |
| products/delete | catalog: status archived |
| inventory_levels/update | catalog: stock of the variant with that inventory item |
"""

from __future__ import annotations

import json
import re
from typing import Any

from chalicelib.plugin_api import (
    CatalogItem,
    Delivery,
    EventSource,
    PluginSettings,
    SourceOutput,
    WebhookRequest,
    hookimpl,
    money,
    verify_base64_hmac,
)

GID = re.compile(r"^gid://shopify/[A-Za-z]+/(\d+)")
ORDER_EVENTS = {
    "orders/create": "Order Completed",
    "orders/paid": "Order Paid",
    "orders/updated": "Order Updated",
    "orders/fulfilled": "Order Fulfilled",
    "orders/cancelled": "Order Cancelled",
}


class ShopifySettings(PluginSettings):
    shop_url: str | None = None  # https://my-shop.example, for product links (handle → /products/<handle>)


def exact_id(obj: dict[str, Any] | None, key: str = "id") -> str | None:
    """The exact id: from the GraphQL gid when present (the numeric id may have been rounded)."""
    if not isinstance(obj, dict):
        return None
    gid = obj.get("admin_graphql_api_id")
    if isinstance(gid, str):
        m = GID.match(gid)
        if m:
            return m.group(1)
    value = obj.get(key)
    return None if value in (None, "") else str(value)


def email_of(*candidates: Any) -> str | None:
    for c in candidates:
        if isinstance(c, str) and "@" in c:
            return c.strip().lower()
    return None


class Shopify(EventSource):
    name = "shopify"
    title = "Shopify"
    Settings = ShopifySettings

    # ------------------------------------------------------------------ HTTP path
    def verify(self, request: WebhookRequest, secrets: list[str]) -> None:
        verify_base64_hmac(request, secrets, "X-Shopify-Hmac-Sha256", "Shopify-Hmac-Sha256")

    def delivery(self, request: WebhookRequest) -> Delivery:
        topic = request.header("x-shopify-topic", "shopify-topic")
        if not topic:
            raise ValueError("missing X-Shopify-Topic header")
        webhook_id = request.header("x-shopify-webhook-id", "shopify-webhook-id")
        if not webhook_id:
            raise ValueError("missing X-Shopify-Webhook-Id header")
        return Delivery(delivery_id=webhook_id, topic=topic,
                        event_id=request.header("x-shopify-event-id", "shopify-event-id"))

    # ------------------------------------------------------------------ mapping
    def to_output(self, request: WebhookRequest) -> SourceOutput:
        topic = request.header("x-shopify-topic", "shopify-topic") or ""
        body = json.loads(request.body)
        if isinstance(body, dict) and "response" in body and "name" in body and isinstance(body["response"], dict):
            body = body["response"]  # a documentation sample wrapped in its metadata
        delivery = request.header("x-shopify-webhook-id", "shopify-webhook-id") or "unknown"
        context = {"shop_domain": request.header("x-shopify-shop-domain", "shopify-shop-domain"),
                   "source": {"name": "shopify", "topic": topic}}
        output = SourceOutput()
        if topic in ORDER_EVENTS:
            output.events.append(self._order(ORDER_EVENTS[topic], body, context))
        elif topic == "refunds/create":
            output.events.append(self._refund(body, context))
        elif topic == "fulfillment_events/create":
            if body.get("status") == "delivered":
                output.events.append(self._track("Order Delivered", None, None, body.get("happened_at"),
                                                 {"order_id": str(body.get("order_id")),
                                                  "fulfillment_id": str(body.get("fulfillment_id"))}, context,
                                                 anonymous=f"shopify:order:{body.get('order_id')}"))
        elif topic in ("checkouts/create", "checkouts/update"):
            if topic == "checkouts/update" and body.get("completed_at"):
                return output  # the order webhook tells the rest
            name = "Checkout Started" if topic == "checkouts/create" else "Checkout Updated"
            output.events.append(self._checkout(name, body, context))
        elif topic in ("customers/create", "customers/update", "customers/marketing_consent_update"):
            output.events.append(self._customer(body, context))
        elif topic in ("products/create", "products/update"):
            output.catalog.extend(self._product(body))
        elif topic == "products/delete":
            output.catalog.append(CatalogItem(product_id=exact_id(body) or "", status="archived"))
        elif topic == "inventory_levels/update":
            iid = exact_id({"id": body.get("inventory_item_id")})
            if iid is not None and body.get("available") is not None:
                output.catalog.append(CatalogItem(product_id="", inventory_item_id=iid, stock=int(body["available"])))
        for i, event in enumerate(output.events):
            event["messageId"] = f"shopify:{delivery}:{i}"
        return output

    def _ids(self, customer: dict[str, Any] | None, email: str | None, phone: Any = None) -> list[dict[str, str]]:
        ids = []
        cid = exact_id(customer)
        if cid:
            ids.append({"id": cid, "type": "shopify_customer_id", "collection": "users"})
        if email:
            ids.append({"id": email, "type": "email", "collection": "users"})
        if isinstance(phone, str) and phone:
            ids.append({"id": phone, "type": "phone", "collection": "users"})
        return ids

    def _track(self, name: str, customer: dict[str, Any] | None, email: str | None, when: Any,
               properties: dict[str, Any], context: dict[str, Any], anonymous: str,
               phone: Any = None) -> dict[str, Any]:
        cid = exact_id(customer)
        event: dict[str, Any] = {
            "type": "track", "event": name,
            "anonymousId": f"shopify:customer:{cid}" if cid else anonymous,
            "properties": {k: v for k, v in properties.items() if v is not None},
            "context": {**context, "externalIds": self._ids(customer, email, phone)},
        }
        if email:
            event["context"]["traits"] = {"email": email}
        if isinstance(when, str) and when:
            event["timestamp"] = when
        return event

    def _products(self, lines: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        out = []
        for line in lines or []:
            out.append({k: v for k, v in {
                "product_id": exact_id({"id": line.get("product_id")}),
                "variant": exact_id({"id": line.get("variant_id")}),
                "sku": line.get("sku"), "name": line.get("title") or line.get("name"),
                "price": money(line.get("price")), "quantity": line.get("quantity"),
            }.items() if v is not None})
        return out

    def _order(self, name: str, order: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        customer = order.get("customer")
        email = email_of(order.get("email"), order.get("contact_email"), (customer or {}).get("email"))
        order_id = exact_id(order)
        discounts = order.get("discount_codes") or []
        props = {
            "order_id": order_id, "checkout_id": order.get("checkout_token") or order.get("cart_token"),
            "order_number": order.get("order_number") or order.get("name"),
            "total": money(order.get("current_total_price") or order.get("total_price")),
            "revenue": money(order.get("subtotal_price")), "tax": money(order.get("total_tax")),
            "discount": money(order.get("total_discounts")),
            "shipping": money(((order.get("total_shipping_price_set") or {}).get("shop_money") or {}).get("amount")),
            "coupon": discounts[0].get("code") if discounts and isinstance(discounts[0], dict) else None,
            "currency": order.get("currency"), "financial_status": order.get("financial_status"),
            "fulfillment_status": order.get("fulfillment_status"), "cancel_reason": order.get("cancel_reason"),
            "products": self._products(order.get("line_items")),
        }
        when = order.get("processed_at") or order.get("created_at") if name == "Order Completed" else (
            order.get("cancelled_at") if name == "Order Cancelled" else order.get("updated_at"))
        return self._track(name, customer, email, when, props, context, f"shopify:order:{order_id}",
                           phone=order.get("phone"))

    def _refund(self, refund: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        lines = [r.get("line_item") or {} for r in refund.get("refund_line_items") or []]
        amount = sum(money(t.get("amount")) or 0 for t in refund.get("transactions") or []
                     if t.get("kind") == "refund")
        order_id = exact_id({"id": refund.get("order_id")})
        props = {"order_id": order_id, "refund_id": exact_id(refund), "total": round(amount, 2),
                 "products": self._products(lines)}
        return self._track("Order Refunded", None, None, refund.get("created_at"), props, context,
                           f"shopify:order:{order_id}")

    def _checkout(self, name: str, checkout: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        customer = checkout.get("customer")
        email = email_of(checkout.get("email"), (customer or {}).get("email"))
        token = checkout.get("token") or checkout.get("cart_token")
        props = {
            "checkout_id": token, "cart_id": checkout.get("cart_token"),
            "checkout_url": checkout.get("abandoned_checkout_url"),
            "total": money(checkout.get("total_price")), "revenue": money(checkout.get("subtotal_price")),
            "tax": money(checkout.get("total_tax")), "discount": money(checkout.get("total_discounts")),
            "currency": checkout.get("currency"), "products": self._products(checkout.get("line_items")),
        }
        event = self._track(name, customer, email, checkout.get("updated_at") or checkout.get("created_at"),
                            props, context, f"shopify:checkout:{token}", phone=checkout.get("phone"))
        if checkout.get("buyer_accepts_marketing") is not None:
            event["context"].setdefault("traits", {})["accepts_marketing"] = checkout["buyer_accepts_marketing"]
        return event

    def _customer(self, customer: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        cid = exact_id(customer)
        email = email_of(customer.get("email"))
        address = customer.get("default_address") or {}
        consent = customer.get("email_marketing_consent") or {}
        sms = customer.get("sms_marketing_consent") or {}
        traits: dict[str, Any] = {
            "email": email, "phone": customer.get("phone") or None, "first_name": customer.get("first_name"),
            "last_name": customer.get("last_name"), "created_at": customer.get("created_at"),
            "tags": [t.strip() for t in str(customer.get("tags") or "").split(",") if t.strip()] or None,
            "orders_count_shopify": customer.get("orders_count"),
            "total_spent_shopify": money(customer.get("total_spent")),
            "verified_email": customer.get("verified_email"),
            "address": {"country": address.get("country_code"), "city": address.get("city")} if address else None,
        }
        omnicast_consent = {}
        state = consent.get("state") if consent else (
            "subscribed" if customer.get("accepts_marketing") else None)
        if state in ("subscribed", "unsubscribed", "not_subscribed"):
            omnicast_consent["email"] = "subscribed" if state == "subscribed" else "unsubscribed"
        if sms.get("state") in ("subscribed", "unsubscribed", "not_subscribed"):
            omnicast_consent["sms"] = "subscribed" if sms["state"] == "subscribed" else "unsubscribed"
        if omnicast_consent:
            traits["consent"] = omnicast_consent
        event: dict[str, Any] = {
            "type": "identify", "anonymousId": f"shopify:customer:{cid}",
            "traits": {k: v for k, v in traits.items() if v is not None},
            "context": {**context, "externalIds": self._ids(customer, email, customer.get("phone"))},
        }
        if customer.get("updated_at") or customer.get("created_at"):
            event["timestamp"] = customer.get("updated_at") or customer.get("created_at")
        return event

    def _product(self, product: dict[str, Any]) -> list[CatalogItem]:
        pid = exact_id(product) or ""
        settings: ShopifySettings = self.settings  # type: ignore[assignment]
        url = f"{settings.shop_url.rstrip('/')}/products/{product['handle']}" if settings.shop_url and product.get(
            "handle") else None
        images = product.get("images") or []
        image = (product.get("image") or {}).get("src") or (images[0].get("src") if images else None)
        categories = tuple(c for c in [product.get("product_type"), *str(product.get("tags") or "").split(",")]
                           if c and c.strip())
        status = product.get("status") or "active"
        items = []
        for variant in product.get("variants") or [{}]:
            vid = exact_id(variant) if variant else None
            title = product.get("title")
            if variant.get("title") and variant["title"] != "Default Title":
                title = f"{title} - {variant['title']}"
            items.append(CatalogItem(
                product_id=pid, variant_id=vid, title=title, price=money(variant.get("price")),
                stock=variant.get("inventory_quantity"), categories=tuple(c.strip() for c in categories),
                url=url, image_url=image, status=status,
                inventory_item_id=exact_id({"id": variant.get("inventory_item_id")}) if variant else None,
            ))
        return items


@hookimpl
def register_sources(register):  # type: ignore[no-untyped-def]
    """Register the Shopify source."""
    register(Shopify)
