"""Inbound channel webhooks through the HTTP stack: /v1/inbound/{plugin} verifies through the plugin,
then each feedback changes the profile or the send ledger once.

Twilio SMS end to end (a loopback server answering as Twilio's Messages API, webhooks signed
as Twilio signs them), and a small relay channel plugin (push and messenger) for the feedback
kinds SMS does not produce: dead tokens, complaints, chat links, replies from a chat.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import importlib.util
import json
import re
import sys
import types
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from chalice.test import Client
from omnicast_twilio_sms import twilio_signature

from chalicelib.adapters.local import local_stores
from chalicelib.clock import iso, parse_iso
from chalicelib.config import load_settings
from chalicelib.plugin_api import Channel, DeliveryFeedback, InboundResult, SendResult, SignatureError, hookimpl
from chalicelib.plugin_host import PluginHost
from chalicelib.runtime import Runtime, set_runtime
from chalicelib.services.journey_library import LIBRARY_YAML
from tests.unit.test_journeys import emit

ROOT = Path(__file__).resolve().parents[2]
# the loopback Twilio API of the plugin's own tests (a test helper module, not a package)
if "twilio_server" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("twilio_server", ROOT / "plugins/twilio_sms/tests/twilio_server.py")
    sys.modules["twilio_server"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["twilio_server"])
twilio_server = sys.modules["twilio_server"]

PUBLIC = "https://shop-api.example.com/api"
TWILIO_URL = f"{PUBLIC}/v1/inbound/twilio_sms"
PHONE = "+14155552671"
RELAY_SECRET = b"relay-secret"
SMS_JOURNEY = """
name: sms_tips
trigger: {event: Tips Requested}
reentry: once
steps:
  - {id: first_tip, type: send, channel: sms, template: sms_tip}
  - {id: wait_a_day, type: wait, hours: 24}
  - {id: second_tip, type: send, channel: sms, template: sms_tip}
"""
PUSH_JOURNEY = """
name: push_note
trigger: {event: Note Requested}
reentry: always
steps:
  - {id: note, type: send, channel: push, template: sms_tip, purpose: transactional}
"""


# --------------------------------------------------------------------------- a relay channel plugin
def relay_plugin() -> types.ModuleType:
    """Push and messenger channels whose provider posts JSON feedback signed with HMAC-SHA256."""

    def make(kind: str) -> type[Channel]:
        class Relay(Channel):
            name = f"relay_{kind}"
            channel = kind

            def send(self, message: Any) -> SendResult:
                return SendResult(ok=True, provider_message_id=f"relay-{message.message_id}")

            def inbound(self, request: Any) -> InboundResult:
                given = request.header("x-relay-signature") or ""
                if not hmac.compare_digest(given, hmac.new(RELAY_SECRET, request.body, hashlib.sha256).hexdigest()):
                    raise SignatureError("x-relay-signature does not match")
                items = json.loads(request.body)["feedback"]
                return InboundResult(feedback=[
                    DeliveryFeedback(kind=i["kind"], channel=kind, address=i["address"], at=parse_iso(i["at"]),
                                     provider_message_id=i.get("id"), detail=i.get("detail", {}))
                    for i in items], body='{"ok":true}', content_type="application/json")

        return Relay

    module = types.ModuleType("relay_channels")
    classes = [make("push"), make("messenger")]

    @hookimpl
    def register_channels(register: Any) -> None:
        for cls in classes:
            register(cls)

    module.register_channels = register_channels  # type: ignore[attr-defined]
    return module


@contextlib.contextmanager
def adapter_set(kind: str, monkeypatch) -> Iterator[Any]:
    if kind == "local":
        yield local_stores(None)
        return
    from moto import mock_aws

    from chalicelib.adapters.aws import AwsClients, aws_stores, create_resources
    from chalicelib.config import AwsSettings

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    aws = AwsSettings(table="inbound", bucket="inbound-bucket", queue_prefix="inbound-", ssm_prefix="/inbound/")
    with mock_aws():
        clients = AwsClients(aws)
        create_resources(aws, ("ingest", "send"), clients)
        yield aws_stores(aws, clients)


@pytest.fixture
def stack(request, tmp_path, clock, smtp_server, monkeypatch):
    """The app over a runtime (SQLite, or DynamoDB/SQS/S3/SSM under moto with ``indirect`` "aws"):
    SMS through Twilio (loopback), push and chat through the relay."""
    with twilio_server.twilio_api() as twilio, adapter_set(getattr(request, "param", "local"), monkeypatch) as stores:
        settings = load_settings({}, overrides={
            "data_dir": str(tmp_path / "data"),
            "channels": {"email": "smtp", "sms": "twilio_sms", "push": "relay_push", "messenger": "relay_messenger"},
            "plugin_settings": {
                "smtp": {"host": "127.0.0.1", "port": smtp_server.port},
                "twilio_sms": {"account_sid": twilio_server.ACCOUNT_SID, "auth_token": twilio_server.AUTH_TOKEN,
                               "from_number": twilio_server.FROM, "base_url": twilio.url, "public_url": PUBLIC,
                               "help_text": "Omnicast Shop: reply STOP to opt out."},
            },
            "journeys": {"disabled": sorted(LIBRARY_YAML)},
        })
        host = PluginHost(settings.plugins).load(extra=[("relay", relay_plugin())])
        runtime = Runtime(settings, stores=stores, clock=clock, host=host)
        runtime.authoring.save_template("sms_tip", {"subject": "Tip", "text": "Hi {{ profile.first_name }}: a tip"})
        runtime.authoring.save_journey(SMS_JOURNEY)
        runtime.authoring.save_journey(PUSH_JOURNEY)
        import app as app_module

        set_runtime(runtime)
        with Client(app_module.app) as client:
            yield types.SimpleNamespace(client=client, runtime=runtime, twilio=twilio, clock=clock)
        set_runtime(None)
        runtime.close()


def customer(stack, user="u1", **traits) -> str:
    traits = {"email": f"{user}@example.com", "first_name": "Ann", **traits}
    ids = [{"id": traits["push_token"], "type": "push_token", "collection": "users"}] if "push_token" in traits else []
    emit(stack.runtime, "identify", userId=user, traits=traits, context={"externalIds": ids})
    return stack.runtime.stores.profiles.resolve("user_id", user)


def twilio_post(stack, params: dict[str, str], *, token: str = twilio_server.AUTH_TOKEN) -> Any:
    signature = twilio_signature(token, TWILIO_URL, list(params.items()))
    return stack.client.http.post("/v1/inbound/twilio_sms", body=urlencode(params).encode(), headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature})


def sms_in(text: str, sid: str = "SM" + "a" * 32, sender: str = PHONE) -> dict[str, str]:
    return {"SmsMessageSid": sid, "NumMedia": "0", "SmsSid": sid, "SmsStatus": "received", "Body": text,
            "To": twilio_server.FROM, "NumSegments": "1", "MessageSid": sid, "AccountSid": twilio_server.ACCOUNT_SID,
            "From": sender, "ApiVersion": "2010-04-01"}


def sms_status(sid: str, state: str, **extra: str) -> dict[str, str]:
    return {"SmsSid": sid, "SmsStatus": state, "MessageStatus": state, "To": PHONE, "MessageSid": sid,
            "AccountSid": twilio_server.ACCOUNT_SID, "From": twilio_server.FROM, "ApiVersion": "2010-04-01", **extra}


def relay_post(stack, kind: str, channel: str, *items: dict[str, Any]) -> Any:
    body = json.dumps({"feedback": [{"kind": kind, "at": iso(stack.clock.now()), **i} for i in items]}).encode()
    return stack.client.http.post(f"/v1/inbound/relay_{channel}", body=body, headers={
        "Content-Type": "application/json",
        "X-Relay-Signature": hmac.new(RELAY_SECRET, body, hashlib.sha256).hexdigest()})


def events(stack, source: str, name: str | None = None) -> list[Any]:
    return [e for e in stack.runtime.stores.events.by_source(source) if name is None or e.event == name]


def profile(stack, profile_id: str) -> Any:
    return stack.runtime.stores.profiles.get(profile_id)


def consent(stack, profile_id: str, channel: str) -> str | None:
    return (profile(stack, profile_id).traits.get("consent") or {}).get(channel)


# --------------------------------------------------------------------------- Twilio end to end
def test_stop_by_sms_withdraws_consent_and_the_next_sms_step_is_suppressed(stack):
    pid = customer(stack, phone=PHONE, consent={"sms": "subscribed"})
    emit(stack.runtime, "track", userId="u1", event="Tips Requested")
    assert [m["To"] for m in stack.twilio.received] == [PHONE]
    assert stack.twilio.received[0]["StatusCallback"] == TWILIO_URL
    first = next(e for e in stack.runtime.stores.ledger.all() if e.step == "first_tip")
    assert first.status == "sent" and first.provider_message_id.startswith("SM")

    r = twilio_post(stack, sms_in("Stop"))
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/xml"
    assert r.body.decode() == '<?xml version="1.0" encoding="UTF-8"?><Response/>'
    assert consent(stack, pid, "sms") == "opted_out"
    [stop] = events(stack, "twilio_sms", "Channel Opted Out")
    assert stop.profile_id == pid and stop.processed and stop.payload["properties"]["keyword"] == "STOP"

    stack.clock.advance(timedelta(hours=24, minutes=1))
    stack.runtime.drain()
    second = next(e for e in stack.runtime.stores.ledger.all() if e.step == "second_tip")
    assert second.status == "skipped" and second.reason == "skipped: opted out of SMS by STOP"
    assert len(stack.twilio.received) == 1  # nothing more went to Twilio


@pytest.mark.parametrize("stack", ["aws"], indirect=True)
def test_on_the_aws_adapters_a_receipt_finds_its_message_and_stop_is_honoured(stack):
    pid = customer(stack, phone=PHONE, consent={"sms": "subscribed"})
    emit(stack.runtime, "track", userId="u1", event="Tips Requested")
    entry = next(e for e in stack.runtime.stores.ledger.all() if e.step == "first_tip")
    assert entry.status == "sent" and [m["To"] for m in stack.twilio.received] == [PHONE]
    assert twilio_post(stack, sms_status(entry.provider_message_id, "delivered")).status_code == 200
    assert stack.runtime.stores.ledger.get(entry.key).detail["delivery"] == "delivered"
    assert twilio_post(stack, sms_in("STOP")).status_code == 200
    assert twilio_post(stack, sms_in("STOP")).status_code == 200  # redelivered
    assert consent(stack, pid, "sms") == "opted_out" and len(events(stack, "twilio_sms")) == 2
    stack.clock.advance(timedelta(hours=24, minutes=1))
    stack.runtime.drain()
    second = next(e for e in stack.runtime.stores.ledger.all() if e.step == "second_tip")
    assert second.status == "skipped" and len(stack.twilio.received) == 1


def test_delivery_receipts_are_recorded_on_the_ledger_entry_and_keep_it_sent(stack):
    pid = customer(stack, phone=PHONE, consent={"sms": "subscribed"})
    emit(stack.runtime, "track", userId="u1", event="Tips Requested")
    entry = next(e for e in stack.runtime.stores.ledger.all() if e.step == "first_tip")
    stack.clock.advance(timedelta(seconds=5))
    for state in ("sent", "delivered"):  # Twilio reports each state; only the receipt matters
        r = twilio_post(stack, sms_status(entry.provider_message_id, state))
        assert r.status_code == 200 and r.body.decode().endswith("<Response/>")
    after = stack.runtime.stores.ledger.get(entry.key)
    assert (after.status, after.reason, after.updated_at) == (entry.status, entry.reason, entry.updated_at)
    assert after.detail["delivery"] == "delivered" and after.detail["delivery_at"] == iso(stack.clock.now())
    [delivered] = events(stack, "twilio_sms", "Message Delivered")
    assert delivered.profile_id == pid and delivered.payload["properties"]["ledger_key"] == entry.key
    assert sum(1 for e in stack.runtime.stores.ledger.all() if e.detail.get("delivery") == "delivered") == 1


def test_a_failed_receipt_to_a_landline_fails_the_message_and_suppresses_the_number(stack):
    pid = customer(stack, phone=PHONE, consent={"sms": "subscribed"})
    emit(stack.runtime, "track", userId="u1", event="Tips Requested")
    entry = next(e for e in stack.runtime.stores.ledger.all() if e.step == "first_tip")
    r = twilio_post(stack, sms_status(entry.provider_message_id, "undelivered", ErrorCode="30006"))
    assert r.status_code == 200
    after = stack.runtime.stores.ledger.get(entry.key)
    assert after.status == "sent" and after.detail["delivery"] == "failed" and after.detail["delivery_error"] == "30006"
    assert consent(stack, pid, "sms") == "suppressed"
    assert sorted(e.event for e in events(stack, "twilio_sms")) == ["Message Bounced", "Message Failed"]


def test_start_help_and_replies(stack):
    pid = customer(stack, phone=PHONE)
    twilio_post(stack, sms_in("STOP", sid="SM" + "1" * 32))
    assert consent(stack, pid, "sms") == "opted_out"
    stack.clock.advance(timedelta(minutes=1))
    twilio_post(stack, sms_in("start", sid="SM" + "2" * 32))
    assert consent(stack, pid, "sms") == "subscribed"
    stack.clock.advance(timedelta(minutes=1))
    r = twilio_post(stack, sms_in("HELP", sid="SM" + "3" * 32))
    assert r.body.decode() == ('<?xml version="1.0" encoding="UTF-8"?><Response><Message>'
                               "Omnicast Shop: reply STOP to opt out.</Message></Response>")
    assert consent(stack, pid, "sms") == "subscribed"
    stack.clock.advance(timedelta(minutes=1))
    twilio_post(stack, sms_in("Is my parcel coming today?", sid="SM" + "4" * 32))
    [reply] = events(stack, "twilio_sms", "Message Replied")
    assert reply.profile_id == pid and reply.payload["properties"]["text"] == "Is my parcel coming today?"
    assert [e.event for e in stack.runtime.stores.events.for_profile(pid) if e.source == "twilio_sms"] == [
        "Channel Opted Out", "Channel Opted In", "Help Requested", "Message Replied"]


def test_a_get_webhook_is_signed_over_its_query(stack):
    # Twilio can be told to use GET: the parameters travel in the query, which the signature covers
    pid = customer(stack, phone=PHONE)
    query = urlencode(sms_in("STOP"))
    signature = twilio_signature(twilio_server.AUTH_TOKEN, f"{TWILIO_URL}?{query}", [])
    r = stack.client.http.get(f"/v1/inbound/twilio_sms?{query}", headers={"X-Twilio-Signature": signature})
    assert r.status_code == 200 and consent(stack, pid, "sms") == "opted_out"
    r = stack.client.http.get(f"/v1/inbound/twilio_sms?{query.replace('STOP', 'START')}",
                              headers={"X-Twilio-Signature": signature})
    assert r.status_code == 401 and consent(stack, pid, "sms") == "opted_out"


def test_the_same_webhook_twice_changes_nothing(stack):
    pid = customer(stack, phone=PHONE)
    twilio_post(stack, sms_in("STOP", sid="SM" + "5" * 32))
    twilio_post(stack, sms_in("START", sid="SM" + "6" * 32))
    before = profile(stack, pid)
    r = twilio_post(stack, sms_in("STOP", sid="SM" + "5" * 32))  # Twilio retries the first one
    assert r.status_code == 200
    after = profile(stack, pid)
    assert consent(stack, pid, "sms") == "subscribed" and after.version == before.version
    assert len(events(stack, "twilio_sms")) == 2


def test_a_bad_signature_is_401_and_records_nothing(stack):
    pid = customer(stack, phone=PHONE)
    r = twilio_post(stack, sms_in("STOP"), token="someone-elses-token")
    assert r.status_code == 401
    assert json.loads(r.body) == {"error": "unauthorized", "code": "unauthorized",
                                  "message": "X-Twilio-Signature does not match", "field": "signature"}
    r = stack.client.http.post("/v1/inbound/twilio_sms", body=urlencode(sms_in("STOP")).encode(),
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 401 and json.loads(r.body)["message"] == "missing X-Twilio-Signature header"
    assert events(stack, "twilio_sms") == [] and consent(stack, pid, "sms") is None


def test_unknown_plugins_plugins_without_inbound_and_malformed_bodies(stack):
    r = stack.client.http.post("/v1/inbound/nope", body=b"x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 404 and json.loads(r.body)["field"] == "plugin" and "nope" in json.loads(r.body)["message"]
    r = stack.client.http.get("/v1/inbound/smtp")
    assert r.status_code == 404 and json.loads(r.body)["message"] == "channel plugin 'smtp' takes no inbound webhooks"
    params = {k: v for k, v in sms_in("hi").items() if k != "From"}
    r = twilio_post(stack, params)
    assert r.status_code == 400 and json.loads(r.body)["field"] == "From"
    assert json.loads(r.body)["message"] == "From is required"
    r = twilio_post(stack, {"AccountSid": twilio_server.ACCOUNT_SID})
    assert r.status_code == 400 and json.loads(r.body)["field"] == "MessageStatus"
    r = stack.client.http.post("/v1/inbound/relay_push", body=b"x" * (stack.runtime.settings.max_body_bytes + 1),
                               headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and json.loads(r.body)["field"] == "body"


def test_an_unknown_number_is_recorded_but_changes_no_profile(stack):
    pid = customer(stack, phone=PHONE)
    assert twilio_post(stack, sms_in("STOP", sender="+14155550100")).status_code == 200
    [stop] = events(stack, "twilio_sms")
    assert stop.profile_id is None and stop.processed
    assert consent(stack, pid, "sms") is None


# --------------------------------------------------------------------------- other feedback kinds
def test_a_dead_push_token_is_removed_and_never_used_again(stack):
    pid = customer(stack, push_token="tok-1")
    emit(stack.runtime, "track", userId="u1", event="Note Requested")
    assert [e.status for e in stack.runtime.stores.ledger.all() if e.step == "note"] == ["sent"]
    r = relay_post(stack, "token_gone", "push", {"address": "tok-1", "detail": {"reason": "Unregistered"}})
    assert r.status_code == 200 and json.loads(r.body) == {"ok": True}
    p = profile(stack, pid)
    assert "push_token" not in p.traits and "push_token" not in p.identifiers
    assert p.traits["push_token_removed_at"] == iso(stack.clock.now())
    stack.clock.advance(timedelta(minutes=1))
    emit(stack.runtime, "track", userId="u1", event="Note Requested")
    notes = [e for e in stack.runtime.stores.ledger.for_profile(pid) if e.step == "note"]
    assert [e.status for e in notes] == ["sent", "skipped"]
    assert notes[1].reason == "skipped: no push_token on the profile"


def test_complaints_and_bounces_suppress_and_opens_and_clicks_are_recorded(stack):
    pid = customer(stack, push_token="tok-2")
    relay_post(stack, "opened", "push", {"address": "tok-2", "id": "n-1"})
    relay_post(stack, "clicked", "push", {"address": "tok-2", "id": "n-1", "detail": {"url": "https://s.example"}})
    assert consent(stack, pid, "push") is None
    relay_post(stack, "complained", "push", {"address": "tok-2", "id": "n-1"})
    assert consent(stack, pid, "push") == "suppressed"
    assert sorted(e.event for e in events(stack, "relay_push")) == [
        "Message Clicked", "Message Complained", "Message Opened"]
    pid2 = customer(stack, user="u2", push_token="tok-3")
    relay_post(stack, "bounced", "push", {"address": "tok-3", "id": "n-2"})
    assert consent(stack, pid2, "push") == "suppressed" and consent(stack, pid, "push") == "suppressed"


def test_stop_never_weakens_a_suppression_and_unknown_kinds_are_skipped(stack):
    pid = customer(stack, push_token="tok-4")
    relay_post(stack, "bounced", "push", {"address": "tok-4", "id": "n-3"})
    r = relay_post(stack, "made_up", "push", {"address": "tok-4", "id": "n-4"},
                   {"kind": "opted_out", "address": "tok-4", "id": "n-5"})
    assert r.status_code == 200
    assert consent(stack, pid, "push") == "suppressed"
    assert sorted(e.event for e in events(stack, "relay_push")) == ["Channel Opted Out", "Message Bounced"]


def test_a_chat_started_from_a_signed_start_link_joins_the_right_profile(stack):
    pid = customer(stack)
    other = customer(stack, user="u2")
    token = stack.runtime.inbound.start_link_token(pid, "messenger")
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", token), token  # fits a Telegram start parameter
    r = relay_post(stack, "linked", "messenger", {"address": "777", "detail": {"token": token}})
    assert r.status_code == 200
    p = profile(stack, pid)
    assert p.traits["chat_id"] == "777" and p.identifiers["chat_id"] == "777"
    assert stack.runtime.stores.profiles.resolve("chat_id", "777") == pid
    [linked] = events(stack, "relay_messenger", "Channel Linked")
    assert linked.profile_id == pid and "token" not in linked.payload["properties"]

    relay_post(stack, "replied", "messenger", {"address": "777", "id": "msg-9", "detail": {"text": "hello"}})
    [reply] = events(stack, "relay_messenger", "Message Replied")
    assert reply.profile_id == pid and reply.payload["properties"]["text"] == "hello"

    # the same chat with a link made for another customer stays where it is
    relay_post(stack, "linked", "messenger", {"address": "777", "detail": {
        "token": stack.runtime.inbound.start_link_token(other, "messenger")}})
    assert stack.runtime.stores.profiles.resolve("chat_id", "777") == pid
    assert "chat_id" not in profile(stack, other).traits


@pytest.mark.parametrize("problem", ["tampered", "expired", "other channel"])
def test_bad_start_links_link_nothing(stack, problem):
    pid = customer(stack)
    inbound = stack.runtime.inbound
    token = inbound.start_link_token(pid, "sms" if problem == "other channel" else "messenger", ttl_seconds=3600)
    if problem == "tampered":
        token = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    if problem == "expired":
        stack.clock.advance(timedelta(hours=2))
    r = relay_post(stack, "linked", "messenger", {"address": "888", "detail": {"token": token}})
    assert r.status_code == 200  # the provider's request was genuine: no retry storm
    assert stack.runtime.stores.profiles.resolve("chat_id", "888") is None
    assert "chat_id" not in profile(stack, pid).traits
    [event] = events(stack, "relay_messenger", "Channel Linked")
    expected = {"tampered": "invalid or tampered token", "expired": "the token has expired",
                "other channel": "the link is for sms, not messenger"}[problem]
    assert event.payload["properties"]["refused"] == expected and event.profile_id is None


def test_the_core_signed_token_form_is_accepted_too(stack):
    pid = customer(stack)
    token = stack.runtime.credentials.sign("link", {"p": pid, "c": "messenger"}, ttl_seconds=600)
    relay_post(stack, "linked", "messenger", {"address": "999", "detail": {"token": token}})
    assert stack.runtime.stores.profiles.resolve("chat_id", "999") == pid


def test_address_traits_match_the_send_policy():
    from chalicelib.services import inbound, send

    assert inbound.ADDRESS_TRAIT is send.ADDRESS_TRAIT  # one table, in chalicelib.addresses


def test_feedback_ids_are_deterministic():
    from chalicelib.services.inbound import feedback_message_id

    at = datetime(2026, 3, 2, 10, tzinfo=UTC)
    a = DeliveryFeedback("delivered", "sms", PHONE, at, "SM1")
    assert feedback_message_id("twilio_sms", a) == feedback_message_id("twilio_sms", DeliveryFeedback(
        "delivered", "sms", PHONE, at + timedelta(seconds=3), "SM1"))  # a retry, seconds later
    assert feedback_message_id("twilio_sms", a) != feedback_message_id("twilio_sms", DeliveryFeedback(
        "failed", "sms", PHONE, at, "SM1"))
    gone = DeliveryFeedback("token_gone", "push", "tok", at)
    assert feedback_message_id("relay_push", gone) != feedback_message_id("relay_push", DeliveryFeedback(
        "token_gone", "push", "tok", at + timedelta(days=1)))


def test_the_inbound_path_loads_no_template_engine(tmp_path):
    import subprocess

    code = f"""
import sys
from chalicelib.config import load_settings
from chalicelib.runtime import Runtime
rt = Runtime(load_settings({{}}, overrides={{"data_dir": {str(tmp_path)!r}, "plugin_settings": {{"twilio_sms": {{
    "account_sid": {twilio_server.ACCOUNT_SID!r}, "auth_token": "t", "from_number": "+15005550006",
    "public_url": "https://x.example"}}}}}}))
try:
    rt.inbound.handle("twilio_sms", b"Body=STOP", {{"X-Twilio-Signature": "bad"}}, {{}})
except Exception as exc:
    print(type(exc).__name__)
print(sorted(m for m in ("liquid", "numpy", "scipy", "sklearn") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.split() == ["Unauthorized", "[]"]
