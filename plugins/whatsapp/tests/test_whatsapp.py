"""WhatsApp against a loopback Cloud API (cloud_api.py) that keeps the 24-hour window itself,
and its webhook with Meta's payload shapes, signed as Meta signs them."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest
from cloud_api import ACCESS_TOKEN, PHONE_NUMBER_ID, CloudApiServer, graph_error
from omnicast_whatsapp import WhatsAppChannel, WhatsAppSettings

from chalicelib.adapters.local.blobs import FolderBlobStore
from chalicelib.clock import ManualClock
from chalicelib.plugin_api import ChannelContext, DeliveryFeedback, OutboundMessage, SignatureError, WebhookRequest

APP_SECRET = "0123456789abcdef0123456789abcdef"
VERIFY = "omnicast-verify-7f3a"
CUSTOMER = "4915112345678"
NOW = datetime(2026, 3, 2, 10, tzinfo=UTC)
TEMPLATES = {"abandoned_cart": {"name": "cart_reminder", "language": "en_US",
                                "body_parameters": ["{first_name}", "{text}"]},
             "*": {"name": "hello_world"}}


@pytest.fixture
def api():
    with CloudApiServer() as server:
        yield server.state


@pytest.fixture
def clock():
    return ManualClock(NOW)


def channel(tmp_path, url="https://graph.facebook.com", clock=None, **settings):
    values = {"access_token": ACCESS_TOKEN, "phone_number_id": PHONE_NUMBER_ID, "app_secret": APP_SECRET,
              "verify_token": VERIFY, "base_url": url, "templates": TEMPLATES, "business_number": "15550001234",
              **settings}
    return WhatsAppChannel(WhatsAppSettings.model_validate(values),
                           ChannelContext(clock=clock or ManualClock(NOW), blobs=FolderBlobStore(tmp_path)))


def msg(text="Your cart is waiting:\nhttps://shop.example/cart", journey="abandoned_cart", to="+" + CUSTOMER,
        **metadata):
    return OutboundMessage(message_id="m1", channel="messenger", to=to, text=text,
                           metadata={"journey": journey, "first_name": "Ann", **metadata})


def signed(payload, secret=APP_SECRET):
    raw = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return WebhookRequest(source="whatsapp", headers={"content-type": "application/json",
                                                      "x-hub-signature-256": signature},
                          body=raw, received_at=NOW)


def webhook(*, messages=(), statuses=(), phone_number_id=PHONE_NUMBER_ID):
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "15550001234", "phone_number_id": phone_number_id}}
    if messages:
        value["contacts"] = [{"profile": {"name": "Ann"}, "wa_id": CUSTOMER}]
        value["messages"] = list(messages)
    if statuses:
        value["statuses"] = list(statuses)
    return {"object": "whatsapp_business_account",
            "entry": [{"id": "102290129340398", "changes": [{"value": value, "field": "messages"}]}]}


def text_message(body, wamid="wamid.HBgNNDkxNTExMjM0NTY3OBUCABIYFjNFQjA", ts=1772445600, **extra):
    return {"from": CUSTOMER, "id": wamid, "timestamp": str(ts), "type": "text", "text": {"body": body}, **extra}


# --------------------------------------------------------------------------- sending
def test_outside_the_window_the_journeys_template_goes(api, tmp_path):
    result = channel(tmp_path, api.url).send(msg())
    assert result.ok and result.provider_message_id == "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI0001"
    assert result.cost_estimate == 0.025
    assert api.sent == [{"messaging_product": "whatsapp", "recipient_type": "individual", "to": CUSTOMER,
                         "type": "template", "template": {
                             "name": "cart_reminder", "language": {"code": "en_US"},
                             "components": [{"type": "body", "parameters": [
                                 {"type": "text", "text": "Ann"},
                                 {"type": "text", "text": "Your cart is waiting: https://shop.example/cart"}]}]}}]
    assert api.auth == [f"Bearer {ACCESS_TOKEN}"]
    other = channel(tmp_path, api.url).send(msg(journey="welcome"))  # falls back to "*"
    assert other.ok and api.sent[-1]["template"] == {"name": "hello_world", "language": {"code": "en_US"}}


def test_inside_the_window_free_text_goes(api, tmp_path, clock):
    ch = channel(tmp_path, api.url, clock=clock)
    ch.inbound(signed(webhook(messages=[text_message("Is the blue one back?", ts=int(NOW.timestamp()))])))
    api.open_windows.add(CUSTOMER)
    clock.advance(timedelta(hours=23, minutes=59))
    result = ch.send(msg())
    assert result.ok and result.cost_estimate == 0.0
    assert api.sent[-1] == {"messaging_product": "whatsapp", "recipient_type": "individual", "to": CUSTOMER,
                            "type": "text", "text": {"preview_url": True,
                                                     "body": "Your cart is waiting:\nhttps://shop.example/cart"}}
    clock.advance(timedelta(minutes=2))  # 24 hours and a minute after the customer wrote
    assert ch.send(msg()).ok and api.sent[-1]["type"] == "template"


def test_a_last_inbound_hint_from_the_core_counts(api, tmp_path):
    api.open_windows.add(CUSTOMER)
    hint = (NOW - timedelta(hours=2)).isoformat()
    assert channel(tmp_path, api.url).send(msg(last_inbound_at=hint)).ok
    assert api.sent[-1]["type"] == "text"
    stale = (NOW - timedelta(hours=30)).isoformat()
    assert channel(tmp_path, api.url).send(msg(last_inbound_at=stale)).ok
    assert api.sent[-1]["type"] == "template"
    assert channel(tmp_path, api.url).send(msg(last_inbound_at="yesterday")).ok  # a bad hint is no hint
    assert api.sent[-1]["type"] == "template"
    sent = len(api.sent)
    long = channel(tmp_path, api.url).send(msg(text="x" * 4097, last_inbound_at=hint))
    assert (long.ok, long.retryable, long.error) == (False, False, "text is 4097 characters; WhatsApp allows 4096")
    empty = channel(tmp_path, api.url).send(msg(text="\n", first_name=""))
    assert empty.error == "template cart_reminder would get an empty body parameter"
    assert len(api.sent) == sent  # neither left


def test_re_engagement_required_falls_back_to_the_template(api, tmp_path):
    # the plugin believes the window is open, Meta says it closed (131047): the template goes instead
    result = channel(tmp_path, api.url).send(msg(last_inbound_at=(NOW - timedelta(hours=1)).isoformat()))
    assert result.ok and result.cost_estimate == 0.025 and api.sent[-1]["type"] == "template"
    no_template = channel(tmp_path, api.url, templates={}).send(msg(last_inbound_at=NOW.isoformat()))
    assert not no_template.ok and not no_template.retryable
    assert no_template.error == "WhatsApp 131047: (#131047) Re-engagement message"


def test_no_template_and_template_problems(api, tmp_path):
    ch = channel(tmp_path, api.url, templates={"abandoned_cart": TEMPLATES["abandoned_cart"]})
    missing = ch.send(msg(journey="welcome"))
    assert (missing.ok, missing.retryable, missing.error) == (
        False, False, "outside the 24-hour window and no template for journey 'welcome'")
    lacking = ch.send(OutboundMessage(message_id="m2", channel="messenger", to=CUSTOMER, text="x",
                                      metadata={"journey": "abandoned_cart"}))
    assert lacking.error == "template cart_reminder needs 'first_name', which the message lacks"
    chosen = channel(tmp_path, api.url).send(msg(journey="welcome", whatsapp_template="abandoned_cart"))
    assert chosen.ok and api.sent[-1]["template"]["name"] == "cart_reminder"
    unapproved = channel(tmp_path, api.url, templates={"*": {"name": "not_approved"}}).send(msg())
    assert not unapproved.ok and not unapproved.retryable
    assert unapproved.error == "WhatsApp 132001: (#132001) Template name does not exist in the translation"
    wrong_count = channel(tmp_path, api.url, templates={"*": {"name": "cart_reminder"}}).send(msg())
    assert wrong_count.error.startswith("WhatsApp 132000:") and not wrong_count.retryable


@pytest.mark.parametrize(("status", "answer", "headers", "retryable", "error", "after"), [
    (429, graph_error(130429, "(#130429) Rate limit hit"), {"Retry-After": "30"}, True,
     "rate limited: WhatsApp 130429: (#130429) Rate limit hit", 30.0),
    (400, graph_error(130429, "(#130429) Rate limit hit"), {}, True,
     "rate limited: WhatsApp 130429: (#130429) Rate limit hit", None),
    (400, graph_error(131056, "(#131056) (Business Account, Consumer Account) pair rate limit hit"), {}, True,
     "rate limited: WhatsApp 131056: (#131056) (Business Account, Consumer Account) pair rate limit hit", None),
    (500, graph_error(131000, "(#131000) Something went wrong"), {}, True,
     "WhatsApp 131000: (#131000) Something went wrong", None),
    (503, {}, {}, True, "HTTP 503", None),
    (400, graph_error(131026, "(#131026) Message undeliverable"), {}, False,
     "WhatsApp 131026: (#131026) Message undeliverable", None),
    (401, graph_error(190, "Error validating access token: Session has expired"), {}, False,
     "access token rejected: WhatsApp 190: Error validating access token: Session has expired", None),
])
def test_graph_api_errors(api, tmp_path, status, answer, headers, retryable, error, after):
    api.script.append((status, answer, headers))
    result = channel(tmp_path, api.url).send(msg())
    assert not result.ok and result.status == "failed"
    assert (result.retryable, result.error, result.retry_after_seconds) == (retryable, error, after)


def test_a_wrong_token_an_unreachable_api_and_bad_numbers(api, tmp_path):
    wrong = channel(tmp_path, api.url, access_token="EAAG-other").send(msg())
    assert not wrong.ok and not wrong.retryable and wrong.error.startswith("access token rejected: WhatsApp 190")
    down = channel(tmp_path, "http://127.0.0.1:9").send(msg())
    assert not down.ok and down.retryable and down.error == "WhatsApp unreachable: URLError"
    assert channel(tmp_path, api.url).send(msg(to="ann@example.com")).error == (
        "to is not a WhatsApp number (digits, country code first)")
    printed = f"{channel(tmp_path, api.url)!r} {wrong} {down} {channel(tmp_path).settings}"
    assert ACCESS_TOKEN not in printed and APP_SECRET not in printed and VERIFY not in printed


# --------------------------------------------------------------------------- verification handshake
def handshake(**query):
    return WebhookRequest(source="whatsapp", headers={}, body=b"", received_at=NOW, query=query)


def test_the_get_handshake_echoes_the_challenge(tmp_path):
    result = channel(tmp_path).inbound(handshake(**{"hub.mode": "subscribe", "hub.verify_token": VERIFY,
                                                    "hub.challenge": "1158201444"}))
    assert (result.status_code, result.body, result.content_type, result.feedback) == (
        200, "1158201444", "text/plain", [])


@pytest.mark.parametrize(("query", "reason"), [
    ({"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"}, "hub.verify_token does not match"),
    ({"hub.mode": "subscribe", "hub.challenge": "1"}, "hub.verify_token does not match"),
    ({"hub.mode": "unsubscribe", "hub.verify_token": VERIFY, "hub.challenge": "1"}, "hub.mode must be subscribe"),
])
def test_a_bad_handshake_is_refused(tmp_path, query, reason):
    with pytest.raises(SignatureError) as info:
        channel(tmp_path).inbound(handshake(**query))
    assert info.value.reason == reason
    with pytest.raises(SignatureError, match="verify_token is not set"):
        channel(tmp_path, verify_token=None).inbound(handshake(**query))


# --------------------------------------------------------------------------- signed POSTs
def test_signature_valid_tampered_missing(tmp_path):
    ch = channel(tmp_path)
    good = signed(webhook(messages=[text_message("hi")]))
    assert [f.kind for f in ch.inbound(good).feedback] == ["replied"]
    tampered = WebhookRequest(source="whatsapp", headers=good.headers, body=good.body.replace(b"hi", b"ho"),
                              received_at=NOW)
    cases = [
        (tampered, "signature does not match"),
        (signed(webhook(messages=[text_message("hi")]), secret="another-secret"), "signature does not match"),
        (WebhookRequest(source="whatsapp", headers={}, body=good.body, received_at=NOW),
         "missing X-Hub-Signature-256 header"),
        (WebhookRequest(source="whatsapp", headers={"x-hub-signature-256": "sha1=abcd"}, body=good.body,
                        received_at=NOW), "X-Hub-Signature-256 is not sha256=<hex>"),
        (WebhookRequest(source="whatsapp", headers={"x-hub-signature-256": "sha256=zz"}, body=good.body,
                        received_at=NOW), "X-Hub-Signature-256 is not sha256=<hex>"),
    ]
    for request, reason in cases:
        with pytest.raises(SignatureError) as info:
            ch.inbound(request)
        assert info.value.reason == reason
    with pytest.raises(SignatureError, match="app_secret is not set"):
        channel(tmp_path, app_secret=None).inbound(good)


def feedback(kind, text, wamid="wamid.HBgNNDkxNTExMjM0NTY3OBUCABIYFjNFQjA", type_="text"):
    return DeliveryFeedback(kind=kind, channel="messenger", address=CUSTOMER,
                            at=datetime.fromtimestamp(1772445600, UTC), provider_message_id=wamid,
                            detail={"text": text, "type": type_})


@pytest.mark.parametrize(("message", "expected"), [
    (text_message("Is the blue one back?"), [feedback("replied", "Is the blue one back?")]),
    (text_message(" stop "), [feedback("opted_out", " stop ")]),
    (text_message("START"), [feedback("opted_in", "START")]),
    (text_message("help"), [feedback("help", "help")]),
    ({"from": CUSTOMER, "id": "wamid.B", "timestamp": "1772445600", "type": "button",
      "context": {"from": "15550001234", "id": "wamid.ORIGINAL"},
      "button": {"payload": "Stop promotions", "text": "Stop promotions"}},
     [feedback("opted_out", "Stop promotions", "wamid.B", "button")]),
    ({"from": CUSTOMER, "id": "wamid.I", "timestamp": "1772445600", "type": "interactive",
      "interactive": {"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes please"}}},
     [feedback("replied", "Yes please", "wamid.I", "interactive")]),
    ({"from": CUSTOMER, "id": "wamid.R", "timestamp": "1772445600", "type": "reaction",
      "reaction": {"message_id": "wamid.OUT1", "emoji": "\U0001F60D"}},
     [feedback("replied", "\U0001F60D", "wamid.R", "reaction")]),
    ({"from": CUSTOMER, "id": "wamid.P", "timestamp": "1772445600", "type": "image",
      "image": {"caption": "this one", "mime_type": "image/jpeg", "sha256": "x", "id": "1"}},
     [feedback("replied", "this one", "wamid.P", "image")]),
])
def test_messages_become_feedback(tmp_path, message, expected):
    assert channel(tmp_path).inbound(signed(webhook(messages=[message]))).feedback == expected


def test_a_start_link_links_the_chat(tmp_path):
    ch = channel(tmp_path)
    token = "AQAAAABpn3xwcHJvZl8wMTIzNDVhYmNkZWbd1N5x0p1J9g0wBQ"
    assert ch.start_link(token) == f"https://wa.me/15550001234?text=START%20{token}"
    result = ch.inbound(signed(webhook(messages=[text_message(f"START {token}")])))
    at = datetime.fromtimestamp(1772445600, UTC)
    assert result.feedback == [
        DeliveryFeedback(kind="linked", channel="messenger", address=CUSTOMER, at=at,
                         provider_message_id="wamid.HBgNNDkxNTExMjM0NTY3OBUCABIYFjNFQjA", detail={"token": token}),
        feedback("opted_in", "START")]


def test_statuses_become_receipts(tmp_path):
    def status(state, **extra):
        return {"id": "wamid.OUT1", "status": state, "timestamp": "1772449200", "recipient_id": CUSTOMER, **extra}

    failed = status("failed", errors=[{"code": 131047, "title": "Re-engagement message",
                                       "error_data": {"details": "more than 24 hours"}}])
    result = channel(tmp_path).inbound(signed(webhook(statuses=[status("sent"), status("delivered"),
                                                                status("read"), failed])))
    at = datetime.fromtimestamp(1772449200, UTC)
    assert result.feedback == [
        DeliveryFeedback(kind="delivered", channel="messenger", address=CUSTOMER, at=at,
                         provider_message_id="wamid.OUT1", detail={"status": "delivered"}),
        DeliveryFeedback(kind="opened", channel="messenger", address=CUSTOMER, at=at,
                         provider_message_id="wamid.OUT1", detail={"status": "read"}),
        DeliveryFeedback(kind="failed", channel="messenger", address=CUSTOMER, at=at,
                         provider_message_id="wamid.OUT1",
                         detail={"status": "failed", "error_code": 131047, "error": "Re-engagement message"})]


def test_duplicates_and_other_numbers_change_nothing(tmp_path):
    ch = channel(tmp_path)
    newer = signed(webhook(messages=[text_message("later", wamid="wamid.N", ts=1772449200)]))
    older = signed(webhook(messages=[text_message("earlier", wamid="wamid.O", ts=1772445600)]))
    first = ch.inbound(newer)
    assert ch.inbound(newer).feedback == first.feedback  # Meta redelivers: the same ids again
    ch.inbound(older)  # arriving late must not move the window back
    assert ch.last_inbound("+" + CUSTOMER) == datetime.fromtimestamp(1772449200, UTC)
    other = ch.inbound(signed(webhook(messages=[text_message("hi")], phone_number_id="999")))
    assert other.feedback == []
    assert ch.inbound(signed({"object": "page", "entry": []})).feedback == []


@pytest.mark.parametrize(("body", "answer"), [(b"{nope", "body is not JSON"), (b'{"object": 1}', "entry is missing")])
def test_malformed_bodies_are_400(tmp_path, body, answer):
    signature = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    request = WebhookRequest(source="whatsapp", headers={"x-hub-signature-256": signature}, body=body,
                             received_at=NOW)
    result = channel(tmp_path).inbound(request)
    assert (result.status_code, result.body, result.feedback) == (400, answer, [])


def test_settings_errors_do_not_echo_secrets():
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        WhatsAppSettings(access_token=["EAAG-leaky-token"], phone_number_id="not digits")
    assert "access_token" in str(info.value) and "phone_number_id" in str(info.value)
    assert "EAAG-leaky-token" not in str(info.value)
