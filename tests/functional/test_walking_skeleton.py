"""The walking skeleton: Segment identify → event once → profile → welcome journey →
e-mail over real SMTP (aiosmtpd) → send ledger with its reason."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest

from chalicelib.services.ingest import INGEST_QUEUE


def identify(api, message_id="msg-1", user="u-1", email="Ann@Example.com", **traits):
    body = {"userId": user, "messageId": message_id, "traits": {"email": email, "first_name": "Ann", **traits}}
    return api.post("/v1/identify", body)


def test_identify_sends_one_welcome_email_over_smtp_and_records_why(api, smtp_server):
    r = identify(api)
    assert r.status_code == 200
    assert json.loads(r.body) == {"success": True, "accepted": 1}
    api.runtime.drain()

    assert len(smtp_server.messages) == 1
    _mail_from, rcpt, msg = smtp_server.messages[0]
    assert rcpt == ["ann@example.com"]  # normalised
    assert msg["Subject"] == "Welcome to Omnicast Demo Shop, Ann!"
    assert msg.get_content_type() == "multipart/alternative"
    assert {p.get_content_type() for p in msg.iter_parts()} == {"text/plain", "text/html"}
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["List-Unsubscribe"].startswith("<http")

    entries = api.runtime.stores.ledger.all()
    assert [(e.journey, e.step, e.status) for e in entries] == [("welcome", "welcome_email", "sent")]
    assert "welcome" in entries[0].reason and "smtp" in entries[0].reason
    assert entries[0].provider_message_id

    decisions = json.loads(api.admin_get(f"/admin/profiles/{entries[0].profile_id}/decisions").body)["decisions"]
    assert decisions[0]["status"] == "sent" and decisions[0]["reason"] == entries[0].reason


def test_same_message_id_twice_is_one_event_and_one_email(api, smtp_server):
    identify(api, message_id="dup")
    identify(api, message_id="dup")
    api.runtime.drain()
    assert api.runtime.stores.events.count("segment") == 1
    assert len(smtp_server.messages) == 1


def test_redelivered_queue_messages_change_nothing(api, smtp_server):
    identify(api)
    queue = api.runtime.stores.queue
    body = queue.receive(INGEST_QUEUE, max_messages=1)[0].body
    queue.send(INGEST_QUEUE, body)  # the same message delivered twice, as SQS may
    queue.send(INGEST_QUEUE, body)
    api.runtime.drain()
    assert api.runtime.stores.events.count("segment") == 1
    assert len(smtp_server.messages) == 1
    profile_id = api.runtime.stores.ledger.all()[0].profile_id
    task = {"profile_id": profile_id, "journey": "welcome", "version": "1", "step": "welcome_email",
            "entity": "-", "channel": "email", "template": "welcome", "purpose": "marketing"}
    # two workers racing on the same send task: the ledger's conditional claim lets one through
    assert api.runtime.sender.handle(task) == "duplicate"
    assert len(smtp_server.messages) == 1


def test_welcome_series_waits_on_the_injected_clock(api, smtp_server, clock):
    identify(api)
    api.runtime.drain()
    clock.advance(timedelta(hours=47))
    api.runtime.drain()
    assert len(smtp_server.messages) == 1
    clock.advance(timedelta(hours=2))
    api.runtime.drain()
    assert [m[2]["Subject"] for m in smtp_server.messages][1] == "Ann, three things our regulars love"
    assert api.runtime.drain().timers == 0  # the timer fired once


def test_quiet_hours_defer_in_the_recipients_time_zone_and_never_drop(api, smtp_server, clock):
    # 10:00 UTC is 02:00 in Los Angeles: deferred to 09:00 there (17:00 UTC)
    identify(api, timezone="America/Los_Angeles")
    api.runtime.drain()
    assert smtp_server.messages == []
    entry = api.runtime.stores.ledger.all()[0]
    assert entry.status == "deferred" and "quiet hours until 09:00 America/Los_Angeles" in entry.reason
    clock.advance(timedelta(hours=6, minutes=59))
    api.runtime.drain()
    assert smtp_server.messages == []
    clock.advance(timedelta(minutes=2))
    api.runtime.drain()
    assert len(smtp_server.messages) == 1
    assert api.runtime.stores.ledger.all()[0].status == "sent"


def test_one_click_unsubscribe_stops_marketing(api, smtp_server, clock):
    identify(api)
    api.runtime.drain()
    header = smtp_server.messages[0][2]["List-Unsubscribe"]
    url = urlparse(re.search(r"<([^>]+)>", header).group(1))
    token = parse_qs(url.query)["token"][0]
    r = api.client.http.post(
        f"{url.path}?token={token}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body="List-Unsubscribe=One-Click",
    )
    assert r.status_code == 200, r.body
    clock.advance(timedelta(days=3))
    api.runtime.drain()
    assert len(smtp_server.messages) == 1
    tips = next(e for e in api.runtime.stores.ledger.all() if e.step == "tips_email")
    assert tips.status == "skipped" and "unsubscribed from email marketing" in tips.reason
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    r = api.client.http.post(f"{url.path}?token={tampered}", headers={"Content-Type": "text/plain"}, body="")
    assert r.status_code == 400 and json.loads(r.body)["field"] == "token"


def test_admin_endpoints_need_the_admin_key(api):
    assert api.client.http.get("/admin/plugins").status_code == 401
    wrong = api.client.http.get("/admin/plugins", headers={"Authorization": "Bearer not-a-key"})
    assert wrong.status_code == 401 and json.loads(wrong.body)["error"] == "unauthorized"
    # a write key is not an admin key
    as_writer = api.client.http.get("/admin/plugins", headers={"Authorization": f"Bearer {api.write_key}"})
    assert as_writer.status_code == 401
    info = json.loads(api.admin_get("/admin/plugins").body)
    smtp = next(p for p in info["plugins"] if p["name"] == "smtp")
    assert smtp["version"] and "register_channels" in smtp["hooks"]
    assert info["channels"]["smtp"]["channel"] == "email"


def test_keys_are_stored_hashed(api):
    secrets = api.runtime.stores.secrets
    stored = [secrets.get(n) or "" for n in secrets.names("")] + secrets.names("")
    assert not any(api.write_key in s or api.admin_key in s for s in stored)


@pytest.mark.parametrize(
    ("body", "headers", "status", "field", "words"),
    [
        ("{not json", None, 400, "body", "not valid JSON"),
        ("", None, 400, "body", "empty"),
        ("[1, 2]", None, 400, "body", "JSON object"),
        ({"userId": "u", "traits": "tall"}, None, 400, "traits", "dictionary"),
        ({"userId": "u", "traits": {}, "userID": "typo"}, None, 400, "userID", "unknown field"),
        ({"traits": {"email": "a@b.c"}}, None, 400, None, "userId or anonymousId is required"),
        ({"userId": "u", "timestamp": "yesterday"}, None, 400, "timestamp", "datetime"),
        ({"userId": "u"}, {"Content-Type": "application/json"}, 401, "Authorization", "missing write key"),
        ({"userId": "u"}, "wrong", 401, "Authorization", "unknown write key"),
        ({"userId": "u", "traits": {"bio": "x" * 600_000}}, None, 413, "body", "limit"),
    ],
)
def test_bad_input_gets_a_clear_4xx(api, body, headers, status, field, words):
    if headers == "wrong":
        headers = api.auth("ocw_this-key-does-not-exist")
    r = api.post("/v1/identify", body, headers=headers)
    assert r.status_code == status, r.body
    answer = json.loads(r.body)
    assert answer.get("field") == field
    assert words in answer["message"]
    assert api.runtime.stores.queue.depth(INGEST_QUEUE) == 0


def test_a_bad_batch_item_is_named_and_the_valid_ones_are_kept(api, smtp_server):
    batch = {"batch": [
        {"type": "identify", "userId": "u-9", "messageId": "b-0", "traits": {"email": "nine@example.com"}},
        {"type": "track", "userId": "u-9", "messageId": "b-1"},
        {"type": "lunch", "userId": "u-9"},
        {"type": "track", "userId": "u-9", "messageId": "b-3", "event": "Product Viewed"},
    ]}
    r = api.post("/v1/batch", batch)
    assert r.status_code == 400
    answer = json.loads(r.body)
    assert answer["field"] == "batch.1.event"
    assert "2 of 4 batch items rejected (2 accepted)" in answer["message"]
    assert "batch.2.type" in answer["message"] or "type must be one of" in answer["message"]
    api.runtime.drain()
    assert api.runtime.stores.events.count("segment") == 2
    assert len(smtp_server.messages) == 1


def test_unknown_call_is_404_naming_it(api):
    r = api.post("/v1/purchase", {"userId": "u"})
    assert r.status_code == 404 and "/v1/purchase" in json.loads(r.body)["message"]


def test_big_numeric_ids_stay_exact(api):
    big = 9007199254740993  # 2**53 + 1: a float would round it
    r = api.post("/v1/track", {"userId": big, "event": "Order Completed", "messageId": "big",
                               "properties": {"order_id": big, "total": 10}})
    assert r.status_code == 200
    api.runtime.drain()
    stored = api.runtime.stores.events.get("segment", "big")
    assert stored.payload["userId"] == str(big)
    assert stored.payload["properties"]["order_id"] == big
