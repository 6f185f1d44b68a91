"""A synthetic shop written through the real ports (event store, send ledger, catalog)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from omnicast_models.synthetic import SyntheticShop, generate

from chalicelib.ports import LedgerEntry, Product, StoredEvent, Stores


def to_datetime(x: np.datetime64) -> datetime:
    return datetime.fromisoformat(str(x.astype("datetime64[us]"))).replace(tzinfo=UTC)


def track(stores: Stores, pid: str, name: str, at: datetime, props: dict[str, Any], mid: str,
          source: str = "segment") -> None:
    stores.events.append(StoredEvent(
        message_id=mid, type="track", profile_id=pid, received_at=at, timestamp=at, event=name, source=source,
        payload={"type": "track", "event": name, "userId": pid, "properties": props}, processed=True,
    ))


def write_shop(shop: SyntheticShop, stores: Stores) -> None:
    """Every order, view, e-mail and open of ``shop`` through the ports, as ingest leaves them."""
    assert stores.catalog is not None
    for pid, category in shop.products.items():
        stores.catalog.put(Product(product_id=pid, variant_id="-", title=pid, price=20.0, categories=[category]))
    ids = shop.customers
    for i, (c, t, total, products) in enumerate(zip(
            shop.order_customer.tolist(), shop.order_time, shop.order_total.tolist(), shop.order_products,
            strict=True)):
        track(stores, ids[c], "Order Completed", to_datetime(t),
              {"order_id": f"o{i}", "total": total, "products": [{"product_id": p} for p in products]}, f"o{i}",
              source="shopify")
    for i, (c, t, product) in enumerate(zip(shop.view_customer.tolist(), shop.view_time, shop.view_product,
                                            strict=True)):
        track(stores, ids[c], "Product Viewed", to_datetime(t), {"product_id": product}, f"v{i}")
    for i, (c, t, opened, ot) in enumerate(zip(shop.send_customer.tolist(), shop.send_time,
                                               shop.open_of_send.tolist(), shop.open_time, strict=True)):
        key = f"{ids[c]}|newsletter|s{i}|-"
        at = to_datetime(t)
        stores.ledger.claim(LedgerEntry(key=key, profile_id=ids[c], journey="newsletter", step=f"s{i}",
                                        channel="email", status="sent", reason="sent", created_at=at, updated_at=at))
        if opened:
            track(stores, ids[c], "Email Opened", to_datetime(ot), {"ledger_key": key, "machine": False}, f"op{i}",
                  source="tracking")


@pytest.fixture(scope="module")
def shop_small() -> SyntheticShop:
    return generate(60, days=400, seed=7, start=datetime(2025, 6, 1, tzinfo=UTC))


@pytest.fixture(scope="module")
def shop_medium() -> SyntheticShop:
    return generate(1500, days=540, seed=11)


def end_of(shop: SyntheticShop) -> datetime:
    return shop.end + timedelta(minutes=1)
