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
    caplog.set_level("INFO", logger="omnicast.batches")
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
    assert "a batch runs again, a savepoint per unit (a unit raised OSError)" in caplog.text


def test_a_wave_of_sends_takes_savepoints_only_when_a_send_fails(rec_runtime, outbox):
    from datetime import UTC, datetime

    rt = rec_runtime(send_policy={"holdout_percent": 0},
                     journeys={"disabled": ["welcome", "browse_abandonment", "price_drop"]})
    for user in ("u1", "u2", "u3", "u4"):
        customer(rt, user, timezone="UTC")
    rt.clock.set(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))

    def task(user, step="only"):
        return {"profile_id": rt.stores.profiles.resolve("user_id", user), "journey": "promo", "version": "1",
                "step": step, "entity": "-", "channel": "email", "fallback_channel": None, "template": "welcome",
                "purpose": "transactional", "priority": 5, "context": {}}

    seen = statements(rt)
    assert rt.sender.handle_many([task("u1"), task("u2")]) == ["sent", "sent"]
    assert not [s for s in seen if s.startswith("SAVEPOINT")]

    render = rt.sender.renderer.render

    def broken(template, context):
        if context["profile"].get("email") == "u3@example.com":
            raise RuntimeError("renderer broke")
        return render(template, context)

    rt.sender.renderer.render = broken
    seen.clear()
    first = rt.sender.handle_many([task("u3"), task("u4")])
    assert isinstance(first[0], RuntimeError) and first[1] == "sent"
    assert len([s for s in seen if s.startswith("SAVEPOINT")]) == 2  # the wave ran again, a savepoint each
    sent = sorted(m.to for m in outbox.to("email"))
    assert sent == ["u1@example.com", "u2@example.com", "u4@example.com"]  # u4's once
    u3 = rt.stores.profiles.resolve("user_id", "u3")
    assert not [e for e in rt.stores.ledger.all() if e.profile_id == u3 and e.journey == "promo"]
