"""End to end through ``GET|POST /v1/inbound/whatsapp``: Meta's handshake, a start link that
joins the customer's number to the profile and opens the 24-hour window, the core's send
path answering inside it with free text (loopback Cloud API), receipts on the ledger entry,
STOP, and forged requests refused."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
from chalice.test import Client
from cloud_api import ACCESS_TOKEN, PHONE_NUMBER_ID, CloudApiServer

from chalicelib.adapters.local import local_stores
from chalicelib.clock import ManualClock, iso
from chalicelib.config import load_settings
from chalicelib.events import parse_call, to_payload
from chalicelib.runtime import Runtime, set_runtime

APP_SECRET = "route-app-secret-0123456789"
VERIFY = "route-verify-token"
CUSTOMER = "4915112345678"
NOW = datetime(2026, 3, 2, 10, tzinfo=UTC)


@pytest.fixture
def stack(tmp_path):
    import app as app_module

    with CloudApiServer() as api:
        settings = load_settings({}, overrides={
            "data_dir": str(tmp_path / "data"), "channels": {"messenger": "whatsapp"},
            "plugin_settings": {"whatsapp": {
                "access_token": ACCESS_TOKEN, "phone_number_id": PHONE_NUMBER_ID, "base_url": api.state.url,
                "app_secret": APP_SECRET, "verify_token": VERIFY, "business_number": "15550001234",
                "templates": {"*": {"name": "hello_world"}}}}})
        clock = ManualClock(NOW)
        runtime = Runtime(settings, stores=local_stores(None), clock=clock)
        set_runtime(runtime)
        try:
            with Client(app_module.app) as client:
                yield runtime, client, api.state, clock
        finally:
            set_runtime(None)
            runtime.close()


def identify(runtime, user_id):
    call = parse_call("identify", {"userId": user_id, "messageId": f"id-{user_id}", "timestamp": iso(NOW),
                                   "traits": {"first_name": "Ann"}}, NOW).calls[0]
    runtime.processor.handle({"source": "segment", "received_at": iso(NOW), "event": to_payload(call)})
    runtime.drain()
    return runtime.stores.profiles.resolve("user_id", user_id)


def post(client, value, secret=APP_SECRET, tamper=False):
    raw = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [
        {"field": "messages", "value": {"messaging_product": "whatsapp", "metadata": {
            "display_phone_number": "15550001234", "phone_number_id": PHONE_NUMBER_ID}, **value}}]}]}).encode()
    signature = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    if tamper:
        raw = raw.replace(b"START", b"STOP!")
    return client.http.post("/v1/inbound/whatsapp", body=raw,
                            headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature})


def text(body, wamid, at=NOW):
    return {"contacts": [{"profile": {"name": "Ann"}, "wa_id": CUSTOMER}], "messages": [
        {"from": CUSTOMER, "id": wamid, "timestamp": str(int(at.timestamp())), "type": "text", "text": {"body": body}}]}


def test_the_verification_handshake(stack):
    _, client, _, _ = stack
    ok = client.http.get("/v1/inbound/whatsapp?" + urlencode(
        {"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "1158201444"}))
    assert (ok.status_code, ok.body, ok.headers["Content-Type"]) == (200, b"1158201444", "text/plain")
    wrong = client.http.get("/v1/inbound/whatsapp?" + urlencode(
        {"hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1158201444"}))
    assert wrong.status_code == 401 and b"1158201444" not in wrong.body


def test_link_window_send_receipts_and_stop(stack):
    runtime, client, api, clock = stack
    profile_id = identify(runtime, "u1")
    token = runtime.inbound.start_link_token(profile_id, "messenger")
    assert runtime.inbound.channel("whatsapp").start_link(token) == f"https://wa.me/15550001234?text=START%20{token}"

    started = post(client, text(f"START {token}", "wamid.IN1"))
    assert started.status_code == 200, started.body
    profile = runtime.stores.profiles.get(profile_id)
    assert profile.traits["chat_id"] == CUSTOMER and profile.traits["consent"]["messenger"] == "subscribed"

    # the customer wrote 20 minutes ago: the core's send path answers in free text, for free
    api.open_windows.add(CUSTOMER)
    clock.advance(timedelta(minutes=20))
    runtime.authoring.save_template("wa_answer", {"subject": "-", "text": "Hi {{ profile.first_name }}, thanks!"})
    task = {"profile_id": profile_id, "journey": "support", "version": 1, "step": "answer", "entity": "e1",
            "channel": "messenger", "fallback_channel": None, "template": "wa_answer", "purpose": "transactional",
            "priority": 5, "context": {}}
    assert runtime.sender.handle(task) == "sent"
    assert api.sent[-1]["type"] == "text" and api.sent[-1]["text"]["body"] == "Hi Ann, thanks!"
    entry = runtime.stores.ledger.for_profile(profile_id)[0]
    wamid = entry.provider_message_id
    assert wamid.startswith("wamid.")

    receipt = {"statuses": [{"id": wamid, "status": "delivered", "timestamp": str(int(clock.now().timestamp())),
                             "recipient_id": CUSTOMER}]}
    assert post(client, receipt).status_code == 200
    assert runtime.stores.ledger.for_profile(profile_id)[0].detail["delivery"] == "delivered"
    events = len(runtime.stores.events.for_profile(profile_id))
    assert post(client, receipt).status_code == 200  # Meta redelivers: nothing new
    assert len(runtime.stores.events.for_profile(profile_id)) == events

    # two days later the window is closed: the template goes instead
    clock.advance(timedelta(days=2))
    assert runtime.sender.handle({**task, "entity": "e2"}) == "sent"
    assert api.sent[-1]["type"] == "template" and api.sent[-1]["template"]["name"] == "hello_world"

    assert post(client, text("STOP", "wamid.IN2", at=clock.now())).status_code == 200
    assert runtime.stores.profiles.get(profile_id).traits["consent"]["messenger"] == "opted_out"


def test_forged_posts_are_refused(stack):
    runtime, client, _, _ = stack
    profile_id = identify(runtime, "u2")
    token = runtime.inbound.start_link_token(profile_id, "messenger")
    for response in (post(client, text(f"START {token}", "wamid.F1"), secret="not-the-app-secret"),
                     post(client, text(f"START {token}", "wamid.F2"), tamper=True)):
        assert response.status_code == 401 and b"signature does not match" in response.body
    unsigned = client.http.post("/v1/inbound/whatsapp", body=b"{}", headers={"Content-Type": "application/json"})
    assert unsigned.status_code == 401 and b"X-Hub-Signature-256" in unsigned.body
    assert "chat_id" not in runtime.stores.profiles.get(profile_id).traits
