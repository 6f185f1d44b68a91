"""Telegram against a loopback Bot API (bot_api.py), and its webhook with real update shapes."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
from bot_api import TOKEN, BotApiServer, error
from omnicast_telegram import TelegramChannel, TelegramError, TelegramSettings, telegram_html
from pydantic import ValidationError

from chalicelib.adapters.local.blobs import FolderBlobStore
from chalicelib.clock import ManualClock
from chalicelib.plugin_api import ChannelContext, DeliveryFeedback, OutboundMessage, SignatureError, WebhookRequest

SECRET = "wh-secret_0123456789"
NOW = datetime(2026, 3, 2, 10, tzinfo=UTC)
# a token as chalicelib.services.credentials signs it: base64url(json) "." base64url(mac), 80+ chars
CORE_TOKEN = "eyJwIjoicHJvZl8wMTIzNDU2Nzg5YWJjZGVmIiwiZXhwIjoiMTc3MjQ0OTIwMCJ9.Q2hhbm5lbC1saW5rLXNpZ25hdHVyZQ"


@pytest.fixture
def api():
    with BotApiServer() as server:
        yield server.state


def channel(tmp_path, url="https://api.telegram.org", **settings):
    values = {"bot_token": TOKEN, "base_url": url, "webhook_secret": SECRET, "bot_username": "shop_bot",
              **settings}
    return TelegramChannel(TelegramSettings(**values),
                           ChannelContext(clock=ManualClock(NOW), blobs=FolderBlobStore(tmp_path)))


def msg(to="42", text="Your cart misses you <3 & so do we", html=None):
    return OutboundMessage(message_id="m1", channel="messenger", to=to, text=text, html=html)


# --------------------------------------------------------------------------- sending
def test_plain_text_is_escaped_for_parse_mode_html(api, tmp_path):
    result = channel(tmp_path, api.url).send(msg())
    assert result.ok and result.provider_message_id == "42:1" and result.status == "sent"
    assert api.calls == [("sendMessage", {"chat_id": "42", "text": "Your cart misses you &lt;3 &amp; so do we",
                                          "parse_mode": "HTML"})]
    assert api.paths == [f"/bot{TOKEN}/sendMessage"]
    assert channel(tmp_path, api.url).send(msg()).provider_message_id == "42:2"


def test_an_html_body_is_reduced_to_telegrams_tags(api, tmp_path):
    body = ('<div><h1>Sale</h1><p>Hi <strong>Ann</strong>, <em>20%</em> off<br>today</p>'
            '<script>alert(1)</script><a href="https://shop.example/c?a=1&b=2" class="x">shop</a>'
            '<a href="javascript:alert(1)">no</a><table><tr><td>cell</td></tr></table></div>')
    expected = ('Sale\nHi <strong>Ann</strong>, <em>20%</em> off\ntoday\n'
                '<a href="https://shop.example/c?a=1&amp;b=2">shop</a>no\ncell')
    assert telegram_html(body) == expected
    result = channel(tmp_path, api.url).send(msg(html=body))
    assert result.ok, result
    assert api.calls[0][1]["text"] == expected
    assert telegram_html("<b>open <i>nested</b> tail") == "<b>open <i>nested</i></b> tail"


def test_unsupported_tags_would_fail_at_telegram(api, tmp_path):
    # what the reduction protects against: the real API refuses tags it does not know
    api.chats.add("43")
    ch = channel(tmp_path, api.url)
    status, answer, _ = ch._call("sendMessage", {"chat_id": "43", "text": "<div>x</div>", "parse_mode": "HTML"})
    assert status == 400 and answer["description"].startswith("Bad Request: can't parse entities")


def test_length_limit_counts_utf16_after_entities(api, tmp_path):
    ch = channel(tmp_path, api.url)
    assert ch.send(msg(text="&" * 4096)).ok  # escaped to &amp; but 4096 characters after parsing
    too_long = ch.send(msg(text="🙂" * 2049))  # 4098 UTF-16 code units
    assert not too_long.ok and not too_long.retryable
    assert too_long.error == "text is 4098 characters; Telegram allows 4096"
    assert len(api.calls) == 1  # the long one never left
    empty = ch.send(msg(text=""))
    assert not empty.ok and empty.error == "text is empty"


@pytest.mark.parametrize(("setup", "retryable", "error_text", "after"), [
    (lambda s: s.blocked.add("42"), False, "token_gone: Forbidden: bot was blocked by the user", None),
    (lambda s: s.chats.discard("42"), False, "Bad Request: chat not found", None),
    (lambda s: s.script.append((429, error(429, "Too Many Requests: retry after 7", retry_after=7), {})),
     True, "rate limited: Too Many Requests: retry after 7", 7.0),
    (lambda s: s.script.append((429, {}, {"Retry-After": "3"})), True, "rate limited: HTTP 429", 3.0),
    (lambda s: s.script.append((502, {}, {})), True, "Telegram 502: HTTP 502", None),
    (lambda s: s.script.append((500, error(500, "Internal Server Error"), {})), True,
     "Telegram 500: Internal Server Error", None),
    (lambda s: setattr(s, "token", "999:other"), False, "bot token rejected: Unauthorized", None),
])
def test_errors_as_the_bot_api_answers_them(api, tmp_path, setup, retryable, error_text, after):
    setup(api)
    result = channel(tmp_path, api.url).send(msg())
    assert not result.ok and result.status == "failed"
    assert (result.retryable, result.error, result.retry_after_seconds) == (retryable, error_text, after)
    gone = [DeliveryFeedback(kind="token_gone", channel="messenger", address="42", at=NOW,
                             detail={"reason": "Forbidden: bot was blocked by the user"})]
    assert list(result.feedback) == (gone if error_text.startswith("token_gone") else [])


def test_bad_addresses_and_an_unreachable_api(tmp_path):
    assert channel(tmp_path).send(msg(to="ann")).error == "to is not a Telegram chat id"
    down = channel(tmp_path, "http://127.0.0.1:9").send(msg())
    assert not down.ok and down.retryable and down.error == "Telegram unreachable: URLError"


def test_the_bot_token_never_shows(api, tmp_path):
    api.script.append((500, error(500, "Internal Server Error"), {}))
    ch = channel(tmp_path, api.url)
    printed = [repr(ch), str(ch.settings), repr(ch.settings), str(ch.settings.model_dump()), str(ch.send(msg()))]
    # a token with characters a URL cannot carry must not end up in an InvalidURL message either
    weird = channel(tmp_path, api.url, bot_token="12:ab c\r\nX-Evil: 1")
    printed.append(str(weird.send(msg())))
    printed.append(str(channel(tmp_path, "http://127.0.0.1:9").send(msg())))
    with pytest.raises(ValidationError) as info:
        TelegramSettings(bot_token=TOKEN, base_url="not a url")
    printed.append(str(info.value))
    for text in printed:
        assert TOKEN not in text and "AAH-test_token" not in text and "ab c" not in text, text


def test_set_webhook_sends_the_secret_and_update_types(api, tmp_path):
    channel(tmp_path, api.url).set_webhook("https://omnicast.example/v1/inbound/telegram")
    assert api.calls == [("setWebhook", {"url": "https://omnicast.example/v1/inbound/telegram", "secret_token": SECRET,
                                         "allowed_updates": ["message", "my_chat_member"],
                                         "drop_pending_updates": False})]
    api.token = "other"
    with pytest.raises(TelegramError, match="setWebhook failed: HTTP 401 Unauthorized") as info:
        channel(tmp_path, api.url).set_webhook("https://omnicast.example/v1/inbound/telegram")
    assert TOKEN not in str(info.value)


# --------------------------------------------------------------------------- start links
def test_start_payloads_fit_telegrams_deep_links(tmp_path):
    ch = channel(tmp_path)
    assert ch.start_payload("short_Token-1") == "short_Token-1"
    payload = ch.start_payload(CORE_TOKEN)
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", payload)
    assert ch.start_payload(CORE_TOKEN) == payload  # deterministic: the same link twice
    assert ch.token_for(payload) == CORE_TOKEN
    assert channel(tmp_path).token_for(payload) == CORE_TOKEN  # kept in the blob store, not in memory
    assert ch.token_for("unknown_payload") == "unknown_payload"
    assert ch.start_link(CORE_TOKEN) == f"https://t.me/shop_bot?start={payload}"
    with pytest.raises(TelegramError, match="bot_username is not set"):
        channel(tmp_path, bot_username=None).start_link(CORE_TOKEN)


# --------------------------------------------------------------------------- inbound
def update(update_id=900001, text="hello", chat_id=42, chat_type="private", **extra):
    message = {"message_id": 77, "date": 1772445600, "text": text,
               "from": {"id": chat_id, "is_bot": False, "first_name": "Ann", "language_code": "de"},
               "chat": {"id": chat_id, "first_name": "Ann", "type": chat_type}, **extra}
    if text is None:
        message.pop("text")
    return {"update_id": update_id, "message": message}


def request(body, secret=SECRET):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    if secret is not None:
        headers["x-telegram-bot-api-secret-token"] = secret
    return WebhookRequest(source="telegram", headers=headers, body=raw, received_at=NOW)


AT = datetime.fromtimestamp(1772445600, UTC)


def fb(kind, **detail):
    return DeliveryFeedback(kind=kind, channel="messenger", address="42", at=AT, provider_message_id="42:77",
                            detail=detail)


def test_start_with_a_payload_links_the_chat_and_opts_in(tmp_path):
    ch = channel(tmp_path)
    payload = ch.start_payload(CORE_TOKEN)
    result = ch.inbound(request(update(text=f"/start {payload}")))
    assert result.status_code == 200
    assert result.feedback == [fb("linked", token=CORE_TOKEN, language="de"), fb("opted_in", text=f"/start {payload}")]
    again = ch.inbound(request(update(text=f"/start {payload}")))  # Telegram redelivers: same ids
    assert again.feedback == result.feedback
    assert ch.inbound(request(update(text="/start"))).feedback == [fb("opted_in", text="/start")]


def test_commands_and_replies(tmp_path):
    ch = channel(tmp_path)
    stop = ch.inbound(request(update(text="/stop@shop_bot")))
    assert stop.feedback == [fb("opted_out", text="/stop@shop_bot")]
    assert stop.content_type == "application/json"
    assert json.loads(stop.body) == {"method": "sendMessage", "chat_id": 42, "text": ch.settings.stop_reply}
    helped = ch.inbound(request(update(text="/help")))
    assert helped.feedback == [fb("help", text="/help")] and json.loads(helped.body)["text"] == ch.settings.help_reply
    quiet = channel(tmp_path, stop_reply=None).inbound(request(update(text="/stop")))
    assert quiet.feedback == [fb("opted_out", text="/stop")] and quiet.body == ""
    assert ch.inbound(request(update(text="Is the blue one back?"))).feedback == [
        fb("replied", text="Is the blue one back?")]
    photo = ch.inbound(request(update(text=None, photo=[{"file_id": "x"}], caption="this one")))
    assert photo.feedback == [fb("replied", text="this one", content="photo")]
    assert ch.inbound(request(update(text="/stop", chat_id=-100123, chat_type="supergroup"))).feedback == []
    assert ch.inbound(request({"update_id": 5, "edited_message": update()["message"]})).feedback == []


def test_blocking_the_bot_is_token_gone(tmp_path):
    def member(status):
        return {"update_id": 900002, "my_chat_member": {
            "chat": {"id": 42, "first_name": "Ann", "type": "private"},
            "from": {"id": 42, "is_bot": False, "first_name": "Ann"}, "date": 1772449200,
            "old_chat_member": {"user": {"id": 1, "is_bot": True, "first_name": "Shop"}, "status": "member"},
            "new_chat_member": {"user": {"id": 1, "is_bot": True, "first_name": "Shop"}, "status": status,
                                "until_date": 0}}}

    result = channel(tmp_path).inbound(request(member("kicked")))
    assert result.feedback == [DeliveryFeedback(
        kind="token_gone", channel="messenger", address="42", at=datetime.fromtimestamp(1772449200, UTC),
        provider_message_id="42:member:1772449200:kicked", detail={"reason": "bot blocked by the user"})]
    assert channel(tmp_path).inbound(request(member("member"))).feedback == []


@pytest.mark.parametrize(("secret", "reason"), [
    (None, "missing X-Telegram-Bot-Api-Secret-Token header"),
    ("", "missing X-Telegram-Bot-Api-Secret-Token header"),
    ("wh-secret_0123456788", "X-Telegram-Bot-Api-Secret-Token does not match"),
    (SECRET + "x", "X-Telegram-Bot-Api-Secret-Token does not match"),
])
def test_the_secret_header_is_required(tmp_path, secret, reason):
    with pytest.raises(SignatureError) as info:
        channel(tmp_path).inbound(request(update(text="/stop"), secret=secret))
    assert info.value.reason == reason
    with pytest.raises(SignatureError, match="webhook_secret is not set"):
        channel(tmp_path, webhook_secret=None).inbound(request(update()))


@pytest.mark.parametrize(("body", "answer"), [
    (b"{not json", "body is not JSON"),
    (b"[]", "update_id is missing"),
    (json.dumps({"update_id": 1, "message": {"message_id": 1, "chat": {"type": "private"}}}).encode(),
     "message.chat.id is missing or not int"),
    (json.dumps({"update_id": 1, "message": {"chat": {"id": 4, "type": "private"}}}).encode(),
     "message.message_id is missing or not int"),
])
def test_malformed_updates_are_400_naming_the_field(tmp_path, body, answer):
    result = channel(tmp_path).inbound(request(body))
    assert (result.status_code, result.body, result.feedback) == (400, answer, [])


def test_a_webhook_secret_telegram_would_refuse_is_a_settings_error():
    with pytest.raises(ValidationError) as info:
        TelegramSettings(bot_token=TOKEN, webhook_secret="has spaces and s3cr3t")
    assert "webhook_secret must be 1-256 characters" in str(info.value)
    assert "s3cr3t" not in str(info.value)
