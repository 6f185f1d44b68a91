"""The product catalog on the local SQLite database."""

from __future__ import annotations

import json

from chalicelib.adapters.local.sqlite import Database
from chalicelib.ports import Product, product_from, product_json

SCHEMA = """
CREATE TABLE IF NOT EXISTS catalog (
    product_id TEXT NOT NULL, variant_id TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (product_id, variant_id)
) WITHOUT ROWID;
"""


class SqliteCatalogStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.script(SCHEMA)

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
