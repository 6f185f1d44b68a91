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
    calls = {"n": 0}

    def dies_on_the_fifth(event):
        calls["n"] += 1
        if calls["n"] == 5:
            # the event is already in the log; the profile is not saved yet: the worst moment
            raise OSError("worker killed")
        return original(event)

    monkeypatch.setattr(runtime.processor, "_apply", dies_on_the_fifth)
    assert runtime.work(INGEST_QUEUE, max_messages=10) == 9
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
