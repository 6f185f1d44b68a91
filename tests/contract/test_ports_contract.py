"""The behaviour every adapter set must have, as the docstrings in chalicelib/ports.py say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.ports import JourneyState, LedgerEntry, Product, Profile, StoredEvent, Timer

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
BIG = 2**53 + 1


def event(mid="m1", source="segment", ts=T0, **kw):
    return StoredEvent(message_id=mid, type="track", profile_id=None, received_at=T0, timestamp=ts,
                       event="Order Completed", source=source, payload={"order_id": BIG, "mid": mid}, **kw)


def test_events_deduplicate_on_source_and_message_id(stores):
    assert stores.events.append(event()) is True
    assert stores.events.append(event()) is False
    assert stores.events.append(event(source="shopify")) is True  # another source, another event
    assert stores.events.count() == 2
    stored = stores.events.get("segment", "m1")
    assert stored.payload["order_id"] == BIG and type(stored.payload["order_id"]) is int
    assert stored.processed is False and stores.events.get("segment", "nope") is None


def test_events_page_by_source(stores):
    for i in range(5):
        stores.events.append(event(f"m{i}", source="raw:shop"))
    stores.events.append(event("other", source="segment"))
    first = stores.events.by_source("raw:shop", limit=3)
    assert [e.message_id for e in first] == ["m0", "m1", "m2"]
    assert [e.message_id for e in stores.events.by_source("raw:shop", after="m2")] == ["m3", "m4"]
    for i in range(4):
        stores.events.append(StoredEvent(message_id=f"v{i}", type="track", profile_id=None, received_at=T0,
                                         timestamp=T0, event="Product Viewed", source="raw:shop", payload={}))
    orders = stores.events.by_source("raw:shop", limit=3, events={"Order Completed", "Email Opened"})
    assert [e.message_id for e in orders] == ["m0", "m1", "m2"]  # a page of the names asked for
    assert [e.message_id for e in stores.events.by_source("raw:shop", after="m2", events={"Order Completed"})] == [
        "m3", "m4"]
    assert [e.message_id for e in stores.events.by_source("raw:shop", events={"Product Viewed"})] == [
        "v0", "v1", "v2", "v3"]
    assert stores.events.by_source("raw:shop", events=set()) == []


def test_processed_events_are_listed_per_profile_in_time_order(stores):
    for i, minutes in enumerate([30, 10, 20]):
        stores.events.append(event(f"e{i}", ts=T0 + timedelta(minutes=minutes)))
        stores.events.mark_processed("segment", f"e{i}", "p1")
    stores.events.append(event("unprocessed"))
    assert [e.message_id for e in stores.events.for_profile("p1")] == ["e1", "e2", "e0"]
    assert all(e.processed and e.profile_id == "p1" for e in stores.events.for_profile("p1"))
    assert len(stores.events.for_profile("p1", limit=2)) == 2
    # since: at or after a time (a customer's events after a view: did they buy since?)
    assert [e.message_id for e in stores.events.for_profile("p1", since=T0 + timedelta(minutes=20))] == ["e2", "e0"]
    assert stores.events.for_profile("p1", since=T0 + timedelta(minutes=31)) == []


def test_profiles_save_with_optimistic_concurrency(stores):
    p = Profile("p1", traits={"email": "a@b.c", "n": BIG}, identifiers={"user_id": "u1"}, created_at=T0)
    assert stores.profiles.save(p, 0) and p.version == 1
    assert stores.profiles.save(Profile("p1"), 0) is False  # already exists
    a, b = stores.profiles.get("p1"), stores.profiles.get("p1")
    a.traits["x"], b.traits["x"] = "a", "b"
    assert stores.profiles.save(a, a.version) is True
    assert stores.profiles.save(b, b.version) is False  # two workers raced: exactly one won
    got = stores.profiles.get("p1")
    assert got.traits == {"email": "a@b.c", "n": BIG, "x": "a"} and got.version == 2
    assert got.created_at == T0 and stores.profiles.count() == 1


def test_profiles_scan_in_pages(stores):
    for i in range(7):
        stores.profiles.save(Profile(f"p{i}", traits={"i": i}), 0)
    seen, cursor = [], None
    for _ in range(20):
        page, cursor = stores.profiles.scan(cursor, limit=3)
        seen.extend(p.profile_id for p in page)
        if cursor is None:
            break
    assert sorted(seen) == [f"p{i}" for i in range(7)]
    assert all(p.traits == {"i": int(p.profile_id[1:])} for p in stores.profiles.scan(None, 10)[0])


def test_identifiers_link_first_wins(stores):
    assert stores.profiles.resolve("email", "a@b.c") is None
    assert stores.profiles.link("email", "a@b.c", "p1") is True
    assert stores.profiles.link("email", "a@b.c", "p1") is True  # already points there
    assert stores.profiles.link("email", "a@b.c", "p2") is False
    assert stores.profiles.resolve("email", "a@b.c") == "p1"


def entry(key, created=T0, **kw):
    base = dict(key=key, profile_id="p1", journey="welcome", step="s1", channel="email", status="sending",
                reason="passed consent", created_at=created, updated_at=created, detail={"a": 1})
    base.update(kw)
    return LedgerEntry(**base)


def test_ledger_claims_once_and_records_outcomes(stores):
    assert stores.ledger.claim(entry("k1")) is True
    assert stores.ledger.claim(entry("k1", status="sending")) is False
    stores.ledger.update("k1", status="sent", reason="sent: ok", at=T0 + timedelta(seconds=1),
                         provider_message_id="pm-1", detail={"b": 2})
    got = stores.ledger.get("k1")
    assert (got.status, got.reason, got.provider_message_id) == ("sent", "sent: ok", "pm-1")
    assert got.detail == {"a": 1, "b": 2} and got.updated_at == T0 + timedelta(seconds=1)
    stores.ledger.update("k1", status="sent", reason="sent: again", at=T0)
    assert stores.ledger.get("k1").provider_message_id == "pm-1"  # kept when not given


def test_ledger_finds_an_entry_by_provider_message_id(stores):
    stores.ledger.claim(entry("k3"))
    stores.ledger.claim(entry("k4", provider_message_id="SM-claimed"))
    assert stores.ledger.by_provider_message_id("SM-1") is None
    stores.ledger.update("k3", status="sent", reason="sent: ok", at=T0, provider_message_id="SM-1")
    found = stores.ledger.by_provider_message_id("SM-1")
    assert (found.key, found.status, found.provider_message_id) == ("k3", "sent", "SM-1")
    assert stores.ledger.by_provider_message_id("SM-claimed").key == "k4"
    stores.ledger.update("k3", status="sent", reason="sent: ok", at=T0, detail={"delivery": "delivered"})
    assert stores.ledger.by_provider_message_id("SM-1").detail == {"a": 1, "delivery": "delivered"}
    assert stores.ledger.by_provider_message_id("SM-2") is None


def test_ledger_transitions_are_conditional(stores):
    stores.ledger.claim(entry("k2", status="deferred"))
    assert stores.ledger.transition("k2", from_status="deferred", to_status="sending", at=T0) is True
    assert stores.ledger.transition("k2", from_status="deferred", to_status="sending", at=T0) is False
    assert stores.ledger.transition("missing", from_status="deferred", to_status="sending", at=T0) is False
    assert stores.ledger.get("k2").status == "sending"


def test_ledger_lists_per_profile_and_all_in_time_order(stores):
    stores.ledger.claim(entry("b", created=T0 + timedelta(minutes=2)))
    stores.ledger.claim(entry("a", created=T0 + timedelta(minutes=1)))
    stores.ledger.claim(entry("c", created=T0, profile_id="p2"))
    assert [e.key for e in stores.ledger.for_profile("p1")] == ["a", "b"]
    assert [e.key for e in stores.ledger.all()] == ["c", "a", "b"]
    assert [e.key for e in stores.ledger.all(limit=2)] == ["c", "a"]
    # the contact budget's read: only what was sent after a time (here the last hour)
    stores.ledger.claim(entry("d", created=T0 - timedelta(days=9)))
    stores.ledger.update("d", status="sent", reason="sent: late", at=T0 + timedelta(minutes=50))  # deferred long
    stores.ledger.update("a", status="sent", reason="sent: ok", at=T0 + timedelta(minutes=1))
    stores.ledger.update("b", status="failed", reason="failed: bounce", at=T0 + timedelta(minutes=55))
    since = T0 + timedelta(minutes=1)
    assert [e.key for e in stores.ledger.for_profile("p1", sent_after=since - timedelta(seconds=1))] == ["d", "a"]
    assert [e.key for e in stores.ledger.for_profile("p1", sent_after=since)] == ["d"]  # strictly after
    assert stores.ledger.for_profile("p2", sent_after=T0 - timedelta(days=30)) == []


def state(entity="-", **kw):
    base = dict(profile_id="p1", journey="cart", entity=entity, version="1", step="s1", status="active",
                entered_at=T0, data={"n": BIG})
    base.update(kw)
    return JourneyState(**base)


def test_journey_states_enter_once_and_update(stores):
    assert stores.journeys.enter(state("c1")) is True
    assert stores.journeys.enter(state("c1", step="other")) is False
    s = stores.journeys.get("p1", "cart", "c1")
    assert s.step == "s1" and s.data == {"n": BIG}
    s.status, s.step = "waiting", "s2"
    stores.journeys.put(s)
    assert stores.journeys.get("p1", "cart", "c1").status == "waiting"
    stores.journeys.enter(state("c2", entered_at=T0 + timedelta(hours=1)))
    assert [x.entity for x in stores.journeys.for_profile("p1")] == ["c1", "c2"]
    assert stores.journeys.get("p1", "cart", "nope") is None


def test_journey_states_by_journey_and_status(stores):
    stores.journeys.enter(state("c1", status="exited"))
    stores.journeys.enter(state("c2", status="waiting", entered_at=T0 + timedelta(hours=1)))
    stores.journeys.enter(state("-", journey="cart_offer", entered_at=T0 + timedelta(hours=2)))  # a prefix name
    stores.journeys.enter(state("-", journey="welcome", profile_id="p2"))
    assert [(x.journey, x.entity) for x in stores.journeys.for_profile("p1", journey="cart")] == [
        ("cart", "c1"), ("cart", "c2")]
    assert [(x.journey, x.entity) for x in stores.journeys.for_profile("p1", statuses=("active", "waiting"))] == [
        ("cart", "c2"), ("cart_offer", "-")]
    assert [x.entity for x in stores.journeys.for_profile("p1", journey="cart", statuses=("exited",))] == ["c1"]
    assert stores.journeys.for_profile("p1", journey="nope") == []


def test_last_run_is_the_highest_numbered_run_of_the_entity(stores):
    for i, (entity, status) in enumerate([("-", "completed"), ("-#2", "completed"), ("-#10", "exited"),
                                          ("-#9", "completed"), ("c1", "waiting"), ("c1x", "active")]):
        stores.journeys.enter(state(entity, status=status, entered_at=T0 + timedelta(hours=i)))
    stores.journeys.enter(state("-#11", journey="cart_offer"))  # another journey whose name shares a prefix
    last = stores.journeys.last_run("p1", "cart", "-")
    assert (last.entity, last.status) == ("-#10", "exited")
    assert stores.journeys.last_run("p1", "cart", "c1").entity == "c1"  # "c1x" is another entity
    assert stores.journeys.last_run("p1", "cart", "c9") is None
    assert stores.journeys.last_run("p2", "cart", "-") is None
    # neighbours of an entity in the key's order: "c2!", "c2$" and "c20" are not runs of "c2"
    for entity in ("c2", "c2#3", "c2!", "c2$", "c20", "c2#4"):
        stores.journeys.enter(state(entity, status="completed"))
    assert stores.journeys.last_run("p1", "cart", "c2").entity == "c2#4"
    assert stores.journeys.last_run("p1", "cart", "c2!").entity == "c2!"
    assert stores.journeys.last_run("p1", "cart", "c2$").entity == "c2$"


def test_timers_fire_once_in_due_order(stores):
    for i, minutes in enumerate([5, 1, 3, 10]):
        assert stores.journeys.schedule(Timer(f"t{i}", T0 + timedelta(minutes=minutes), {"i": i})) is True
    assert stores.journeys.schedule(Timer("t0", T0, {"i": 99})) is False
    due = stores.journeys.due(T0 + timedelta(minutes=5))
    assert [t.timer_id for t in due] == ["t1", "t2", "t0"]
    assert due[0].payload == {"i": 1}
    assert [t.timer_id for t in stores.journeys.due(T0 + timedelta(minutes=5), limit=2)] == ["t1", "t2"]
    assert stores.journeys.take("t1") is True
    assert stores.journeys.take("t1") is False  # a second worker gets nothing
    assert [t.timer_id for t in stores.journeys.due(T0 + timedelta(hours=1))] == ["t2", "t0", "t3"]


def test_queue_at_least_once_with_visibility(stores):
    q = stores.queue
    q.send("test", {"n": 1, "big": BIG})
    [m] = q.receive("test", max_messages=10, visibility_seconds=60)
    assert m.body == {"n": 1, "big": BIG} and m.receive_count == 1
    assert q.receive("test", visibility_seconds=60) == []  # in flight: invisible
    q.ack("test", m.receipt)
    assert q.depth("test") == 0


def test_unacknowledged_messages_come_back(stores):
    q = stores.queue
    q.send("test", {"n": 2})
    first = q.receive("test", visibility_seconds=0)  # a worker that dies straight away
    assert len(first) == 1
    again = q.receive("test", visibility_seconds=60)
    assert [m.body for m in again] == [{"n": 2}] and again[0].receive_count == 2


def test_queue_batches_beyond_one_sqs_batch(stores):
    stores.queue.send_batch("test", [{"i": i} for i in range(25)])
    seen = []
    for _ in range(10):
        got = stores.queue.receive("test", max_messages=10, visibility_seconds=60)
        for m in got:
            seen.append(m.body["i"])
            stores.queue.ack("test", m.receipt)
        if len(seen) == 25:
            break
    assert sorted(seen) == list(range(25))


def test_a_receive_up_to_a_local_queue_position_leaves_what_was_sent_after_it(stores):
    """The simulator's workers take one hour's calls while its API queues the next hour's."""
    q = stores.queue
    if not hasattr(q, "position"):  # SQS has no positions: asking for one is a mistake, said so
        with pytest.raises(NotImplementedError, match="no positions"):
            q.receive("test", up_to=1)
        return
    assert q.position("test") == 0
    q.send_batch("test", [{"n": 1}, {"n": 2}])
    mark = q.position("test")
    q.send("test", {"n": 3})
    q.send("other", {"n": 9})
    assert q.position("other") > q.position("test") > mark
    got = q.receive("test", max_messages=10, visibility_seconds=60, up_to=mark)
    assert [m.body["n"] for m in got] == [1, 2]
    assert q.receive("test", max_messages=10, up_to=mark) == []
    assert [m.body["n"] for m in q.receive("test", max_messages=10)] == [3]


def test_blobs(stores):
    b = stores.blobs
    b.put("raw/a/1.json", b'{"a":1}', content_type="application/json")
    b.put("raw/a/2.json", b"2")
    b.put("raw/b/1.json", b"3")
    assert b.get("raw/a/1.json") == b'{"a":1}' and b.get("raw/none") is None
    assert b.list("raw/a/") == ["raw/a/1.json", "raw/a/2.json"]
    assert len(b.list()) == 3
    b.delete("raw/a/1.json")
    assert b.get("raw/a/1.json") is None and b.list("raw/a/") == ["raw/a/2.json"]


def test_secrets(stores):
    s = stores.secrets
    s.put("webhook_secrets/shopify/1", "one")
    s.put("webhook_secrets/shopify/2", "two")
    s.put("write_keys/abc", "{}")
    assert s.get("webhook_secrets/shopify/1") == "one" and s.get("nope") is None
    assert s.names("webhook_secrets/shopify/") == ["webhook_secrets/shopify/1", "webhook_secrets/shopify/2"]
    s.put("webhook_secrets/shopify/1", "changed")
    assert s.get("webhook_secrets/shopify/1") == "changed"
    s.delete("webhook_secrets/shopify/1")
    assert s.get("webhook_secrets/shopify/1") is None
    assert s.names("webhook_secrets/") == ["webhook_secrets/shopify/2"]


def test_catalog(stores):
    c = stores.catalog
    c.put(Product("p1", "v2", title="Tee L", price=20.0, stock=0, categories=["Tops"], updated_at=T0))
    c.put(Product("p1", "v1", title="Tee M", price=20.0, stock=3))
    c.put(Product("p2", "-", title="Mug"))
    assert c.get("p1", "v2").categories == ["Tops"] and c.get("p1", "v2").updated_at == T0
    assert [p.variant_id for p in c.variants("p1")] == ["v1", "v2"]
    c.put(Product("p1", "v1", title="Tee M", price=18.0, stock=0))
    assert c.get("p1", "v1").price == 18.0 and c.get("nope", "-") is None
    assert [(p.product_id, p.variant_id) for p in c.all()] == [("p1", "v1"), ("p1", "v2"), ("p2", "-")]
