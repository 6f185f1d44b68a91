"""End to end through ``POST /v1/inbound/telegram``: a start link joins the chat to the customer's
profile, /stop withdraws consent, a block removes the chat, and the chat then gets messages
through the Bot API (loopback) from the core's send path."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from bot_api import TOKEN, BotApiServer
from chalice.test import Client

from chalicelib.adapters.local import local_stores
from chalicelib.clock import ManualClock, iso
from chalicelib.config import load_settings
from chalicelib.events import parse_call, to_payload
from chalicelib.runtime import Runtime, set_runtime

SECRET = "route-secret_42"
NOW = datetime(2026, 3, 2, 10, tzinfo=UTC)


@pytest.fixture
def stack(tmp_path):
    import app as app_module

    with BotApiServer() as api:
        settings = load_settings({}, overrides={
            "data_dir": str(tmp_path / "data"), "channels": {"messenger": "telegram"},
            "plugin_settings": {"telegram": {"bot_token": TOKEN, "base_url": api.state.url,
                                             "webhook_secret": SECRET, "bot_username": "shop_bot"}}})
        runtime = Runtime(settings, stores=local_stores(None), clock=ManualClock(NOW))
        set_runtime(runtime)
        try:
            with Client(app_module.app) as client:
                yield runtime, client, api.state
        finally:
            set_runtime(None)
            runtime.close()


def identify(runtime, user_id):
    call = parse_call("identify", {"userId": user_id, "messageId": f"id-{user_id}", "timestamp": iso(NOW),
                                   "traits": {"first_name": "Ann"}}, NOW).calls[0]
    runtime.processor.handle({"source": "segment", "received_at": iso(NOW), "event": to_payload(call)})
    runtime.drain()
    return runtime.stores.profiles.resolve("user_id", user_id)


def post(client, update, secret=SECRET):
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    return client.http.post("/v1/inbound/telegram", headers=headers,
                            body=update if isinstance(update, bytes) else json.dumps(update))


def message(text, message_id, chat_id=42):
    return {"update_id": 500000 + message_id, "message": {
        "message_id": message_id, "date": int(NOW.timestamp()), "text": text,
        "from": {"id": chat_id, "is_bot": False, "first_name": "Ann", "language_code": "en"},
        "chat": {"id": chat_id, "first_name": "Ann", "type": "private"}}}


def test_start_link_stop_and_block_through_the_route(stack):
    runtime, client, api = stack
    profile_id = identify(runtime, "u1")
    token = runtime.inbound.start_link_token(profile_id, "messenger")
    channel = runtime.inbound.channel("telegram")
    link = channel.start_link(token)
    assert link == f"https://t.me/shop_bot?start={token}"  # the core's compact token fits as it is

    started = post(client, message(f"/start {token}", 1))
    assert started.status_code == 200, started.body
    profile = runtime.stores.profiles.get(profile_id)
    assert profile.traits["chat_id"] == "42" and profile.traits["consent"]["messenger"] == "subscribed"
    events = len(runtime.stores.events.for_profile(profile_id))
    assert post(client, message(f"/start {token}", 1)).status_code == 200  # Telegram retries the update
    assert len(runtime.stores.events.for_profile(profile_id)) == events

    # the core's send path now reaches the linked chat through the Bot API
    runtime.authoring.save_template("tg_back_in_stock", {"subject": "Back", "text": "Hi {{ profile.first_name }}, "
                                                         "it is back <3"})
    status = runtime.sender.handle({
        "profile_id": profile_id, "journey": "back_in_stock", "version": 1, "step": "notify", "entity": "sku-1",
        "channel": "messenger", "fallback_channel": None, "template": "tg_back_in_stock",
        "purpose": "transactional", "priority": 5, "context": {}})
    assert status == "sent"
    assert api.calls == [("sendMessage", {"chat_id": "42", "text": "Hi Ann, it is back &lt;3", "parse_mode": "HTML"})]
    entry = runtime.stores.ledger.for_profile(profile_id)[0]
    assert (entry.status, entry.provider_message_id) == ("sent", "42:1")

    stopped = post(client, message("/stop", 2))
    assert stopped.status_code == 200 and stopped.headers["Content-Type"] == "application/json"
    assert json.loads(stopped.body) == {"method": "sendMessage", "chat_id": 42, "text": channel.settings.stop_reply}
    assert runtime.stores.profiles.get(profile_id).traits["consent"]["messenger"] == "opted_out"

    blocked = post(client, {"update_id": 500010, "my_chat_member": {
        "chat": {"id": 42, "type": "private", "first_name": "Ann"}, "from": {"id": 42, "is_bot": False},
        "date": int(NOW.timestamp()) + 60,
        "old_chat_member": {"user": {"id": 1, "is_bot": True}, "status": "member"},
        "new_chat_member": {"user": {"id": 1, "is_bot": True}, "status": "kicked", "until_date": 0}}})
    assert blocked.status_code == 200
    assert "chat_id" not in runtime.stores.profiles.get(profile_id).traits


def test_a_long_token_goes_through_the_plugins_mapping(stack):
    runtime, client, _ = stack
    profile_id = identify(runtime, "u2")
    token = runtime.credentials.sign("link", {"p": profile_id, "c": "messenger"})  # the dotted, longer form
    payload = runtime.inbound.channel("telegram").start_payload(token)
    assert payload != token and len(payload) <= 64
    assert post(client, message(f"/start {payload}", 3, chat_id=77)).status_code == 200
    assert runtime.stores.profiles.get(profile_id).traits["chat_id"] == "77"


def test_forged_and_malformed_updates_are_refused(stack):
    runtime, client, _ = stack
    profile_id = identify(runtime, "u3")
    token = runtime.inbound.start_link_token(profile_id, "messenger")
    for secret in (None, "wrong"):
        refused = post(client, message(f"/start {token}", 4), secret=secret)
        assert refused.status_code == 401, refused.body
        assert "X-Telegram-Bot-Api-Secret-Token" in refused.body.decode()
    assert "chat_id" not in runtime.stores.profiles.get(profile_id).traits
    bad = post(client, b"{not json")
    assert bad.status_code == 400 and bad.body.decode() == "body is not JSON"
