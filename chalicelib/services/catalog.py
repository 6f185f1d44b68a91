"""The product catalog: variants, prices and stock from the shops' product webhooks.

Applying a change compares it with what we had and emits the catalog events journeys
listen for: "Product Back In Stock", "Product Price Dropped", "Product Published" (new
arrivals). Those events belong to no customer; they are stored in the event log under
source "catalog", deduplicated like every other event.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from datetime import datetime
from typing import Any

from chalicelib.clock import iso
from chalicelib.plugin_api import CatalogItem
from chalicelib.ports import CatalogStore, EventStore, Product, StoredEvent

log = logging.getLogger("omnicast.catalog")
INVENTORY = "_inventory_item"  # catalog rows that map an inventory item id to its variant


def _changes(before: Product | None, after: Product) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if before is None:
        if after.status == "active" and after.title:
            out.append(("Product Published", {}))
        return out
    if before.stock is not None and before.stock <= 0 and (after.stock or 0) > 0:
        out.append(("Product Back In Stock", {"previous_stock": before.stock}))
    if before.price is not None and after.price is not None and after.price < before.price:
        drop = round(100 * (before.price - after.price) / before.price, 1) if before.price else 0.0
        out.append(("Product Price Dropped", {"previous_price": before.price, "drop_percent": drop}))
    return out


class CatalogService:
    def __init__(self, catalog: CatalogStore, events: EventStore, on_event: Any = None) -> None:
        self.catalog = catalog
        self.events = events
        self.on_event = on_event  # the journey engine's fan-out to customers waiting for it

    def apply(self, source: str, item: CatalogItem, at: datetime) -> list[str]:
        """Merge one catalog item (None fields keep what we had); returns the events emitted."""
        if item.inventory_item_id and item.product_id:
            # remember which variant this inventory item counts, for inventory-only webhooks
            self.catalog.put(
                Product(
                    product_id=INVENTORY,
                    variant_id=item.inventory_item_id,
                    title=f"{item.product_id}|{item.variant_id or '-'}",
                    status="index",
                )
            )
        elif item.inventory_item_id:
            link = self.catalog.get(INVENTORY, item.inventory_item_id)
            if link is None:
                log.info("stock for an inventory item no product webhook has named yet: ignored")
                return []
            product_id, variant_id = link.title.split("|", 1)
            item = replace(item, product_id=product_id, variant_id=variant_id, inventory_item_id=None)
        variant = item.variant_id or "-"
        before = self.catalog.get(item.product_id, variant)
        base = before or Product(product_id=item.product_id, variant_id=variant)
        updates: dict[str, Any] = {
            k: v
            for k, v in {
                "title": item.title,
                "price": item.price,
                "currency": item.currency,
                "stock": item.stock,
                "categories": list(item.categories) if item.categories is not None else None,
                "url": item.url,
                "image_url": item.image_url,
                "status": item.status,
            }.items()
            if v is not None
        }
        after = replace(base, **updates, updated_at=at)
        self.catalog.put(after)
        emitted = []
        for name, extra in _changes(before, after):
            digest = hashlib.sha256(f"{item.product_id}|{variant}|{name}|{iso(at)}".encode()).hexdigest()[:24]
            properties = {
                "product_id": after.product_id,
                "variant": after.variant_id,
                "name": after.title,
                "price": after.price,
                "currency": after.currency,
                "stock": after.stock,
                "categories": after.categories,
                "url": after.url,
                "image_url": after.image_url,
                "shop_source": source,
                **extra,
            }
            event = StoredEvent(
                message_id=f"catalog-{digest}",
                type="track",
                profile_id=None,
                received_at=at,
                timestamp=at,
                event=name,
                source="catalog",
                payload={"type": "track", "event": name, "properties": properties, "timestamp": iso(at)},
                processed=True,
            )
            if self.events.append(event) and self.on_event is not None:
                self.on_event(event)  # fan out to the customers waiting for it
            emitted.append(name)
        return emitted
