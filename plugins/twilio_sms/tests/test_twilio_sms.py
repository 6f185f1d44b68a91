"""Twilio SMS against a loopback server that answers as Twilio's docs say, and Twilio's signed webhooks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import urlencode

import pytest
from omnicast_twilio_sms import FieldError, TwilioSms, TwilioSmsSettings, keyword, twilio_signature, twiml
from pydantic import ValidationError
from twilio_server import ACCOUNT_SID, AUTH_TOKEN, FROM, error, twilio_api

from chalicelib.adapters.local.blobs import FolderBlobStore
from chalicelib.clock import ManualClock
from chalicelib.plugin_api import ChannelContext, OutboundMessage, SignatureError, WebhookRequest

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
PUBLIC = "https://abc123.execute-api.eu-west-1.amazonaws.com/api"
INBOUND = f"{PUBLIC}/v1/inbound/twilio_sms"
CUSTOMER = "+14155552671"


def channel(tmp_path, base_url="https://api.twilio.com", **overrides):
    settings = {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": FROM, "base_url": base_url,
                "public_url": PUBLIC, "price_per_segment": 0.01, **overrides}
    return TwilioSms(TwilioSmsSettings.model_validate(settings),
                     ChannelContext(clock=ManualClock(NOW), blobs=FolderBlobStore(tmp_path)))


def sms(to=CUSTOMER, text="Your order shipped"):
    return OutboundMessage(message_id="m_1", channel="sms", to=to, text=text, metadata={"purpose": "transactional"})


# --------------------------------------------------------------------------- sending
def test_sends_form_encoded_with_basic_auth_and_a_status_callback(tmp_path):
    with twilio_api() as api:
        result = channel(tmp_path, api.url).send(sms(text="x" * 200))
    assert result.ok and result.provider_message_id.startswith("SM") and len(result.provider_message_id) == 34
    assert result.cost_estimate == 0.02  # Twilio counted two segments
    assert api.received == [{"To": CUSTOMER, "From": FROM, "Body": "x" * 200, "StatusCallback": INBOUND}]


def test_a_messaging_service_replaces_the_from_number_and_callbacks_can_be_off(tmp_path):
    service = "MG" + "ab" * 16
    with twilio_api() as api:
        ch = channel(tmp_path, api.url, from_number=None, messaging_service_sid=service, status_callbacks=False)
        assert ch.send(sms()).ok
    assert api.received == [{"To": CUSTOMER, "MessagingServiceSid": service, "Body": "Your order shipped"}]


@pytest.mark.parametrize("to", ["0612345678", "+1415555267", "14155552671", "+1 415 555 2671", "+999123456789"])
def test_only_valid_e164_numbers_are_sent(tmp_path, to):
    with twilio_api() as api:
        result = channel(tmp_path, api.url).send(sms(to=to))
    assert not result.ok and not result.retryable and result.error == "not a valid E.164 phone number"
    assert api.received == []


@pytest.mark.parametrize(("answer", "retryable", "after", "text"), [
    (error(400, 21211, "The 'To' number +14155552671 is not a valid phone number."), False, None,
     "Twilio error 21211 (HTTP 400): invalid 'To' phone number"),
    (error(400, 21610, "Attempt to send to unsubscribed recipient"), False, None, "Twilio error 21610 (HTTP 400)"),
    ((429, {"Retry-After": "7", "Content-Type": "application/json"},
      json.dumps({"code": 20429, "message": "Too Many Requests", "status": 429}).encode()), True, 7.0,
     "Twilio error 20429 (HTTP 429): too many requests"),
    ((429, {"Retry-After": format_datetime(NOW + timedelta(seconds=90), usegmt=True)}, b""), True, 90.0,
     "Twilio HTTP 429"),
    (error(500, 20500, "Internal Server Error"), True, None, "Twilio error 20500 (HTTP 500)"),
    ((503, {"Content-Type": "text/html"}, b"<html>Service Unavailable</html>"), True, None, "Twilio HTTP 503"),
])
def test_failures(tmp_path, answer, retryable, after, text):
    with twilio_api() as api:
        api.answers.append(answer)
        result = channel(tmp_path, api.url).send(sms())
    assert not result.ok and result.retryable is retryable and result.retry_after_seconds == after
    assert result.error.startswith(text)
    assert CUSTOMER not in result.error  # Twilio's own message quotes the number; ours does not


def test_wrong_credentials_are_not_retried(tmp_path):
    with twilio_api() as api:
        result = channel(tmp_path, api.url, auth_token="not-the-token").send(sms())
    assert not result.ok and not result.retryable
    assert result.error == "Twilio error 20003 (HTTP 401): authentication failed (account SID or auth token)"


def test_an_unreachable_api_is_retryable(tmp_path):
    with twilio_api() as api:
        url = api.url
    result = channel(tmp_path, url).send(sms())  # the server is gone: connection refused
    assert not result.ok and result.retryable and result.error.startswith("Twilio unreachable")


def test_settings_need_a_sender_and_hide_the_token(tmp_path):
    with pytest.raises(ValidationError, match="set from_number or messaging_service_sid"):
        TwilioSmsSettings(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    with pytest.raises(ValidationError, match="account_sid"):
        TwilioSmsSettings(account_sid="AC123", auth_token=AUTH_TOKEN, from_number=FROM)
    ch = channel(tmp_path)
    assert AUTH_TOKEN not in f"{ch!r} {ch.settings} {ch.settings.model_dump()}"


# --------------------------------------------------------------------------- signatures
def test_signature_matches_twilios_documented_example():
    # the example of twilio.com/docs/usage/security: auth token 12345, this URL and these parameters
    params = [("CallSid", "CA1234567890ABCDE"), ("Caller", "+14158675309"), ("Digits", "1234"),
              ("From", "+14158675309"), ("To", "+18005551212")]
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert twilio_signature("12345", url, params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert twilio_signature("12345", url, list(reversed(params))) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert twilio_signature("12345", url.replace("https", "http"), params) != "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert twilio_signature("12346", url, params) != "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def webhook(params, *, token=AUTH_TOKEN, url=INBOUND, signature=None, query=None):
    body = urlencode(params).encode()
    sig = signature if signature is not None else twilio_signature(token, url, list(params.items()))
    headers = {"content-type": "application/x-www-form-urlencoded"}
    if sig:
        headers["x-twilio-signature"] = sig
    return WebhookRequest(source="twilio_sms", headers=headers, body=body, received_at=NOW, query=query or {})


def incoming(text, sid="SM" + "1" * 32, **extra):
    return {"ToCountry": "US", "SmsMessageSid": sid, "NumMedia": "0", "SmsSid": sid, "SmsStatus": "received",
            "Body": text, "To": FROM, "NumSegments": "1", "MessageSid": sid, "AccountSid": ACCOUNT_SID,
            "From": CUSTOMER, "ApiVersion": "2010-04-01", **extra}


def status(state, sid="SM" + "2" * 32, **extra):
    return {"SmsSid": sid, "SmsStatus": state, "MessageStatus": state, "To": CUSTOMER, "MessageSid": sid,
            "AccountSid": ACCOUNT_SID, "From": FROM, "ApiVersion": "2010-04-01", **extra}


def test_refuses_unsigned_forged_and_foreign_url_requests(tmp_path):
    ch = channel(tmp_path)
    with pytest.raises(SignatureError, match="missing X-Twilio-Signature"):
        ch.inbound(webhook(incoming("STOP"), signature=""))
    with pytest.raises(SignatureError, match="does not match"):
        ch.inbound(webhook(incoming("STOP"), token="another-accounts-token"))
    with pytest.raises(SignatureError, match="does not match"):  # signed for the host the function sees
        ch.inbound(webhook(incoming("STOP"), url="https://internal-host/v1/inbound/twilio_sms"))
    tampered = webhook(incoming("START"))
    tampered = WebhookRequest(source="twilio_sms", headers=tampered.headers,
                              body=tampered.body.replace(b"START", b"STOP"), received_at=NOW)
    with pytest.raises(SignatureError, match="does not match"):
        ch.inbound(tampered)
    with pytest.raises(SignatureError, match="public_url is not set"):
        channel(tmp_path, public_url=None).inbound(webhook(incoming("STOP")))


def test_the_query_string_is_part_of_the_signed_url(tmp_path):
    params = incoming("hello")
    ok = channel(tmp_path).inbound(webhook(params, url=INBOUND + "?shop=main", query={"shop": "main"}))
    assert [f.kind for f in ok.feedback] == ["replied"]
    with pytest.raises(SignatureError):
        channel(tmp_path).inbound(webhook(params, url=INBOUND, query={"shop": "main"}))


@pytest.mark.parametrize(("text", "kind"), [
    ("STOP", "opted_out"), ("stop", "opted_out"), (" Unsubscribe. ", "opted_out"), ("STOPALL", "opted_out"),
    ("cancel", "opted_out"), ("End", "opted_out"), ("QUIT!", "opted_out"),
    ("START", "opted_in"), ("yes", "opted_in"), ("Unstop", "opted_in"),
    ("please stop sending", "replied"), ("When does my order arrive?", "replied"),
])
def test_keywords(tmp_path, text, kind):
    result = channel(tmp_path).inbound(webhook(incoming(text)))
    [fb] = result.feedback
    assert (fb.kind, fb.channel, fb.address, fb.provider_message_id) == (kind, "sms", CUSTOMER, "SM" + "1" * 32)
    assert fb.detail == ({"text": text} if kind == "replied" else {"keyword": keyword(text)})
    assert (result.status_code, result.content_type) == (200, "text/xml")
    assert result.body == '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def test_an_mms_reply_counts_its_media(tmp_path):
    [fb] = channel(tmp_path).inbound(webhook(incoming("look", NumMedia="2", MediaUrl0="https://x/1"))).feedback
    assert (fb.kind, fb.detail) == ("replied", {"text": "look", "media": 2})


def test_help_is_answered_with_the_configured_text_in_twiml(tmp_path):
    result = channel(tmp_path, help_text="Shop & Co: reply STOP to opt out <3").inbound(webhook(incoming("help")))
    assert [f.kind for f in result.feedback] == ["help"]
    assert result.body == ('<?xml version="1.0" encoding="UTF-8"?><Response><Message>'
                           "Shop &amp; Co: reply STOP to opt out &lt;3</Message></Response>")
    assert channel(tmp_path, help_text="").inbound(webhook(incoming("INFO"))).body == twiml()


def test_advanced_opt_out_type_wins_over_the_text(tmp_path):
    # a custom opt-out keyword configured in the Messaging Service: Twilio says OptOutType=STOP
    [fb] = channel(tmp_path).inbound(webhook(incoming("ARRET", OptOutType="STOP"))).feedback
    assert fb.kind == "opted_out"


@pytest.mark.parametrize(("params", "kinds"), [
    (status("delivered"), ["delivered"]),
    (status("undelivered", ErrorCode="30003"), ["failed"]),
    (status("failed", ErrorCode="30006"), ["failed", "bounced"]),  # a landline: it will never receive SMS
    (status("sent"), []), (status("queued"), []),
])
def test_status_callbacks(tmp_path, params, kinds):
    result = channel(tmp_path).inbound(webhook(params))
    assert [f.kind for f in result.feedback] == kinds
    assert all(f.address == CUSTOMER and f.provider_message_id == "SM" + "2" * 32 for f in result.feedback)
    if kinds and params.get("ErrorCode"):
        assert result.feedback[0].detail == {"status": params["MessageStatus"], "error_code": params["ErrorCode"]}
    assert result.body == twiml() and result.content_type == "text/xml"


@pytest.mark.parametrize(("params", "field"), [
    ({k: v for k, v in incoming("hi").items() if k != "From"}, "From"),
    ({k: v for k, v in status("delivered").items() if k not in ("MessageSid", "SmsSid")}, "MessageSid"),
    ({"AccountSid": ACCOUNT_SID}, "MessageStatus"),
])
def test_malformed_webhooks_name_the_field(tmp_path, params, field):
    with pytest.raises(FieldError) as caught:
        channel(tmp_path).inbound(webhook(params))
    assert caught.value.field == field and field in str(caught.value)
