"""A worker's ingest batch is one transaction. It runs without a savepoint per message; when a
message fails, the batch rolls back and runs again with them, so that message rolls back alone."""

from __future__ import annotations

import time

import pytest

from tests.unit.test_journeys import customer
from tests.unit.test_segments import _queue


@pytest.fixture
def rt(rec_runtime):
    return rec_runtime(journeys={"disabled": ["welcome", "browse_abandonment", "price_drop"]})


def statements(rt):
    seen: list[str] = []
    rt.stores.events.db.conn.set_trace_callback(seen.append)
    return seen


def orders(rt, user):
    pid = rt.stores.profiles.resolve("user_id", user)
    return rt.stores.profiles.get(pid).traits.get("orders_count")


def test_a_batch_that_goes_well_takes_no_savepoint(rt):
    for user in ("u1", "u2"):
        customer(rt, user)
    for user in ("u1", "u2"):
        _queue(rt, "track", userId=user, messageId=f"ok-{user}", event="Order Completed",
               properties={"order_id": f"o-{user}", "total": 30})
    seen = statements(rt)
    assert rt.work("ingest", 100) == 2
    assert not [s for s in seen if s.startswith("SAVEPOINT")]
    assert [s for s in seen if s in ("BEGIN IMMEDIATE", "COMMIT")] == ["BEGIN IMMEDIATE", "COMMIT"]
    assert orders(rt, "u1") == orders(rt, "u2") == 1


def test_a_failing_message_rolls_back_alone_and_the_rest_is_applied_once(rt, monkeypatch, caplog):
    for user in ("u1", "u2", "u3"):
        customer(rt, user)
    for user in ("u1", "u2", "u3"):
        _queue(rt, "track", userId=user, messageId=f"m-{user}", event="Order Completed",
               properties={"order_id": f"o-{user}", "total": 30})
    real = rt.processor.handle
    tries = []

    def handle(body):
        tries.append(body["event"]["messageId"])
        result = real(body)  # u2's event is written, then the message fails: its savepoint undoes it
        if body["event"]["messageId"] == "m-u2":
            raise RuntimeError("broken")
        return result

    monkeypatch.setattr(rt.processor, "handle", handle)
    seen = statements(rt)
    assert rt.work("ingest", 100) == 2
    assert tries == ["m-u1", "m-u2", "m-u1", "m-u2", "m-u3"]  # the batch ran again, message by message
    assert len([s for s in seen if s.startswith("SAVEPOINT")]) >= 3
    assert "processing a ingest message failed" in caplog.text
    assert orders(rt, "u1") == orders(rt, "u3") == 1  # applied once, the first run rolled back
    assert not orders(rt, "u2")
    u1 = rt.stores.profiles.resolve("user_id", "u1")
    assert [e.message_id for e in rt.stores.events.for_profile(u1) if e.event == "Order Completed"] == ["m-u1"]
    assert rt.stores.queue.depth("ingest") == 1  # u2's message stays, to be tried again

    monkeypatch.setattr(rt.processor, "handle", real)
    monkeypatch.setattr(rt.stores.queue, "time", lambda: time.time() + 120)  # past its visibility timeout
    assert rt.work("ingest", 100) == 1
    assert orders(rt, "u2") == 1 and rt.stores.queue.depth("ingest") == 0


def test_a_message_that_fails_once_goes_through_when_its_batch_runs_again(rt, monkeypatch, caplog):
    for user in ("u1", "u2"):
        customer(rt, user)
    for user in ("u1", "u2"):
        _queue(rt, "track", userId=user, messageId=f"t-{user}", event="Order Completed",
               properties={"order_id": f"o-{user}", "total": 30})
    real = rt.processor.handle
    failures = ["t-u2"]

    def handle(body):
        if body["event"]["messageId"] in failures:
            failures.remove(body["event"]["messageId"])
            raise OSError("a moment's trouble")
        return real(body)

    monkeypatch.setattr(rt.processor, "handle", handle)
    assert rt.work("ingest", 100) == 2
    assert orders(rt, "u1") == orders(rt, "u2") == 1
    assert rt.stores.queue.depth("ingest") == 0 and "failed" not in caplog.text
