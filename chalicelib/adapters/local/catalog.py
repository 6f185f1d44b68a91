"""The product catalog on the local SQLite database."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.adapters.local.sqlite import Database
from chalicelib.clock import iso, parse_iso
from chalicelib.ports import Product

SCHEMA = """
CREATE TABLE IF NOT EXISTS catalog (
    product_id TEXT NOT NULL, variant_id TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (product_id, variant_id)
) WITHOUT ROWID;
"""


def product_json(p: Product) -> dict[str, Any]:
    return {
        "product_id": p.product_id,
        "variant_id": p.variant_id,
        "title": p.title,
        "price": p.price,
        "currency": p.currency,
        "stock": p.stock,
        "categories": p.categories,
        "url": p.url,
        "image_url": p.image_url,
        "status": p.status,
        "updated_at": iso(p.updated_at) if p.updated_at else None,
    }


def product_from(d: dict[str, Any]) -> Product:
    return Product(**{**d, "updated_at": parse_iso(d["updated_at"]) if d.get("updated_at") else None})


class SqliteCatalogStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        with db.lock:
            db.conn.executescript(SCHEMA)

    def get(self, product_id: str, variant_id: str) -> Product | None:
        rows = self.db.query("SELECT body FROM catalog WHERE product_id=? AND variant_id=?", (product_id, variant_id))
        return product_from(json.loads(rows[0][0])) if rows else None

    def put(self, product: Product) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO catalog VALUES (?,?,?)",
            (product.product_id, product.variant_id, json.dumps(product_json(product))),
        )

    def variants(self, product_id: str) -> list[Product]:
        rows = self.db.query("SELECT body FROM catalog WHERE product_id=? ORDER BY variant_id", (product_id,))
        return [product_from(json.loads(r[0])) for r in rows]

    def all(self, limit: int = 10_000) -> list[Product]:
        rows = self.db.query("SELECT body FROM catalog ORDER BY product_id, variant_id LIMIT ?", (limit,))
        return [product_from(json.loads(r[0])) for r in rows]
