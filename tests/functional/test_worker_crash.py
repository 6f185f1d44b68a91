"""A worker that dies mid-batch loses nothing and duplicates nothing."""

from __future__ import annotations

import json

from chalicelib.services.ingest import INGEST_QUEUE


def test_a_crash_mid_batch_is_retried_without_loss_or_duplicates(api, smtp_server, monkeypatch):
    runtime = api.runtime
    fake_time = [1_000_000.0]
    runtime.stores.queue.time = lambda: fake_time[0]
    for i in range(10):
        api.post("/v1/identify", {"userId": f"u{i}", "messageId": f"m{i}", "traits": {"email": f"u{i}@example.com"}})
    original = runtime.processor._apply
    broken = {"m4": True}

    def dies_on_the_fifth(event):
        if broken.get(event.message_id):
            # the event is already in the log; the profile is not saved yet: the worst moment
            raise OSError("worker killed")
        return original(event)

    monkeypatch.setattr(runtime.processor, "_apply", dies_on_the_fifth)
    assert runtime.work(INGEST_QUEUE, max_messages=10) == 9
    broken.clear()  # the worker is back
    assert runtime.stores.queue.depth(INGEST_QUEUE) == 1  # not acknowledged: it will come back
    assert runtime.work(INGEST_QUEUE) == 0  # still invisible
    fake_time[0] += 61  # the visibility timeout passes
    assert runtime.work(INGEST_QUEUE) == 1
    runtime.drain()
    assert runtime.stores.events.count("segment") == 10
    assert runtime.stores.profiles.count() == 10
    assert sorted(r[0] for _, r, _ in smtp_server.messages) == sorted(f"u{i}@example.com" for i in range(10))
    body = json.dumps({"userId": "u4", "messageId": "m4", "traits": {"email": "u4@example.com"}})
    api.post("/v1/identify", body)  # and a late duplicate of the crashed one changes nothing
    runtime.drain()
    assert runtime.stores.events.count("segment") == 10 and len(smtp_server.messages) == 10


def test_a_journey_timer_and_what_it_did_commit_together(api, smtp_server, clock, monkeypatch):
    """The welcome journey waits between its e-mails: a worker dying while it resumes leaves the
    timer in place (nothing half done), and the next tick fires it once."""
    from datetime import timedelta

    runtime = api.runtime
    api.post("/v1/identify", {"userId": "w1", "messageId": "w1", "traits": {"email": "w1@example.com"}})
    runtime.drain()
    sent_before = len(smtp_server.messages)
    waiting = [t for t in runtime.stores.journeys.due(clock.now() + timedelta(days=30), limit=100)
               if t.payload.get("kind") == "journey_resume"]
    assert waiting, "the welcome journey should be waiting on a timer"
    clock.advance(timedelta(days=30))
    original = runtime.journeys.resume

    def dies_after_writing(payload):
        original(payload)  # the step ran (state written, send queued) ...
        raise OSError("worker killed")  # ... and the worker died before the commit

    monkeypatch.setattr(runtime.journeys, "resume", dies_after_writing)
    try:
        runtime.tick()
    except OSError:
        pass
    else:
        raise AssertionError("the failure should surface")
    due_ids = {t.timer_id for t in runtime.stores.journeys.due(clock.now(), limit=100)}
    assert {t.timer_id for t in waiting} <= due_ids  # not taken: rolled back with its effects
    assert runtime.stores.queue.depth("send") == 0  # the queued send was rolled back too
    monkeypatch.setattr(runtime.journeys, "resume", original)
    runtime.drain()
    assert not {t.timer_id for t in waiting} & {t.timer_id for t in runtime.stores.journeys.due(clock.now(), limit=100)}
    after = len(smtp_server.messages)
    runtime.drain()
    assert len(smtp_server.messages) == after > sent_before  # the next e-mail went, once
