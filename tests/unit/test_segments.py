"""Segments: membership follows events, enter/exit are events, previews agree with evaluation."""

from __future__ import annotations

from datetime import timedelta

import pytest

from chalicelib.errors import BadRequest
from chalicelib.ports import Profile
from chalicelib.services.rules import Facts, evaluate, parse_rule
from tests.unit.test_journeys import customer, emit, later


@pytest.fixture
def rt(rec_runtime):
    return rec_runtime(journeys={"disabled": ["welcome", "browse_abandonment", "price_drop"]})


def segments_of(rt, user):
    return rt.stores.profiles.get(rt.stores.profiles.resolve("user_id", user)).traits.get("_segments")


def test_membership_updates_as_events_arrive_and_entering_is_an_event(rt):
    customer(rt)
    assert segments_of(rt, "u1") == ["subscribers"]
    emit(rt, "track", userId="u1", event="Order Completed", properties={"order_id": "o1", "total": 600})
    assert segments_of(rt, "u1") == ["customers", "subscribers", "vip"]
    pid = rt.stores.profiles.resolve("user_id", "u1")
    entered = [e.payload["properties"]["segment"] for e in rt.stores.events.for_profile(pid)
               if e.event == "Segment Entered"]
    assert entered == ["subscribers", "customers", "vip"]


def test_time_alone_moves_customers_and_the_sweep_starts_win_back(rt, outbox):
    customer(rt)
    emit(rt, "track", userId="u1", event="Order Completed", properties={"order_id": "o1", "total": 20})
    later(rt, days=89)
    assert rt.segments.sweep() == 0
    later(rt, days=2)
    assert rt.segments.sweep() == 1
    rt.drain()
    assert "lapsed_customers" in segments_of(rt, "u1")
    assert any(m.subject.startswith("We miss you") for m in outbox.to("email"))
    emit(rt, "track", userId="u1", event="Order Completed", properties={"order_id": "o2", "total": 20})
    assert "lapsed_customers" not in segments_of(rt, "u1")  # an order brings them back at once
    pid = rt.stores.profiles.resolve("user_id", "u1")
    assert any(e.event == "Segment Exited" for e in rt.stores.events.for_profile(pid))


def test_custom_segments_are_validated_saved_and_reloaded(rt):
    with pytest.raises(BadRequest, match=r"rule\.all\[0\]"):
        rt.segments.save({"name": "bad", "rule": {"all": [{"trate": "x"}]}})
    rt.segments.save({"name": "big_spenders", "rule": {"computed": "total_spent", "op": ">", "value": 100}})
    from chalicelib.services.segments import SegmentService

    again = SegmentService(rt.stores.profiles, rt.stores.events, rt.stores.blobs, rt.clock)
    assert "big_spenders" in again.segments


RULES = [
    {"trait": "country", "op": "=", "value": "FR"},
    {"all": [{"computed": "orders_count", "op": ">=", "value": 2}, {"consent": "email"}]},
    {"any": [{"computed": "total_spent", "op": ">", "value": 300}, {"not": {"trait": "email", "op": "exists"}}]},
    {"computed": "days_since_last_order", "op": ">=", "value": 30},
    {"all": [{"trait": "tier", "op": "in", "value": ["gold", "silver"]}, {"consent": "sms"}]},
]


@pytest.mark.parametrize("rule", RULES)
def test_sql_preview_agrees_with_evaluation(rt, rule):
    now = rt.clock.now()
    for i in range(60):
        traits = {"country": ["FR", "DE", "US"][i % 3], "orders_count": i % 4, "total_spent": i * 10.0,
                  "tier": ["gold", "silver", "bronze"][i % 3]}
        if i % 5:
            traits["email"] = f"p{i}@example.com"
        if i % 7 == 0:
            traits["consent"] = {"email": "unsubscribed", "sms": "subscribed"}
            traits["phone"] = "+14155552671"
        if i % 4:
            traits["last_order_at"] = (now - timedelta(days=i)).isoformat().replace("+00:00", "Z")
        rt.stores.profiles.save(Profile(f"p{i:02d}", traits=traits), 0)
    preview = rt.segments.preview(rule, sample=5)
    parsed = parse_rule(rule)
    expected = sorted(p.profile_id for p in rt.stores.profiles.scan(None, 1000)[0]
                      if evaluate(parsed, Facts(p, [], {}, now)))
    assert preview.method == "sql" and preview.count == len(expected) and preview.count > 0
    assert set(preview.sample) <= set(expected)


def test_event_rules_fall_back_to_a_scan(rt):
    customer(rt)
    emit(rt, "track", userId="u1", event="Product Viewed", properties={"product_id": "p1"})
    preview = rt.segments.preview({"event": "Product Viewed", "within_days": 7})
    assert preview.method == "scan" and preview.count == 1


def test_a_profile_just_saved_is_evaluated_as_it_is_and_a_stale_one_is_read_again(rt, monkeypatch):
    """The worker hands segment evaluation the profile it has just saved (one read less); the
    store takes it only if it was saved in the write transaction still open and not since."""
    customer(rt)
    pid = rt.stores.profiles.resolve("user_id", "u1")
    store = rt.stores.profiles
    reads = []
    real_get = store.get
    monkeypatch.setattr(store, "get", lambda profile_id: reads.append(profile_id) or real_get(profile_id))
    with rt.stores.transaction():
        mine = real_get(pid)
        mine.traits["total_spent"] = 600.0
        assert store.save(mine, mine.version) and store.unchanged(mine)
        assert rt.segments.update(pid, mine) == ({"vip"}, set())
        assert reads == []  # taken as it was saved
        stale = real_get(pid)
        other = real_get(pid)
        other.traits["total_spent"] = 5.0  # someone else in the same transaction saves it again
        assert store.save(other, other.version)
        assert not store.unchanged(stale)
        assert rt.segments.update(pid, stale) == (set(), {"vip"})  # evaluated as stored, not as handed
        assert reads == [pid]
    assert not store.unchanged(other)  # the transaction is over: another process may write now
    assert segments_of(rt, "u1") == ["subscribers"]


def _queue(rt, kind, **body):
    from chalicelib.clock import iso
    from chalicelib.events import parse_call, to_payload

    body.setdefault("timestamp", iso(rt.clock.now()))
    payload = to_payload(parse_call(kind, body, rt.clock.now()).calls[0])
    rt.stores.queue.send("ingest", {"source": "segment", "received_at": iso(rt.clock.now()), "event": payload})


def test_a_batch_re_evaluates_each_profile_once_at_its_end(rt, monkeypatch):
    """A visit's events come together: in a worker's batch, each profile's segments are
    evaluated once, after its last event, in the batch's commit; membership is as if after each."""
    customer(rt, "u1")
    customer(rt, "u2")
    evaluated = []
    real_update = rt.segments.update
    monkeypatch.setattr(rt.segments, "update",
                        lambda pid, profile=None: evaluated.append(pid) or real_update(pid, profile))
    for n in range(3):
        _queue(rt, "track", userId="u1", messageId=f"b-u1-{n}", event="Order Completed",
               properties={"order_id": f"o{n}", "total": 250})
    _queue(rt, "track", userId="u2", messageId="b-u2", event="Product Viewed", properties={"product_id": "p1"})
    assert rt.work("ingest", 100) == 4
    ids = {user: rt.stores.profiles.resolve("user_id", user) for user in ("u1", "u2")}
    assert evaluated == [ids["u1"], ids["u2"]]
    assert segments_of(rt, "u1") == ["customers", "subscribers", "vip"]  # 750 spent over three orders
    entered = [e.payload["properties"]["segment"] for e in rt.stores.events.for_profile(ids["u1"])
               if e.event == "Segment Entered"]
    assert entered == ["subscribers", "customers", "vip"]


def test_a_failed_re_evaluation_after_a_batch_loses_none_of_its_events(rt, monkeypatch, caplog):
    customer(rt, "u1")
    monkeypatch.setattr(rt.segments, "update", lambda pid, profile=None: 1 / 0)
    _queue(rt, "track", userId="u1", messageId="f-1", event="Order Completed",
           properties={"order_id": "o1", "total": 600})
    assert rt.work("ingest", 100) == 1
    assert "re-evaluating a profile's segments after a batch failed" in caplog.text
    assert rt.stores.queue.depth("ingest") == 0
    pid = rt.stores.profiles.resolve("user_id", "u1")
    assert rt.stores.profiles.get(pid).traits["orders_count"] == 1
    assert segments_of(rt, "u1") == ["subscribers"]  # as it was, until the next event or the sweep
