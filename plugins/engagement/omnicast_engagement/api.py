"""``recommendations_for(profile_id, k)``: the shop site's recommendations, without HTTP.

The core exposes it as a route; this module only validates, filters by the catalog and
explains. Bad input raises :class:`~omnicast_engagement._tables.InvalidInput` (a
``ValueError`` with ``field``), which the route answers with 400 naming the field. An
unknown or new customer is not an error: they get the popular items in stock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from .errors import InvalidInput

MAX_K = 50
MAX_ID_CHARS = 200


class ShopRecommendations:
    """Recommendations for the shop's site from a fitted recommender and the catalog.

    ``recommender``: a fitted :class:`~omnicast_engagement.recommend.ItemToItemRecommender`
    (or the ``item_to_item`` model plugin holding one). ``catalog``: anything with
    ``all(limit)`` returning products (``product_id``, ``title``, ``price``, ``currency``,
    ``stock``, ``url``, ``image_url``, ``status``); a product is in stock when active and its
    stock is untracked (None) or positive for some variant. Without a catalog every item
    counts as in stock. ``recent_purchases(profile_id)`` may return product ids bought since
    the model was trained, which are left out too. The stock list is re-read at most every
    ``stock_ttl_seconds`` (``clock`` is injectable for tests).
    """

    def __init__(self, recommender: Any, catalog: Any = None, *,
                 recent_purchases: Callable[[str], Iterable[str]] | None = None,
                 stock_ttl_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.recommender = getattr(recommender, "estimator", None) or recommender
        self.catalog = catalog
        self.recent_purchases = recent_purchases
        self.stock_ttl_seconds = stock_ttl_seconds
        self.clock = clock
        self._products: dict[str, Any] = {}
        self._in_stock: set[str] | None = None
        self._read_at = -float("inf")

    def _stock(self) -> set[str] | None:
        if self.catalog is None:
            return None
        now = self.clock()
        if self._in_stock is None or now - self._read_at >= self.stock_ttl_seconds:
            products: dict[str, Any] = {}
            in_stock: set[str] = set()
            for p in self.catalog.all(limit=1_000_000):
                products.setdefault(p.product_id, p)
                if p.status == "active" and (p.stock is None or p.stock > 0):
                    in_stock.add(p.product_id)
                    products[p.product_id] = p  # describe the product by a variant that is in stock
            self._products, self._in_stock, self._read_at = products, in_stock, now
        return self._in_stock

    def recommendations_for(self, profile_id: str, k: int = 10, *,
                            exclude: Iterable[str] = ()) -> list[dict[str, Any]]:
        """Up to ``k`` products for ``profile_id``, best first, each with why; never one in
        ``exclude`` (e.g. bought since the model's cutoff)."""
        if not isinstance(profile_id, str) or not profile_id.strip() or len(profile_id) > MAX_ID_CHARS:
            raise InvalidInput(f"profile_id must be a non-empty string of at most {MAX_ID_CHARS} characters",
                               field="profile_id")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise InvalidInput(f"k must be an integer from 1 to {MAX_K}, got {k!r}", field="k")
        stock = self._stock()
        bought = {str(x) for x in exclude}
        if self.recent_purchases is not None:
            bought |= {str(x) for x in self.recent_purchases(profile_id)}
        if bought:
            allowed = stock if stock is not None else {str(x) for x in self.recommender.item_ids_}
            stock = allowed - bought
        (recs,) = self.recommender.recommend([profile_id], k, in_stock=stock)
        out = []
        for r in recs:
            item: dict[str, Any] = {"product_id": r.item_id, "score": round(r.score, 6), "source": r.source,
                                    "reason": self.recommender.explain(profile_id, r.item_id)}
            p = self._products.get(r.item_id)
            if p is not None:
                item.update(title=p.title, price=p.price, currency=p.currency, url=p.url, image_url=p.image_url)
            out.append(item)
        return out


def recommendations_for(profile_id: str, k: int = 10, *, recommender: Any, catalog: Any = None) -> list[dict[str, Any]]:
    """One-shot form of :meth:`ShopRecommendations.recommendations_for` (reads the catalog each call)."""
    return ShopRecommendations(recommender, catalog).recommendations_for(profile_id, k)
