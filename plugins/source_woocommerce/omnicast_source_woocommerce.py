"""WooCommerce webhooks as canonical events.

``X-WC-Webhook-Signature`` = base64(HMAC-SHA256(secret, raw body)). When a webhook is
created WooCommerce POSTs an unsigned form body ``webhook_id=<n>`` and disables the
webhook unless it gets a 2xx: exactly that shape, with no signature header, is accepted
as a ping and ignored; anything else unsigned is refused. Delivery ids come from
``X-WC-Webhook-Delivery-ID`` (retries repeat it).

| topic | canonical event |
|---|---|
| order.*, status processing or completed | Order Completed (journeys and order counts key on order_id) |
| order.*, status cancelled | Order Cancelled |
| order.*, status refunded | Order Refunded |
| order.*, other statuses (pending, on-hold, failed) | Order Updated |
| order.deleted | Order Cancelled |
| customer.created / updated | identify |
| product.created / updated | catalog item (stock, price, categories, permalink) |
| product.deleted | catalog: status archived |
"""

from __future__ import annotations

import json
import re
from typing import Any

from chalicelib.plugin_api import (
    CatalogItem,
    Delivery,
    EventSource,
    SourceOutput,
    WebhookRequest,
    hookimpl,
    money,
    verify_base64_hmac,
)

PING = re.compile(rb"^webhook_id=\d+$")


def gmt(value: Any) -> str | None:
    return f"{value}Z" if isinstance(value, str) and value and not value.endswith("Z") else value


class WooCommerce(EventSource):
    name = "woocommerce"
    title = "WooCommerce"

    def verify(self, request: WebhookRequest, secrets: list[str]) -> None:
        if request.header("x-wc-webhook-signature") is None and PING.match(request.body.strip()):
            return  # the creation ping is unsigned by design
        verify_base64_hmac(request, secrets, "X-WC-Webhook-Signature")

    def delivery(self, request: WebhookRequest) -> Delivery:
        if request.header("x-wc-webhook-signature") is None and PING.match(request.body.strip()):
            return Delivery(delivery_id="ping", topic="ping", ping=True)
        topic = request.header("x-wc-webhook-topic")
        if not topic:
            raise ValueError("missing X-WC-Webhook-Topic header")
        delivery = request.header("x-wc-webhook-delivery-id")
        if not delivery:
            raise ValueError("missing X-WC-Webhook-Delivery-ID header")
        return Delivery(delivery_id=f"{request.header('x-wc-webhook-id') or '-'}:{delivery}", topic=topic)

    def to_output(self, request: WebhookRequest) -> SourceOutput:
        topic = request.header("x-wc-webhook-topic") or ""
        body = json.loads(request.body)
        resource, _, action = topic.partition(".")
        context = {"source": {"name": "woocommerce", "topic": topic},
                   "shop_url": request.header("x-wc-webhook-source")}
        out = SourceOutput()
        if resource == "order":
            out.events.append(self._order(body, action, context))
        elif resource == "customer" and action != "deleted":
            out.events.append(self._customer(body, context))
        elif resource == "product":
            out.catalog.extend(self._product(body, action))
        delivery = request.header("x-wc-webhook-delivery-id") or "unknown"
        for i, event in enumerate(out.events):
            event["messageId"] = f"woocommerce:{delivery}:{i}"
        return out

    @staticmethod
    def _ids(customer_id: Any, email: str | None) -> list[dict[str, str]]:
        ids = []
        if customer_id not in (None, 0, "0", ""):
            ids.append({"id": str(customer_id), "type": "woocommerce_customer_id", "collection": "users"})
        if email:
            ids.append({"id": email, "type": "email", "collection": "users"})
        return ids

    def _order(self, order: dict[str, Any], action: str, context: dict[str, Any]) -> dict[str, Any]:
        status = order.get("status")
        if action == "deleted" or status == "cancelled":
            name = "Order Cancelled"
        elif status == "refunded":
            name = "Order Refunded"
        elif status in ("processing", "completed"):
            name = "Order Completed"
        else:
            name = "Order Updated"
        billing = order.get("billing") or {}
        email = billing.get("email", "").strip().lower() or None
        customer_id = order.get("customer_id")
        coupons = order.get("coupon_lines") or []
        props = {
            "order_id": str(order.get("id")), "order_number": order.get("number"), "status": status,
            "total": money(order.get("total")), "tax": money(order.get("total_tax")),
            "shipping": money(order.get("shipping_total")), "discount": money(order.get("discount_total")),
            "currency": order.get("currency"), "coupon": coupons[0].get("code") if coupons else None,
            "checkout_id": order.get("order_key"),
            "products": [{k: v for k, v in {
                "product_id": str(li.get("product_id")),
                "variant": str(li["variation_id"]) if li.get("variation_id") else None,
                "sku": li.get("sku") or None, "name": li.get("name"), "price": money(li.get("price")),
                "quantity": li.get("quantity")}.items() if v is not None} for li in order.get("line_items") or []],
        }
        when = gmt(order.get("date_paid_gmt") if name == "Order Completed" else order.get("date_modified_gmt"))
        event: dict[str, Any] = {
            "type": "track", "event": name,
            "anonymousId": (
                f"woocommerce:customer:{customer_id}" if customer_id else f"woocommerce:order:{order.get('id')}"
            ),
            "properties": {k: v for k, v in props.items() if v is not None},
            "context": {**context, "externalIds": self._ids(customer_id, email)},
        }
        if email:
            event["context"]["traits"] = {"email": email, "first_name": billing.get("first_name") or None,
                                          "phone": billing.get("phone") or None}
            event["context"]["traits"] = {k: v for k, v in event["context"]["traits"].items() if v}
        if when:
            event["timestamp"] = when
        return event

    def _customer(self, customer: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        email = (customer.get("email") or "").strip().lower() or None
        billing = customer.get("billing") or {}
        traits = {
            "email": email, "first_name": customer.get("first_name") or None,
            "last_name": customer.get("last_name") or None, "phone": billing.get("phone") or None,
            "created_at": gmt(customer.get("date_created_gmt")),
            "address": {"country": billing.get("country"), "city": billing.get("city")}
            if billing.get("country") else None,
            "is_paying_customer": customer.get("is_paying_customer"),
        }
        event: dict[str, Any] = {
            "type": "identify", "anonymousId": f"woocommerce:customer:{customer.get('id')}",
            "traits": {k: v for k, v in traits.items() if v is not None},
            "context": {**context, "externalIds": self._ids(customer.get("id"), email)},
        }
        when = gmt(customer.get("date_modified_gmt") or customer.get("date_created_gmt"))
        if when:
            event["timestamp"] = when
        return event

    @staticmethod
    def _product(product: dict[str, Any], action: str) -> list[CatalogItem]:
        if action == "deleted":
            return [CatalogItem(product_id=str(product.get("id")), status="archived")]
        images = product.get("images") or []
        stock = product.get("stock_quantity")
        if stock is None and product.get("stock_status") in ("outofstock", "instock"):
            stock = 0 if product["stock_status"] == "outofstock" else None
        return [CatalogItem(
            product_id=str(product.get("id")), variant_id=None, title=product.get("name"),
            price=money(product.get("price")), stock=stock,
            categories=tuple(c.get("name") for c in product.get("categories") or [] if c.get("name")),
            url=product.get("permalink"), image_url=images[0].get("src") if images else None,
            status="active" if product.get("status", "publish") == "publish" else "draft",
        )]


@hookimpl
def register_sources(register):  # type: ignore[no-untyped-def]
    """Register the WooCommerce source."""
    register(WooCommerce)
