"""The measurement snapshot reads the events it counts, not the whole event log."""

from __future__ import annotations

from chalicelib.services.measurement import SNAPSHOT_EVENTS
from tests.unit.test_journeys import customer, emit


def test_the_snapshot_reads_only_hits_bounces_and_orders(rec_runtime, monkeypatch):
    rt = rec_runtime(journeys={"disabled": ["welcome", "browse_abandonment", "price_drop"]})
    customer(rt)
    for n in range(3):
        emit(rt, "track", userId="u1", event="Product Viewed", properties={"product_id": f"p{n}"})
    emit(rt, "track", userId="u1", event="Order Completed", properties={"order_id": "o1", "total": 42})
    asked, built = [], []
    real = rt.stores.events.by_source

    def by_source(source, after=None, limit=500, *, events=None):
        asked.append(events)
        page = real(source, after, limit, events=events)
        built.extend(e.event for e in page)
        return page

    monkeypatch.setattr(rt.stores.events, "by_source", by_source)
    snap = rt.measurement.snapshot()
    assert [o.order_id for o in snap.orders] == ["o1"] and snap.orders[0].revenue == 42
    assert asked and all(names == SNAPSHOT_EVENTS for names in asked)
    assert built == ["Order Completed"]  # no page view, no identify was read
