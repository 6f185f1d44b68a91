"""recommendations_for(profile_id, k) against the local (SQLite) catalog store: stock and
status filter, products described, bad input named, unknown customers served."""

from __future__ import annotations

import pytest
from omnicast_engagement.api import ShopRecommendations, recommendations_for
from omnicast_engagement.errors import InvalidInput
from omnicast_engagement.plugin import ItemToItemModel, RecommendationSettings
from omnicast_engagement.recommend import ItemToItemRecommender

from chalicelib.adapters.local import local_stores
from chalicelib.ports import Product

HISTORY = {
    "customer_id": ["a", "a", "b", "b", "c", "c", "d", "e", "e", "f"],
    "item_id": ["tent", "stove", "tent", "stove", "tent", "mug", "tent", "mug", "lamp", "lamp"],
}


@pytest.fixture()
def catalog():
    stores = local_stores(None)
    put = stores.catalog.put
    put(Product("tent", "-", title="Tent", price=199.0, currency="EUR", stock=3, url="https://shop.example/tent"))
    put(Product("stove", "s1", title="Stove", price=49.0, currency="EUR", stock=0))  # sold out...
    put(Product("stove", "s2", title="Stove (gas)", price=59.0, currency="EUR", stock=2))  # ...but this one is not
    put(Product("mug", "-", title="Mug", price=9.0, currency="EUR", stock=None))  # untracked: in stock
    put(Product("lamp", "-", title="Lamp", price=29.0, currency="EUR", stock=5, status="archived"))
    return stores.catalog


@pytest.fixture()
def model():
    return ItemToItemRecommender(min_support=1).fit(HISTORY)


def test_recommends_in_stock_products_with_their_details(model, catalog):
    api = ShopRecommendations(model, catalog)
    recs = api.recommendations_for("d", 5)
    assert [r["product_id"] for r in recs] == ["stove", "mug"]  # lamp is archived, tent was bought
    assert recs[0] == {"product_id": "stove", "score": pytest.approx(recs[0]["score"]), "source": "similar",
                       "reason": "co-purchased with tent by 2 customers", "title": "Stove (gas)", "price": 59.0,
                       "currency": "EUR", "url": None, "image_url": None}
    assert recs[1]["source"] == "similar" and recs[1]["reason"] == "co-purchased with tent by 1 customers"


def test_unknown_customer_gets_popular_products_in_stock(model, catalog):
    recs = recommendations_for("someone-new", 3, recommender=model, catalog=catalog)
    assert [(r["product_id"], r["source"]) for r in recs] == [("tent", "popular"), ("mug", "popular"),
                                                                ("stove", "popular")]
    assert recs[0]["reason"] == "popular: bought by 4 customers"


def test_recent_purchases_are_left_out_and_the_model_plugin_is_accepted(model, catalog):
    plugin = ItemToItemModel(RecommendationSettings())
    plugin.estimator = model
    api = ShopRecommendations(plugin, catalog, recent_purchases=lambda pid: ["stove"] if pid == "d" else [])
    assert [r["product_id"] for r in api.recommendations_for("d", 5)] == ["mug"]
    no_catalog = ShopRecommendations(model, recent_purchases=lambda pid: ["stove"])
    assert [r["product_id"] for r in no_catalog.recommendations_for("d", 5)] == ["mug", "lamp"]


def test_stock_is_cached_for_the_ttl(model, catalog):
    now = [0.0]
    api = ShopRecommendations(model, catalog, stock_ttl_seconds=60, clock=lambda: now[0])
    assert "stove" in [r["product_id"] for r in api.recommendations_for("d", 5)]
    catalog.put(Product("stove", "s2", title="Stove (gas)", price=59.0, currency="EUR", stock=0))
    now[0] = 30.0
    assert "stove" in [r["product_id"] for r in api.recommendations_for("d", 5)]  # still cached
    now[0] = 61.0
    assert "stove" not in [r["product_id"] for r in api.recommendations_for("d", 5)]


@pytest.mark.parametrize(("profile_id", "k", "field"), [
    ("", 5, "profile_id"), ("   ", 5, "profile_id"), ("x" * 201, 5, "profile_id"), (None, 5, "profile_id"),
    ("d", 0, "k"), ("d", 51, "k"), ("d", "5", "k"), ("d", True, "k"), ("d", 2.0, "k"),
])
def test_bad_input_names_the_field(model, catalog, profile_id, k, field):
    with pytest.raises(InvalidInput) as err:
        ShopRecommendations(model, catalog).recommendations_for(profile_id, k)
    assert err.value.field == field
    assert isinstance(err.value, ValueError)


def _table(history, as_of):
    """A FeatureTable as chalicelib.features builds it (rows = sorted profile ids)."""
    import numpy as np

    from chalicelib.plugin_api import FeatureTable

    ids = sorted(set(history["customer_id"]))
    rows = np.searchsorted(ids, history["customer_id"])
    return FeatureTable(as_of, ids, ("orders",), np.zeros((len(ids), 1)), extras={"interactions": {
        "row": rows, "product": np.asarray(history["item_id"]), "kind": np.full(len(rows), "purchase"),
        "time": np.zeros(len(rows))}})


def test_the_model_plugin_serves_the_site_and_a_small_shop_gets_popular_items(catalog):
    from datetime import UTC, datetime

    from chalicelib.plugin_api import ModelError, TrainingSet

    as_of = datetime(2026, 3, 1, tzinfo=UTC)
    trained = ItemToItemModel(RecommendationSettings(min_support=1)).fit(TrainingSet(_table(HISTORY, as_of), {}, 30))
    assert [r["product_id"] for r in trained.recommendations_for("d", 5, catalog)] == ["stove", "mug"]
    assert [r["product_id"] for r in trained.recommendations_for("d", 5, catalog, exclude=["stove"])] == ["mug"]
    assert [r["product_id"] for r in trained.recommendations_for("d", 5, catalog)] == ["stove", "mug"]
    with pytest.raises(InvalidInput) as err:
        trained.recommendations_for("d", 500, catalog)
    assert err.value.field == "k"

    small = ItemToItemModel(RecommendationSettings())
    small.use_heuristic("heuristic: 6 customers < 50", _table(HISTORY, as_of))
    artifact = small.dump()
    assert artifact.format == "npz"
    loaded = ItemToItemModel(RecommendationSettings())
    loaded.heuristic = "heuristic: 6 customers < 50"  # the scoring service sets it from the card
    loaded.load(artifact)
    recs = loaded.recommendations_for("d", 5, catalog)
    # stove and mug were both bought by two customers: equal popularity keeps item order
    assert [(r["product_id"], r["source"]) for r in recs] == [("mug", "popular"), ("stove", "popular")]

    untrained = ItemToItemModel(RecommendationSettings())
    untrained.use_heuristic("heuristic: 0 customers < 50")
    assert untrained.dump().format == "json"
    with pytest.raises(ModelError):
        untrained.recommendations_for("d", 5, catalog)
