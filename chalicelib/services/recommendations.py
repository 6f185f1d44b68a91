"""The shop site's recommendations: ``GET /v1/recommendations/{profile_id}?k=10`` (write key).

The enabled ``recommendations`` model serves them (the plugin's ``recommendations_for``),
filtered by the catalog's stock; products the customer ordered since the model's cutoff are
left out. Loading the model imports numpy/scipy on the first call only.
"""

from __future__ import annotations

from typing import Any

from chalicelib.errors import BadRequest, NotFound
from chalicelib.plugin_api import ModelError
from chalicelib.services.ingest import write_key_from

MAX_RECENT_EVENTS = 200


class RecommendationsService:
    def __init__(self, scoring: Any, credentials: Any, stores: Any) -> None:
        self.scoring = scoring
        self.credentials = credentials
        self.stores = stores

    def for_profile(self, profile_id: str, k: str | None, headers: dict[str, str]) -> dict[str, Any]:
        self.credentials.check_write_key(write_key_from(headers, None))
        try:
            count = 10 if k in (None, "") else int(k)
        except ValueError:
            raise BadRequest(f"k must be an integer, got {k!r}", field="k") from None
        cls = self.scoring.enabled().get("recommendations")
        if cls is None:
            raise NotFound("no recommendations model is enabled", field="model")
        try:
            model = self.scoring.load(cls.name)
        except ModelError as exc:
            raise NotFound(str(exc), field="model") from None
        serve = getattr(model, "recommendations_for", None)
        if serve is None:
            raise NotFound(f"model {cls.name!r} does not serve the site", field="model")
        try:
            items = serve(profile_id, count, self.stores.catalog, exclude=self._ordered(profile_id))
        except ModelError as exc:
            raise NotFound(str(exc), field="model") from None
        except ValueError as exc:  # the plugin's InvalidInput names the field
            raise BadRequest(str(exc), field=getattr(exc, "field", None)) from None
        return {"profile_id": profile_id, "model": cls.name, "version": model.artifact_version, "items": items}

    def _ordered(self, profile_id: str) -> list[str]:
        """Products in the customer's recent orders (newest events; the model may predate them)."""
        products: list[str] = []
        for event in self.stores.events.for_profile(profile_id, limit=MAX_RECENT_EVENTS):
            if event.event == "Order Completed":
                for line in (event.payload.get("properties") or {}).get("products") or []:
                    if isinstance(line, dict) and line.get("product_id") is not None:
                        products.append(str(line["product_id"]))
        return products
