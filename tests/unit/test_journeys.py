"""The journey engine and the send policy on the injected clock: no test sleeps."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.clock import iso
from chalicelib.errors import BadRequest
from chalicelib.events import parse_call, to_payload
from chalicelib.journey_model import load_journey
from chalicelib.plugin_api import CatalogItem, SendResult
from chalicelib.services.journeys import split_variant

_ids = itertools.count()


def emit(rt, kind, **body):
    body.setdefault("messageId", f"t-{next(_ids)}")
    body.setdefault("timestamp", iso(rt.clock.now()))
    call = parse_call(kind, body, rt.clock.now()).calls[0]
    rt.processor.handle({"source": "segment", "received_at": iso(rt.clock.now()), "event": to_payload(call)})
    rt.drain()


def later(rt, **delta):
    rt.clock.advance(timedelta(**delta))
    rt.drain()


def customer(rt, user="u1", **traits):
    traits = {"email": f"{user}@example.com", "first_name": "Ann", **traits}
    emit(rt, "identify", userId=user, traits=traits)


def steps(rt, status=None):
    return [(e.journey, e.step) for e in rt.stores.ledger.all() if status is None or e.status == status]


@pytest.fixture
def rt(rec_runtime):
    # only the journeys under test; the welcome series would use up the contact budget
    return rec_runtime(journeys={"disabled": ["welcome", "browse_abandonment", "price_drop"]})


CART = {"checkout_id": "c1", "checkout_url": "https://shop.example/checkout/c1",
        "products": [{"product_id": "p1", "name": "Organic tee", "price": 24, "quantity": 2}]}


def test_abandoned_cart_reminds_after_an_hour_and_stops_at_purchase(rt, outbox):
    customer(rt)
    emit(rt, "track", userId="u1", event="Checkout Started", properties=CART)
    later(rt, minutes=59)
    assert outbox.to("email") == []
    later(rt, minutes=2)
    [reminder] = outbox.to("email")
    assert reminder.subject == "You left something in your cart"
    text = rt.tracking.untracked(reminder.text)
    assert "Organic tee (24 EUR) x 2" in text and "checkout/c1" in text
    emit(rt, "track", userId="u1", event="Order Completed", properties={"checkout_id": "c1", "order_id": "o1",
                                                                        "total": 48})
    later(rt, days=2)
    assert ("abandoned_cart", "cart_offer") not in steps(rt)
    state = rt.stores.journeys.get(rt.stores.profiles.resolve("user_id", "u1"), "abandoned_cart", "c1")
    assert state.status == "exited" and "Order Completed" in state.data["exit_reason"]
    # the order confirmation is transactional and went out at once
    assert ("order_confirmation", "order_confirmed") in steps(rt, "sent")


def test_a_started_checkout_gets_the_cart_reminder_not_the_browse_nudge_too(rec_runtime, outbox):
    rt = rec_runtime(journeys={"disabled": ["welcome", "price_drop"]})
    for user in ("u1", "u2"):
        customer(rt, user)
        emit(rt, "track", userId=user, event="Product Viewed",
             properties={"product_id": "p1", "name": "Organic tee", "price": 24})
    emit(rt, "track", userId="u1", event="Checkout Started", properties=CART)  # u1 went on to the checkout
    later(rt, hours=5)
    sent = sorted((m.metadata["journey"], m.to) for m in outbox.to("email"))
    assert sent == [("abandoned_cart", "u1@example.com"), ("browse_abandonment", "u2@example.com")]
    [state] = [s for s in rt.stores.journeys.for_profile(rt.stores.profiles.resolve("user_id", "u1"))
               if s.journey == "browse_abandonment"]
    assert state.status == "exited" and "Checkout Started" in state.data["exit_reason"]


def test_paying_within_the_hour_sends_nothing(rt, outbox):
    customer(rt)
    emit(rt, "track", userId="u1", event="Checkout Started", properties=CART)
    later(rt, minutes=30)
    emit(rt, "track", userId="u1", event="Order Completed", properties={"checkout_id": "c1", "order_id": "o1"})
    later(rt, days=3)
    assert [s for s in steps(rt) if s[0] == "abandoned_cart"] == []


def test_another_carts_order_does_not_cancel_this_cart(rt, outbox):
    customer(rt)
    emit(rt, "track", userId="u1", event="Checkout Started", properties=CART)
    emit(rt, "track", userId="u1", event="Order Completed", properties={"checkout_id": "other", "order_id": "o9"})
    later(rt, hours=2)
    later(rt, hours=23)
    assert ("abandoned_cart", "cart_reminder") in steps(rt, "sent")
    assert ("abandoned_cart", "cart_offer") in steps(rt, "sent") + steps(rt, "deferred")


def test_duplicate_trigger_events_enter_once(rt, outbox):
    customer(rt)
    for i in range(3):
        emit(rt, "track", userId="u1", event="Checkout Started", properties=CART, messageId=f"dup-{i}")
    later(rt, hours=2)
    assert steps(rt).count(("abandoned_cart", "cart_reminder")) == 1
    assert len([m for m in outbox.to("email") if "cart" in m.subject]) == 1


def test_a_run_whose_first_step_waits_is_written_once_on_entry(rt, outbox):
    """The first write of a new run that starts by waiting is its entry (a conditional
    insert), not an insert and then an update of the same row."""
    customer(rt)
    store, writes = rt.stores.journeys, []
    for name in ("enter", "put"):
        original = getattr(store, name)

        def counted(state, _name=name, _original=original):
            if state.journey == "abandoned_cart":
                writes.append((_name, state.status))
            return _original(state)

        setattr(store, name, counted)
    emit(rt, "track", userId="u1", event="Checkout Started", properties=CART)
    assert writes == [("enter", "waiting_event")]


def test_a_run_stored_waiting_without_its_timer_gets_it_from_the_next_trigger(rt, outbox):
    """A crash between a run's first write and its timer (stores without transactions) is
    mended by the next trigger for the same run: the wait is written again, the timer once."""
    customer(rt)
    emit(rt, "track", userId="u1", event="Checkout Started", properties=CART)
    timers = [t for t in rt.stores.journeys.due(rt.clock.now() + timedelta(days=1)) if "abandoned_cart" in t.timer_id]
    assert len(timers) == 1
    rt.stores.journeys.take(timers[0].timer_id)  # as if the worker died before it wrote the timer
    emit(rt, "track", userId="u1", event="Checkout Started", properties=CART)
    emit(rt, "track", userId="u1", event="Checkout Started", properties=CART)
    again = [t for t in rt.stores.journeys.due(rt.clock.now() + timedelta(days=1)) if "abandoned_cart" in t.timer_id]
    assert [t.timer_id for t in again] == [timers[0].timer_id]
    later(rt, hours=2)
    assert steps(rt).count(("abandoned_cart", "cart_reminder")) == 1


def test_back_in_stock_fans_out_to_the_customers_who_asked(rt, outbox):
    rt.catalog.apply("shop", CatalogItem(product_id="p1", title="Organic tee", price=24, stock=0,
                                         status="active", url="https://shop.example/p1"), rt.clock.now())
    for user in ("u1", "u2"):
        customer(rt, user)
        emit(rt, "track", userId=user, event="Back In Stock Requested", properties={"product_id": "p1"})
    customer(rt, "u3")
    later(rt, days=1)
    assert outbox.to("email") == []
    rt.catalog.apply("shop", CatalogItem(product_id="p1", stock=12), rt.clock.now())
    rt.drain()
    notices = [m for m in outbox.to("email") if m.subject.startswith("Back in stock")]
    assert sorted(m.to for m in notices) == ["u1@example.com", "u2@example.com"]
    assert "https://shop.example/p1?utm_source=omnicast" in rt.tracking.untracked(notices[0].text)


def test_a_price_drop_goes_to_who_viewed_the_product_in_the_last_14_days(rec_runtime, outbox):
    """price_drop starts at the drop, for the product's recent viewers: a view writes one
    audience row (no run, no wait, no timer); a visitor who signed in since is reached as the
    customer; a viewer who has ordered since, one whose view is older than 14 days and one
    who viewed another product get nothing; a second drop within the re-entry window sends
    nothing again."""
    rt = rec_runtime(journeys={"disabled": ["welcome", "browse_abandonment"]})
    for pid, price in (("p1", 40), ("p2", 30)):
        rt.catalog.apply("shop", CatalogItem(product_id=pid, title=f"Tee {pid}", price=price, stock=5,
                                             status="active", url=f"https://shop.example/{pid}"), rt.clock.now())
    for user in ("old", "u1", "u2", "u3", "u4"):
        customer(rt, user)

    def view(user, product):
        emit(rt, "track", userId=user, event="Product Viewed", properties={"product_id": product})

    view("old", "p1")
    later(rt, days=10)
    view("u1", "p1")
    view("u1", "p1")  # viewed twice: one audience row, its time the latest view
    view("u2", "p1")
    emit(rt, "track", userId="u2", event="Order Completed", properties={"order_id": "o2", "total": 10})
    view("u3", "p2")
    emit(rt, "track", anonymousId="a5", event="Product Viewed", properties={"product_id": "p1"})
    customer(rt, "u5")
    emit(rt, "identify", userId="u5", anonymousId="a5")  # the visitor signs in: merged into u5
    later(rt, days=3)
    view("u4", "p1")
    later(rt, days=2)  # day 15: old's view is 15 days old
    profile = rt.stores.profiles.resolve("user_id", "u1")
    assert [s.journey for s in rt.stores.journeys.for_profile(profile)
            if s.journey == "price_drop"] == []  # no run per view
    assert not [t for t in rt.stores.journeys.due(rt.clock.now() + timedelta(days=30)) if "price_drop" in t.timer_id]
    assert len(rt.stores.journeys.for_profile("audience|price_drop|p1")) == 5  # old, u1, u2, a5, u4
    rt.catalog.apply("shop", CatalogItem(product_id="p1", price=32), rt.clock.now())
    rt.drain()
    drops = [m for m in outbox.to("email") if m.subject.startswith("Price drop")]
    # the anonymous visitor's view counts for the customer it became
    assert sorted(m.to for m in drops) == ["u1@example.com", "u4@example.com", "u5@example.com"]
    text = rt.tracking.untracked(drops[0].text)
    assert "Tee p1 is now 32" in text and "(was 40" in text and "https://shop.example/p1" in text
    [run] = [s for s in rt.stores.journeys.for_profile(profile) if s.journey == "price_drop"]
    assert run.status == "completed" and run.entity == "p1" and run.data["audience"].startswith("Product Viewed at")
    later(rt, days=1)
    rt.catalog.apply("shop", CatalogItem(product_id="p1", price=30), rt.clock.now())  # within re-entry: no more
    rt.catalog.apply("shop", CatalogItem(product_id="p2", price=30), rt.clock.now())  # no drop: no event
    rt.drain()
    assert len([m for m in outbox.to("email") if m.subject.startswith("Price drop")]) == 3


def test_an_audience_needs_a_catalog_event_and_an_entity():
    base = "name: j\nsteps: [{id: s, type: send, channel: email, template: t}]\n"
    with pytest.raises(BadRequest, match="an audience goes with a catalog event"):
        load_journey(base + "trigger: {event: Order Completed, entity: properties.order_id,"
                            " audience: {did: Product Viewed, within_days: 14}}")
    with pytest.raises(BadRequest, match="an audience needs the trigger's entity"):
        load_journey(base + "trigger: {event: Product Price Dropped, audience: {did: Product Viewed, within_days: 14}}")
    with pytest.raises(BadRequest, match="within_days"):
        load_journey(base + "trigger: {event: Product Price Dropped, entity: properties.product_id,"
                            " audience: {did: Product Viewed, within_days: 0}}")


def test_new_arrivals_in_a_followed_category_repeat(rt, outbox):
    customer(rt)
    emit(rt, "track", userId="u1", event="Category Followed", properties={"category": "Shoes"})
    for i, category in enumerate(["Shoes", "Hats", "Shoes"]):
        rt.catalog.apply("shop", CatalogItem(product_id=f"n{i}", title=f"New {i}", price=50, stock=5,
                                             status="active", categories=(category,)), rt.clock.now())
        later(rt, days=1)
    subjects = [m.subject for m in outbox.to("email")]
    assert subjects == ["New in Shoes", "New in Shoes"]


def test_quiet_hours_and_the_contact_budget_defer_marketing_but_not_transactional(rec_runtime, outbox):
    rt = rec_runtime(send_policy={"max_marketing_per_day": 1})
    rt.clock.set(datetime(2026, 3, 2, 23, 30, tzinfo=UTC))  # 23:30 in London: quiet hours
    customer(rt, timezone="Europe/London")
    emit(rt, "track", userId="u1", event="Order Completed", properties={"order_id": "o1", "total": 10})
    # the confirmation is transactional: sent at once, at night
    assert [e.step for e in rt.stores.ledger.all() if e.status == "sent"] == ["order_confirmed"]
    welcome = next(e for e in rt.stores.ledger.all() if e.step == "welcome_email")
    assert welcome.status == "deferred" and "quiet hours until 09:00 Europe/London" in welcome.reason
    later(rt, hours=9, minutes=31)  # 09:01 London
    assert next(e for e in rt.stores.ledger.all() if e.step == "welcome_email").status == "sent"
    emit(rt, "track", userId="u1", event="Checkout Started", properties=CART)
    later(rt, hours=2)
    reminder = next(e for e in rt.stores.ledger.all() if e.step == "cart_reminder")
    assert reminder.status == "deferred" and "contact budget (1 marketing messages a day)" in reminder.reason
    later(rt, hours=23)  # a day after the welcome e-mail: the budget has room again
    assert next(e for e in rt.stores.ledger.all() if e.step == "cart_reminder").status == "sent"
    sent_times = sorted(e.updated_at for e in rt.stores.ledger.all()
                        if e.status == "sent" and e.detail.get("purpose") == "marketing")
    assert all(b - a >= timedelta(days=1) for a, b in itertools.pairwise(sent_times))


def test_a_send_batch_reaches_the_channel_at_once_and_each_customers_budget_holds(rec_runtime, outbox):
    """The worker hands a queue batch's deliveries to the channel together; two messages for
    one customer run in turn, so the second sees the first in the budget, and the customers
    with one message go with the last turn (the one a drain may leave in flight)."""
    rt = rec_runtime(send_policy={"max_marketing_per_day": 1, "holdout_percent": 0},
                     journeys={"disabled": ["welcome", "browse_abandonment", "price_drop"]})
    for user in ("u1", "u2", "u3"):
        customer(rt, user, timezone="UTC")
    rt.clock.set(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    batches = []
    email = rt.channel("email")
    original = email.send_batch

    def recorded(messages):
        batches.append([m.to for m in messages])
        return original(messages)

    email.send_batch = recorded

    def task(user, step):
        return {"profile_id": rt.stores.profiles.resolve("user_id", user), "journey": "promo", "version": "1",
                "step": step, "entity": "-", "channel": "email", "fallback_channel": None, "template": "welcome",
                "purpose": "marketing", "priority": 5, "context": {}}

    for t in (task("u1", "first"), task("u1", "second"), task("u2", "first"), task("u3", "first")):
        rt.stores.queue.send("send", t)
    assert rt.work("send", 10) == 4
    assert batches == [["u1@example.com"], ["u2@example.com", "u3@example.com"]]  # u1's second: deferred
    status = {(e.profile_id, e.step): (e.status, e.reason) for e in rt.stores.ledger.all() if e.journey == "promo"}
    u1 = rt.stores.profiles.resolve("user_id", "u1")
    assert status[(u1, "first")][0] == "sent"
    assert status[(u1, "second")][0] == "deferred" and "contact budget" in status[(u1, "second")][1]
    assert sorted(m.to for m in outbox.to("email")) == ["u1@example.com", "u2@example.com", "u3@example.com"]


def test_a_drain_delivers_new_and_deferred_sends_together_the_deferred_first(rec_runtime, outbox):
    """The send tasks queued and the deferred sends now due go to the channel together
    (send_batch, spread over its connections); a customer's deferred send, which has waited
    longest, goes before their new one, which the budget then defers; a customer with one
    send goes with the last turn."""
    rt = rec_runtime(send_policy={"max_marketing_per_day": 1, "holdout_percent": 0},
                     journeys={"disabled": ["welcome", "browse_abandonment", "price_drop"]})
    for user in ("u1", "u2"):
        customer(rt, user, timezone="UTC")
    rt.clock.set(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))

    def task(user, step):
        return {"profile_id": rt.stores.profiles.resolve("user_id", user), "journey": "promo", "version": "1",
                "step": step, "entity": "-", "channel": "email", "fallback_channel": None, "template": "welcome",
                "purpose": "marketing", "priority": 5, "context": {}}

    rt.stores.queue.send("send", task("u1", "first"))
    rt.stores.queue.send("send", task("u1", "second"))  # over the budget: deferred by a day
    rt.drain()
    batches = []
    email = rt.channel("email")
    original = email.send_batch

    def recorded(messages):
        batches.append([(m.to, m.metadata["step"]) for m in messages])
        return original(messages)

    email.send_batch = recorded
    rt.clock.advance(timedelta(days=1, minutes=1))
    rt.stores.queue.send("send", task("u1", "third"))
    rt.stores.queue.send("send", task("u2", "first"))
    rt.drain()
    assert batches == [[("u1@example.com", "second")], [("u2@example.com", "first")]]  # u1's third: deferred
    status = {(e.profile_id, e.step): e.status for e in rt.stores.ledger.all() if e.journey == "promo"}
    u1 = rt.stores.profiles.resolve("user_id", "u1")
    assert status[(u1, "second")] == "sent" and status[(u1, "third")] == "deferred"


def test_a_send_that_fails_half_way_leaves_nothing_behind_and_goes_out_when_tried_again(rec_runtime, outbox):
    """A task that raises after its ledger claim (here: the renderer breaks) is rolled back
    to its savepoint: tried again, it is delivered, not taken for a duplicate."""
    rt = rec_runtime(send_policy={"holdout_percent": 0},
                     journeys={"disabled": ["welcome", "browse_abandonment", "price_drop"]})
    for user in ("u1", "u2"):
        customer(rt, user, timezone="UTC")
    rt.clock.set(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))

    def task(user):
        return {"profile_id": rt.stores.profiles.resolve("user_id", user), "journey": "promo", "version": "1",
                "step": "only", "entity": "-", "channel": "email", "fallback_channel": None, "template": "welcome",
                "purpose": "marketing", "priority": 5, "context": {}}

    sender = rt.sender
    render = sender.renderer.render

    def broken(template, context):
        if context["profile"].get("email") == "u1@example.com":
            raise RuntimeError("renderer broke")
        return render(template, context)

    sender.renderer.render = broken
    first = sender.handle_many([task("u1"), task("u2")])
    assert isinstance(first[0], RuntimeError) and first[1] == "sent"
    assert [e.profile_id for e in rt.stores.ledger.all() if e.journey == "promo"] == [task("u2")["profile_id"]]
    sender.renderer.render = render
    assert sender.handle_many([task("u1")]) == ["sent"]
    assert sorted(m.to for m in outbox.to("email")) == ["u1@example.com", "u2@example.com"]


def test_a_wave_left_in_flight_is_recorded_as_of_its_drain_before_the_next_one_sends(make_runtime, smtp_server):
    """drain(leave_sends_in_flight=True): the hour's mail goes to the SMTP server while the
    workers go on (the simulator takes the next hour's events meanwhile). Every decision was
    taken at the drain; the next drain records the wave (as of its drain's time, the Date the
    mail bears) before it sends, so the contact budget of its sends sees it."""
    import threading
    from email.utils import parsedate_to_datetime

    rt = make_runtime(smtp_server, send_policy={"max_marketing_per_day": 1, "holdout_percent": 0},
                      journeys={"disabled": ["welcome", "browse_abandonment", "price_drop"]})
    customer(rt, "u1", timezone="UTC")
    rt.clock.set(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    u1 = rt.stores.profiles.resolve("user_id", "u1")

    def task(step):
        return {"profile_id": u1, "journey": "promo", "version": "1", "step": step, "entity": "-",
                "channel": "email", "fallback_channel": None, "template": "welcome", "purpose": "marketing",
                "priority": 5, "context": {}}

    email, gate = rt.channel("email"), threading.Event()
    original = email.send_batch

    def held_back(messages):
        assert gate.wait(10)
        return original(messages)

    email.send_batch = held_back
    rt.stores.queue.send("send", task("first"))
    rt.drain(leave_sends_in_flight=True)
    status = {e.step: e.status for e in rt.stores.ledger.all() if e.journey == "promo"}
    assert status == {"first": "sending"} and smtp_server.messages == []  # with the channel still
    rt.clock.advance(timedelta(hours=1))
    gate.set()
    rt.stores.queue.send("send", task("second"))  # over the day's budget once the first is recorded
    rt.drain()
    entries = {e.step: e for e in rt.stores.ledger.all() if e.journey == "promo"}
    assert entries["first"].status == "sent" and entries["second"].status == "deferred"
    assert entries["first"].updated_at == datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    ((_, _, mail),) = smtp_server.messages
    assert parsedate_to_datetime(mail["Date"]).replace(tzinfo=UTC) == datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    assert rt.stores.queue.depth("send") == 0 and rt.delivered == 1


def test_a_drain_up_to_a_queue_position_leaves_the_calls_sent_after_it(rt):
    """The simulator's API takes the next hour's calls while the workers drain this hour's."""
    def call(user):
        body = {"type": "identify", "userId": user, "messageId": f"m-{user}", "timestamp": iso(rt.clock.now()),
                "traits": {"email": f"{user}@example.com"}}
        payload = to_payload(parse_call("identify", body, rt.clock.now()).calls[0])
        rt.stores.queue.send("ingest", {"source": "segment", "received_at": iso(rt.clock.now()), "event": payload})

    call("early")
    mark = rt.stores.queue.position("ingest")
    call("late")
    assert rt.drain(ingest_up_to=mark).ingested == 1
    assert rt.stores.profiles.resolve("user_id", "early") and rt.stores.profiles.resolve("user_id", "late") is None
    assert rt.drain().ingested == 1 and rt.stores.profiles.resolve("user_id", "late")


def test_two_threads_delivering_batches_at_once_each_send_their_own(rec_runtime, outbox):
    """The local stack's send worker and its timer thread share one send service: a batch
    collected on one thread never picks up (or loses) the other's deliveries."""
    import contextlib
    import threading

    rt = rec_runtime(send_policy={"holdout_percent": 0},
                     journeys={"disabled": ["welcome", "browse_abandonment", "price_drop"]})
    for user in ("u1", "u2"):
        customer(rt, user, timezone="UTC")
    rt.clock.set(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    sender = rt.sender
    # on SQLite a thread's collecting holds the database (one transaction a wave); on stores
    # without transactions (DynamoDB) both threads collect at once, as here
    sender.transaction = contextlib.nullcontext
    both_collecting = threading.Barrier(2, timeout=10)
    original_handle = sender.handle

    def handle(task):
        both_collecting.wait()  # each thread has begun its batch before either collects a delivery
        return original_handle(task)

    sender.handle = handle
    batches, outcomes = [], {}
    email = rt.channel("email")
    original_batch = email.send_batch

    def recorded(messages):
        batches.append(sorted(m.to for m in messages))
        return original_batch(messages)

    email.send_batch = recorded

    def deliver(user):
        task = {"profile_id": rt.stores.profiles.resolve("user_id", user), "journey": "promo", "version": "1",
                "step": "only", "entity": "-", "channel": "email", "fallback_channel": None, "template": "welcome",
                "purpose": "marketing", "priority": 5, "context": {}}
        outcomes[user] = sender.handle_many([task])

    threads = [threading.Thread(target=deliver, args=(u,)) for u in ("u1", "u2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert outcomes == {"u1": ["sent"], "u2": ["sent"]}
    assert sorted(batches) == [["u1@example.com"], ["u2@example.com"]]


def test_fallback_channel_and_no_sms_marketing_without_opt_in(rt, outbox):
    emit(rt, "identify", userId="p1", traits={"phone": "+14155552671"})  # no e-mail
    emit(rt, "track", userId="p1", event="Order Completed", properties={"order_id": "o1", "total": 5})
    [sms] = outbox.to("sms")
    assert sms.to == "+14155552671" and "o1" in sms.text
    entry = next(e for e in rt.stores.ledger.all() if e.step == "order_confirmed")
    assert entry.channel == "sms" and "fallback: email: no email on the profile" in entry.reason
    emit(rt, "track", userId="p1", event="Checkout Started", properties=CART)
    later(rt, hours=2)
    cart = next(e for e in rt.stores.ledger.all() if e.step == "cart_reminder")
    assert cart.status == "skipped" and "no SMS marketing opt-in" in cart.reason


def test_retryable_failures_retry_with_backoff_and_then_give_up(rt, outbox):
    outbox.fail_next = [SendResult.failed("429 slow down", retryable=True, retry_after=30),
                        SendResult.failed("503", retryable=True)]
    customer(rt)
    emit(rt, "track", userId="u1", event="Order Completed", properties={"order_id": "o1"})
    entry = next(e for e in rt.stores.ledger.all() if e.step == "order_confirmed")
    assert entry.status == "retry_wait"
    later(rt, seconds=31)
    assert next(e for e in rt.stores.ledger.all() if e.step == "order_confirmed").status == "retry_wait"
    later(rt, minutes=2)
    final = next(e for e in rt.stores.ledger.all() if e.step == "order_confirmed")
    assert final.status == "sent" and final.detail["attempt"] == 3
    outbox.fail_next = [SendResult.failed("550 no such user", retryable=False)]
    emit(rt, "track", userId="u1", event="Order Completed", properties={"order_id": "o2"})
    failed = [e for e in rt.stores.ledger.all() if e.status == "failed"]
    assert len(failed) == 1 and "550" in failed[0].reason


def test_in_flight_customers_stay_on_the_version_they_entered(rt, outbox):
    v1 = load_journey("""
name: nurture
version: "1"
trigger: {event: Signed Up}
steps:
  - {id: first, type: send, channel: email, template: welcome, purpose: transactional}
  - {id: pause, type: wait, days: 1}
  - {id: second, type: send, channel: email, template: welcome_tips, purpose: transactional}
""")
    rt.journeys.registry.add(v1)
    customer(rt)
    emit(rt, "track", userId="u1", event="Signed Up")
    v2 = v1.model_copy(update={"version": "2", "steps": v1.steps[:2]})  # v2 drops the second e-mail
    rt.journeys.registry.add(v2)
    customer(rt, "u2")
    emit(rt, "track", userId="u2", event="Signed Up")
    later(rt, days=2)
    tips = [m.to for m in outbox.to("email") if "regulars" in m.subject]
    assert tips == ["u1@example.com"]


def test_events_no_journey_awaits_read_no_journey_state_and_a_new_version_is_heard(rt, outbox):
    """Page views are most of a shop's events: they neither end nor wake a run, so the live
    states are not read for them; a journey added later that exits on them is obeyed."""
    reads = []
    store = rt.journeys.store
    original = store.for_profile

    def counted(*args, **kwargs):
        reads.append(args)
        return original(*args, **kwargs)

    store.for_profile = counted
    customer(rt)
    emit(rt, "track", userId="u1", event="Checkout Started", properties=CART)
    reads.clear()
    emit(rt, "track", userId="u1", event="Page Browsed")
    assert reads == []
    rt.journeys.registry.add(load_journey("""
name: browse_watch
trigger: {event: Never Sent}
exit_on: [{event: Page Browsed}]
steps:
  - {id: hello, type: send, channel: email, template: welcome, purpose: transactional}
"""))
    emit(rt, "track", userId="u1", event="Page Browsed")
    assert len(reads) == 1
    # an awaited event still ends the run it should
    emit(rt, "track", userId="u1", event="Order Completed", properties={"checkout_id": "c1", "order_id": "o1"})
    state = store.get(rt.stores.profiles.resolve("user_id", "u1"), "abandoned_cart", "c1")
    assert state.status == "exited"


def test_split_is_deterministic_and_roughly_balanced():
    picks = [split_variant(f"p{i}", "promo", "ab", {"a": 50, "b": 50}) for i in range(2000)]
    assert picks == [split_variant(f"p{i}", "promo", "ab", {"a": 50, "b": 50}) for i in range(2000)]
    assert 900 < picks.count("a") < 1100


def test_date_trigger_appointment_reminder_24_hours_before(rt, outbox):
    appointment = rt.clock.now() + timedelta(days=3)
    emit(rt, "identify", userId="u1", traits={"phone": "+14155552671", "email": "u1@example.com",
                                               "appointment_at": iso(appointment)})
    later(rt, days=1, hours=23)
    assert outbox.to("sms") == []
    later(rt, hours=2)
    [sms] = outbox.to("sms")
    assert "appointment" in sms.text


def test_branch_and_update_profile(rt, outbox):
    journey = load_journey("""
name: vip_check
trigger: {event: Order Completed}
reentry: always
steps:
  - {id: vip, type: branch, if: {computed: orders_count, op: ">=", value: 2}, then: tag, else: end}
  - {id: tag, type: update_profile, set: {vip: true, vip_since: "{{now}}"}}
""")
    rt.journeys.registry.add(journey)
    customer(rt)
    emit(rt, "track", userId="u1", event="Order Completed", properties={"order_id": "a"})
    profile_id = rt.stores.profiles.resolve("user_id", "u1")
    assert "vip" not in rt.stores.profiles.get(profile_id).traits
    emit(rt, "track", userId="u1", event="Order Completed", properties={"order_id": "b"})
    assert rt.stores.profiles.get(profile_id).traits["vip"] is True


def test_journey_definitions_are_validated_with_line_and_field():
    with pytest.raises(BadRequest) as err:
        load_journey("name: x\ntrigger: {event: A}\nsteps:\n  - {id: s, type: send, chanel: email, template: t}\n",
                     "x.yaml")
    assert err.value.message.startswith("x.yaml:4: steps.0.chanel: unknown field")
    with pytest.raises(BadRequest, match="goes to unknown step 'nowhere'"):
        load_journey({"name": "x", "trigger": {"event": "A"},
                      "steps": [{"id": "b", "type": "branch", "if": {"trait": "a"}, "then": "nowhere"}]})


def test_provider_throttle_defers_instead_of_dropping(rec_runtime, outbox):
    rt = rec_runtime(journeys={"disabled": ["welcome"]}, send_policy={"provider_rate_per_second": {"rec_email": 2}})
    for i in range(5):
        customer(rt, f"t{i}")
        emit(rt, "track", userId=f"t{i}", event="Order Completed", properties={"order_id": f"o{i}"})
    statuses = sorted(e.status for e in rt.stores.ledger.all() if e.step == "order_confirmed")
    assert statuses.count("sent") == 2 and statuses.count("deferred") == 3
    deferred = next(e for e in rt.stores.ledger.all() if e.status == "deferred")
    assert "provider throttle (2/s on rec_email)" in deferred.reason
    for _ in range(3):  # each moment the bucket refills, two more go
        later(rt, seconds=30)
    assert all(e.status == "sent" for e in rt.stores.ledger.all() if e.step == "order_confirmed")
    assert len(outbox.to("email")) == 5


def test_a_scheduled_broadcast_starts_at_its_time(rt, outbox):
    for i in range(3):
        customer(rt, f"b{i}", timezone="Europe/Paris")
    at = rt.clock.now() + timedelta(days=2)
    rt.authoring.save_journey(f"""
name: black_friday
trigger: {{broadcast: true, segment: subscribers, at: "{iso(at)}"}}
reentry: once
steps:
  - {{id: promo, type: send, channel: email, template: promotion_a}}
""")
    later(rt, days=1)
    assert not [m for m in outbox.to("email") if "20% off" in m.subject]
    later(rt, days=1, minutes=1)
    assert len([m for m in outbox.to("email") if "20% off" in m.subject]) == 3
    with pytest.raises(BadRequest, match="at schedules a broadcast"):
        load_journey({"name": "x", "trigger": {"event": "A", "at": iso(at)},
                      "steps": [{"id": "s", "type": "exit"}]})
