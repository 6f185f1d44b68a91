"""SMS through Twilio's Messages API, and Twilio's webhooks back: receipts, replies, STOP/START/HELP.

Sending: ``POST {base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json``, form-encoded
(``To``, ``From`` or ``MessagingServiceSid``, ``Body``, ``StatusCallback``), HTTP basic
auth with the account SID and auth token. Numbers must be valid E.164. 201 is sent (the
``sid`` is the provider message id); 429 (Retry-After honoured) and 5xx are retryable;
other 4xx are not, and the error names Twilio's error code (21211, 21610, ...).

Inbound, at ``/v1/inbound/twilio_sms``: every request must carry a valid
``X-Twilio-Signature`` (base64 HMAC-SHA1, keyed with the auth token, of the URL Twilio
called followed by the POST parameters sorted by name, each name then value). Behind API
Gateway the host the function sees is not the one Twilio called, so the URL is rebuilt
from the ``public_url`` setting. Status callbacks (``MessageStatus``) become ``delivered``
/ ``failed`` feedback (and ``bounced`` for numbers that can never receive SMS); inbound
messages become ``opted_out`` (STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT), ``opted_in``
(START, YES, UNSTOP), ``help`` (HELP, INFO: answered with ``help_text``) or ``replied``.
Twilio is answered with TwiML.

The standard library does the HTTP: the official ``twilio`` package would add requests,
aiohttp and PyJWT to the Lambda package and to every cold start (plugins load when the
HTTP function starts) for one POST and one HMAC.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import urllib.error
import urllib.request
from collections.abc import Iterable
from email.utils import parsedate_to_datetime
from typing import ClassVar
from urllib.parse import parse_qsl, urlencode
from xml.sax.saxutils import escape

import phonenumbers
from pydantic import Field, SecretStr, model_validator

from chalicelib.plugin_api import (
    Channel,
    DeliveryFeedback,
    InboundResult,
    OutboundMessage,
    PluginSettings,
    SendResult,
    SignatureError,
    WebhookRequest,
    hookimpl,
    sms_segments,
)

API_VERSION = "2010-04-01"
OPT_OUT = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"}
OPT_IN = {"START", "YES", "UNSTOP"}
HELP = {"HELP", "INFO"}
# delivery error codes that mean the number can never receive SMS: the address is suppressed
PERMANENT_DELIVERY_ERRORS = {"30005", "30006"}  # unknown handset; landline or unreachable carrier
# what Twilio's error codes mean, said without repeating the message (Twilio's own text quotes the number)
ERRORS = {
    20003: "authentication failed (account SID or auth token)",
    20404: "resource not found (account SID?)",
    20429: "too many requests",
    21211: "invalid 'To' phone number",
    21408: "sending to this region is not enabled on the account",
    21606: "the 'From' number cannot send SMS",
    21610: "the recipient replied STOP to this sender",
    21612: "Twilio cannot route to this number",
    21614: "the 'To' number is not a mobile number",
    21617: "the body exceeds 1600 characters",
    30007: "filtered by the carrier",
}


class FieldError(ValueError):
    """A malformed webhook; ``field`` names the parameter (the core answers 400 with it)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class TwilioSmsSettings(PluginSettings):
    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$")
    auth_token: SecretStr  # signs API calls and verifies Twilio's webhooks
    # one of these: a number / alphanumeric sender id, or a Messaging Service (its sender pool)
    from_number: str | None = Field(default=None, pattern=r"^(\+[1-9]\d{6,14}|[A-Za-z0-9 ]{1,11})$")
    messaging_service_sid: str | None = Field(default=None, pattern=r"^MG[0-9a-fA-F]{32}$")
    base_url: str = Field("https://api.twilio.com", pattern=r"^https?://")
    # the public base of the Omnicast API as Twilio calls it (API Gateway stage included), e.g.
    # https://abc.execute-api.eu-west-1.amazonaws.com/api: signatures are checked against it
    public_url: str | None = Field(default=None, pattern=r"^https?://")
    status_callbacks: bool = True  # ask for delivery receipts (needs public_url)
    price_per_segment: float = Field(0.0083, ge=0)  # Twilio's US list price per outbound segment, for estimates
    help_text: str = Field("Reply STOP to unsubscribe, START to subscribe again. Msg & data rates may apply.",
                           max_length=1600)  # empty: answer HELP with nothing (Twilio's own reply)
    timeout: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _one_sender(self) -> TwilioSmsSettings:
        if not self.from_number and not self.messaging_service_sid:
            raise ValueError("set from_number or messaging_service_sid")
        return self


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """The ``X-Twilio-Signature`` of a request: base64(HMAC-SHA1(auth token, URL + each POST
    parameter's name and value, sorted by name; repeated names with their values sorted))."""
    grouped: dict[str, set[str]] = {}
    for name, value in params:
        grouped.setdefault(name, set()).add(value)
    data = url + "".join(name + value for name in sorted(grouped) for value in sorted(grouped[name]))
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def twiml(text: str | None = None) -> str:
    """A TwiML answer: empty, or one reply message."""
    if not text:
        return '<?xml version="1.0" encoding="UTF-8"?><Response/>'
    return f'<?xml version="1.0" encoding="UTF-8"?><Response><Message>{escape(text)}</Message></Response>'


def is_e164(number: str) -> bool:
    if not number.startswith("+"):
        return False
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(parsed) and phonenumbers.format_number(
        parsed, phonenumbers.PhoneNumberFormat.E164) == number


def keyword(text: str) -> str:
    """An opt-out/in/help keyword is the whole message, any case, spaces and final punctuation aside."""
    return text.strip().rstrip(".!").strip().upper()


class TwilioSms(Channel):
    name = "twilio_sms"
    channel = "sms"
    title = "SMS through Twilio"
    max_body_chars = 1600  # Twilio refuses longer bodies (21617)
    batch_size = 1  # the Messages API takes one recipient per request
    Settings: ClassVar[type[PluginSettings]] = TwilioSmsSettings

    @property
    def s(self) -> TwilioSmsSettings:
        return self.settings  # type: ignore[return-value]

    def inbound_url(self) -> str | None:
        return f"{self.s.public_url.rstrip('/')}/v1/inbound/{self.name}" if self.s.public_url else None

    # ------------------------------------------------------------------ sending
    def send(self, message: OutboundMessage) -> SendResult:
        s = self.s
        if not is_e164(message.to):
            return SendResult.failed("not a valid E.164 phone number", retryable=False)
        form = {"To": message.to, "Body": message.text}
        if s.messaging_service_sid:
            form["MessagingServiceSid"] = s.messaging_service_sid
        else:
            form["From"] = s.from_number or ""
        callback = self.inbound_url()
        if s.status_callbacks and callback:
            form["StatusCallback"] = callback
        credentials = base64.b64encode(f"{s.account_sid}:{s.auth_token.get_secret_value()}".encode()).decode()
        request = urllib.request.Request(  # noqa: S310 - base_url is configuration (https by default)
            f"{s.base_url.rstrip('/')}/{API_VERSION}/Accounts/{s.account_sid}/Messages.json",
            data=urlencode(form).encode(),
            method="POST",
            headers={
                "Authorization": f"Basic {credentials}",
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
                "User-Agent": "omnicast-twilio-sms/0.1",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=s.timeout) as resp:  # noqa: S310
                answer = json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return self._failure(exc)
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            return SendResult.failed(f"Twilio unreachable: {type(exc).__name__}", retryable=True)
        except json.JSONDecodeError:
            return SendResult.failed("Twilio answered without JSON", retryable=True)
        sid = answer.get("sid") if isinstance(answer, dict) else None
        if not sid:
            return SendResult.failed("Twilio answered without a message sid", retryable=True)
        try:
            segments = int(answer.get("num_segments"))
        except (TypeError, ValueError):
            segments = sms_segments(message.text)[1]
        return SendResult(ok=True, provider_message_id=str(sid), status="sent",
                          cost_estimate=round(segments * s.price_per_segment, 6))

    def _failure(self, exc: urllib.error.HTTPError) -> SendResult:
        try:
            body = json.loads(exc.read() or b"{}")
        except (json.JSONDecodeError, OSError):
            body = {}
        code = body.get("code") if isinstance(body, dict) else None
        what = ERRORS.get(code, "") if isinstance(code, int) else ""
        error = f"Twilio error {code} (HTTP {exc.code})" if code else f"Twilio HTTP {exc.code}"
        if what:
            error += f": {what}"
        retryable = exc.code == 429 or exc.code >= 500
        return SendResult.failed(error, retryable=retryable, retry_after=self._retry_after(exc.headers.get(
            "Retry-After")) if retryable else None)

    def _retry_after(self, value: str | None) -> float | None:
        """Retry-After in seconds or as an HTTP date (RFC 9110)."""
        if not value:
            return None
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - self.context.clock.now()).total_seconds())

    # ------------------------------------------------------------------ inbound
    def inbound(self, request: WebhookRequest) -> InboundResult:
        s = self.s
        url = self.inbound_url()
        if url is None:
            raise SignatureError("plugin_settings.twilio_sms.public_url is not set, so no signature can be checked")
        given = request.header("X-Twilio-Signature")
        if not given:
            raise SignatureError("missing X-Twilio-Signature header")
        try:
            params = parse_qsl(request.body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError as exc:
            raise FieldError("body is not UTF-8 form data", "body") from exc
        if request.query:
            url += "?" + urlencode(request.query)
        expected = twilio_signature(s.auth_token.get_secret_value(), url, params)
        if not hmac.compare_digest(expected.encode(), given.strip().encode()):
            raise SignatureError("X-Twilio-Signature does not match")
        fields = {**request.query, **dict(params)}  # GET webhooks carry their parameters in the query
        now = self.context.clock.now()

        def required(*names: str) -> str:
            for name in names:
                if fields.get(name):
                    return fields[name]
            raise FieldError(f"{names[0]} is required", names[0])

        if "Body" in fields or fields.get("SmsStatus") == "received":
            sender, sid = required("From"), required("MessageSid", "SmsSid")
            text = fields.get("Body", "")
            # with Advanced Opt-Out, Twilio says which keyword list (its own or custom) matched
            word = (fields.get("OptOutType") or keyword(text)).upper()
            kind = ("opted_out" if word in OPT_OUT else "opted_in" if word in OPT_IN
                    else "help" if word in HELP else "replied")
            detail: dict[str, str | int] = {"text": text} if kind == "replied" else {"keyword": word}
            media = fields.get("NumMedia", "0")
            if kind == "replied" and media.isdigit() and int(media):
                detail["media"] = int(media)  # an MMS: the media stay at Twilio (MediaUrl0...)
            feedback = [DeliveryFeedback(kind=kind, channel=self.channel, address=sender, at=now,
                                         provider_message_id=sid, detail=detail)]
            return InboundResult(feedback=feedback, body=twiml(s.help_text if kind == "help" else None),
                                 content_type="text/xml")
        if "MessageStatus" not in fields:
            raise FieldError("MessageStatus or Body is required: not a Twilio messaging webhook", "MessageStatus")
        status = fields["MessageStatus"].lower()
        sid, recipient = required("MessageSid", "SmsSid"), required("To")
        error_code = fields.get("ErrorCode") or None
        feedback = []
        detail = {"status": status, **({"error_code": error_code} if error_code else {})}
        if status == "delivered":
            feedback.append(DeliveryFeedback("delivered", self.channel, recipient, now, sid, detail))
        elif status in ("undelivered", "failed"):
            feedback.append(DeliveryFeedback("failed", self.channel, recipient, now, sid, detail))
            if error_code in PERMANENT_DELIVERY_ERRORS:
                feedback.append(DeliveryFeedback("bounced", self.channel, recipient, now, sid, detail))
        elif status == "read":
            feedback.append(DeliveryFeedback("opened", self.channel, recipient, now, sid, detail))
        return InboundResult(feedback=feedback, body=twiml(), content_type="text/xml")


@hookimpl
def register_channels(register):  # type: ignore[no-untyped-def]
    """Register the Twilio SMS channel."""
    register(TwilioSms)
