"""Features as of a cutoff: known values, no leakage, and the same table from every reader."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from moto import mock_aws

from chalicelib import features
from chalicelib.adapters.local import local_stores
from chalicelib.ports import LedgerEntry, Product, Stores
from tests.models.conftest import track, write_shop

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def tiny_shop(stores: Stores) -> None:
    """ann: 3 orders (one delivered twice by the platform), views, an e-mail opened at 19:xx;
    bob: no order, one view; cy: an order after the cutoff only."""
    assert stores.catalog is not None
    stores.catalog.put(Product(product_id="p1", variant_id="-", categories=["shoes"]))
    stores.catalog.put(Product(product_id="p2", variant_id="-", categories=["bags"]))
    track(stores, "ann", "Order Completed", day(0), {"order_id": "1", "total": 10.0,
                                                     "products": [{"product_id": "p1"}]}, "o1", "shopify")
    track(stores, "ann", "Order Completed", day(10), {"order_id": "2", "total": 30.0,
                                                      "products": [{"product_id": "p1"}, {"product_id": "p2"}]},
          "o2", "shopify")
    track(stores, "ann", "Order Completed", day(10), {"order_id": "2", "total": 30.0}, "o2-again", "segment")
    track(stores, "ann", "Order Completed", day(40), {"order_id": "3", "total": 50.0}, "o3", "shopify")
    track(stores, "ann", "Product Viewed", day(25), {"product_id": "p1", "category": "shoes"}, "v1")
    stores.ledger.claim(LedgerEntry(key="ann|news|1|-", profile_id="ann", journey="news", step="1", channel="email",
                                    status="sent", reason="sent", created_at=day(2), updated_at=day(2)))
    stores.ledger.claim(LedgerEntry(key="ann|news|2|-", profile_id="ann", journey="news", step="2", channel="email",
                                    status="sent", reason="sent", created_at=day(5), updated_at=day(5)))
    track(stores, "ann", "Email Opened", day(3) + timedelta(hours=19, minutes=30),
          {"ledger_key": "ann|news|1|-", "machine": False}, "op1", "tracking")
    track(stores, "ann", "Email Opened", day(3) + timedelta(hours=20), {"ledger_key": "ann|news|1|-", "machine": False},
          "op1b", "tracking")
    track(stores, "ann", "Email Opened", day(6), {"ledger_key": "ann|news|2|-", "machine": True}, "op2", "tracking")
    track(stores, "ann", "Email Link Clicked", day(3) + timedelta(hours=19, minutes=31),
          {"ledger_key": "ann|news|1|-", "machine": False}, "cl1", "tracking")
    track(stores, "bob", "Product Viewed", day(12), {"product_id": "p2", "category": "bags"}, "v2")
    track(stores, "cy", "Order Completed", day(30), {"order_id": "9", "total": 99.0}, "o9", "shopify")


def col(table, name, pid):
    return table.column(name)[table.profile_ids.index(pid)]


def test_known_values_as_of_a_cutoff():
    stores = local_stores(None)
    tiny_shop(stores)
    cutoff = day(20)
    table = features.build(stores.activity.activity(None, day(100)), ["ann", "bob", "cy"], cutoff)
    assert table.profile_ids == ["ann", "bob", "cy"]
    # ann by day 20: orders on day 0 and 10 (the second delivered twice counts once)
    assert col(table, "orders", "ann") == 2
    assert col(table, "repeat_orders", "ann") == 1
    assert col(table, "monetary", "ann") == 40.0
    assert col(table, "aov", "ann") == 20.0
    assert col(table, "repeat_aov", "ann") == 30.0
    assert col(table, "recency_days", "ann") == pytest.approx(10)
    assert col(table, "active_days", "ann") == pytest.approx(10)
    assert col(table, "age_days", "ann") == pytest.approx(20)
    assert col(table, "ipt_mean", "ann") == pytest.approx(10)
    assert math.isnan(col(table, "ipt_std", "ann"))  # one gap: no spread
    assert col(table, "sent_email", "ann") == 2
    assert col(table, "clicked_email", "ann") == 1
    # two human opens of message 1 count once; the machine open of message 2 not at all
    assert col(table, "open_rate_email", "ann") == 0.5
    assert col(table, "peak_hour", "ann") == 19
    assert table.extras["engagement_hours"][0, 19] == 2 and table.extras["engagement_hours"][0].sum() == 3
    # categories through the catalog: p1 shoes (twice), p2 bags; the view on day 25 is after the cutoff
    assert col(table, "categories", "ann") == 2
    assert col(table, "top_category_share", "ann") == pytest.approx(2 / 3)
    assert col(table, "views", "ann") == 0
    # bob: a view, no order; cy: only an order after the cutoff
    assert col(table, "orders", "bob") == 0 and math.isnan(col(table, "recency_days", "bob"))
    assert col(table, "views", "bob") == 1 and col(table, "days_since_view", "bob") == pytest.approx(8)
    assert col(table, "orders", "cy") == 0 and math.isnan(col(table, "tenure_days", "cy"))


def test_no_leakage_after_the_cutoff():
    """Features at a cutoff are the same whether later events exist or not."""
    everything = local_stores(None)
    tiny_shop(everything)
    cutoff = day(20)
    with_future = features.build(everything.activity.activity(None, day(100)), ["ann", "bob", "cy"], cutoff)
    read_to_cutoff = features.build(everything.activity.activity(None, cutoff), ["ann", "bob", "cy"], cutoff)
    np.testing.assert_array_equal(with_future.X, read_to_cutoff.X)
    # and a later cutoff does see the later events: the test can fail
    later = features.build(everything.activity.activity(None, day(100)), ["ann", "bob", "cy"], day(50))
    assert col(later, "orders", "ann") == 3 and col(later, "orders", "cy") == 1


def test_outcomes_are_the_window_after_the_cutoff():
    stores = local_stores(None)
    tiny_shop(stores)
    activity = stores.activity.activity(None, day(100))
    data = features.training_set(activity, ["ann", "bob", "cy"], day(20), horizon_days=25)
    assert data.features.profile_ids == ["ann"]  # only customers who had ordered by the cutoff
    assert data.outcomes["orders"].tolist() == [1.0]  # day 40 is inside (20, 45]
    assert data.outcomes["spend"].tolist() == [50.0]
    short = features.training_set(activity, ["ann", "bob", "cy"], day(20), horizon_days=15)
    assert short.outcomes["orders"].tolist() == [0.0]


def test_per_profile_reader_matches_the_bulk_reader(shop_medium):
    stores = local_stores(None)
    write_shop(shop_medium, stores)
    ids = shop_medium.customers[:300]
    at = shop_medium.start + timedelta(days=300)
    bulk = features.build(stores.activity.activity(ids, at), ids, at)
    slow = features.build(features.PerProfileActivity(stores.events, stores.ledger, stores.catalog).activity(ids, at),
                          ids, at)
    np.testing.assert_allclose(bulk.X, slow.X, equal_nan=True)
    np.testing.assert_array_equal(bulk.extras["category_affinity"], slow.extras["category_affinity"])
    assert (bulk.column("orders") > 0).sum() > 100  # the comparison covered real customers


def test_dynamodb_events_give_the_same_features(monkeypatch):
    """The aws adapter set has no bulk reader: its per-profile reads give the same table."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    from chalicelib.adapters.aws import AwsClients, aws_stores, create_resources
    from chalicelib.config import AwsSettings

    local = local_stores(None)
    tiny_shop(local)
    expected = features.build(local.activity.activity(None, day(100)), ["ann", "bob", "cy"], day(45))
    settings = AwsSettings(table="features", bucket="features-bucket", queue_prefix="features-",
                           ssm_prefix="/features/")
    with mock_aws():
        clients = AwsClients(settings)
        create_resources(settings, ("scoring",), clients)
        aws = aws_stores(settings, clients)
        tiny_shop(aws)
        for pid in ("ann", "bob", "cy"):  # the ingest worker marks events processed for their profile
            for e in local.events.for_profile(pid, limit=100):
                aws.events.mark_processed(e.source, e.message_id, pid)
        reader = features.reader(aws)
        assert isinstance(reader, features.PerProfileActivity)
        got = features.build(reader.activity(["ann", "bob", "cy"], day(100)), ["ann", "bob", "cy"], day(45))
    np.testing.assert_allclose(got.X, expected.X, equal_nan=True)


def test_a_subset_of_customers_keeps_its_own_interactions():
    stores = local_stores(None)
    tiny_shop(stores)
    table = features.build(stores.activity.activity(None, day(100)), ["ann", "bob", "cy"], day(50))
    assert table.extras["interactions"]["row"].tolist() == [0, 0, 0, 0, 1]  # bob (row 1) viewed p2
    buyers = table.rows(table.column("orders") > 0)
    assert buyers.profile_ids == ["ann", "cy"]
    assert buyers.extras["interactions"]["row"].tolist() == [0, 0, 0, 0]  # bob's view left with bob
    assert buyers.extras["engagement_hours"].shape == (2, 24)


def test_the_workbench_builds_each_cutoff_once_and_hands_out_copies(monkeypatch):
    """Training reads the same cutoffs for every model: one build each, the same tables as the
    functions give, and a model changing its arrays in place changes nothing for the next."""
    stores = local_stores(None)
    tiny_shop(stores)
    activity = stores.activity.activity(None, day(100))
    ids = ["ann", "bob", "cy"]
    built: list[datetime] = []
    real_build = features.build

    def counting(activity, profile_ids, as_of):
        built.append(as_of)
        return real_build(activity, profile_ids, as_of)

    monkeypatch.setattr(features, "build", counting)
    bench = features.Workbench(activity, ids)
    first = bench.training_set(day(20), 25)
    first.features.X[:] = -1.0  # a model scaling in place
    first.outcomes["orders"][:] = 7
    second = bench.training_set(day(20), 25)
    other_horizon = bench.training_set(day(20), 15)
    latest = bench.build(day(20))
    latest.extras["engagement_hours"][:] = 0
    assert built == [day(20)]  # four answers, one build
    expected = features.training_set(activity, ids, day(20), 25)
    np.testing.assert_array_equal(second.features.X, expected.features.X)
    assert second.outcomes["orders"].tolist() == [1.0] and other_horizon.outcomes["orders"].tolist() == [0.0]
    np.testing.assert_array_equal(bench.build(day(20)).extras["engagement_hours"],
                                  features.build(activity, ids, day(20)).extras["engagement_hours"])
    before = len(built)
    bench.build(day(50))
    bench.training_set(day(20), 25)
    assert built[before:] == [day(50)]  # a new cutoff is built, a known one is not


def test_profile_ids_are_the_customers_with_a_processed_event():
    stores = local_stores(None)
    tiny_shop(stores)
    from chalicelib.ports import StoredEvent

    stores.events.append(StoredEvent(  # taken, not yet applied: not a customer yet
        message_id="pending", type="track", profile_id="dee", received_at=day(1), timestamp=day(1),
        event="Product Viewed", source="segment", payload={"type": "track"}, processed=False))
    stores.events.append(StoredEvent(  # an anonymous catalog event
        message_id="cat", type="track", profile_id=None, received_at=day(1), timestamp=day(1),
        event="Product Created", source="catalog", payload={"type": "track"}, processed=True))
    assert stores.activity.profile_ids() == ["ann", "bob", "cy"]
    stores.events.mark_processed("segment", "pending", "dee")
    assert stores.activity.profile_ids() == ["ann", "bob", "cy", "dee"]
    assert features.reader(local_stores(None)).profile_ids() == []  # no events at all
