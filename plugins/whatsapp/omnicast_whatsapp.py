"""WhatsApp messages through the WhatsApp Cloud API, and its webhook (replies, STOP, receipts).

Sending: ``POST {base_url}/{api_version}/{phone_number_id}/messages`` with the access token
as a Bearer token. WhatsApp lets a business write free-form text only inside the
24-hour customer service window that opens with the customer's last message; outside it
only an approved template may go. The plugin decides per message:

- the last inbound time is the later of ``metadata["last_inbound_at"]`` (ISO 8601, if the
  core passes one) and what this plugin recorded from its own webhook, in the blob store
  under ``whatsapp/last_inbound/<digest of number id + customer>`` (no phone number in the
  key). Both runtimes share that store (a folder locally, S3 on AWS);
- inside the window: a text message; if Meta still answers 131047 (re-engagement
  required: the window closed in between), the template goes instead, in the same attempt;
- outside it: the template configured for the message's journey (``templates`` setting,
  keyed by journey name, ``"*"`` for any; ``metadata["whatsapp_template"]`` picks a key
  explicitly). Body parameters are format strings over the message's ``text`` and
  metadata (``"{text}"``, ``"{first_name}"``); newlines and tabs become spaces, as Meta
  requires of parameters. No template: failed, not retryable, saying so.

Errors, as the Graph API reports them (``{"error": {"code": ..., "message": ...}}``):
rate limits (130429, 131056 pair limit, 80007, 4), temporary failures (1, 2, 131000,
131016) and HTTP 429 / 5xx are retryable (Retry-After honoured); 131047, 131026
(undeliverable), template errors (132xxx), 190 / HTTP 401 (token) and other 4xx are not.

Inbound (``/v1/inbound/whatsapp``): GET is Meta's verification handshake (hub.mode
``subscribe`` and hub.verify_token equal to the ``verify_token`` setting: the answer is
hub.challenge as text/plain; anything else raises SignatureError). POST must carry
``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body with the app secret>``.
Messages to this ``phone_number_id``: ``replied`` (detail text and type), except STOP /
UNSUBSCRIBE / "Stop promotions" (``opted_out``), START / SUBSCRIBE (``opted_in``) and HELP
(``help``); each opens the 24-hour window. ``START <token>`` (the prefilled text of a
:meth:`WhatsAppChannel.start_link`) is ``linked`` (detail["token"]) and ``opted_in``.
Statuses: delivered, read, failed become ``delivered``, ``opened``, ``failed`` (detail:
``error_code``, ``error``), keyed by the wamid the send returned.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import string
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from pydantic import ConfigDict, Field, SecretStr

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
)

WINDOW = timedelta(hours=24)
MAX_TEXT = 4096  # a text message body's limit
WA_NUMBER = re.compile(r"^\+?(\d{5,15})$")
LAST_INBOUND = "whatsapp/last_inbound/"
RETRYABLE_CODES = {1, 2, 4, 17, 80007, 130429, 131000, 131016, 131048, 131056, 133004}
REENGAGEMENT = 131047
OPT_OUT = {"STOP", "UNSUBSCRIBE", "STOP PROMOTIONS", "STOPALL", "CANCEL", "END", "QUIT"}
OPT_IN = {"START", "SUBSCRIBE", "UNSTOP", "RESUME PROMOTIONS"}
HELP = {"HELP", "INFO"}
STATUS_KINDS = {"delivered": "delivered", "read": "opened", "failed": "failed"}
URL = re.compile(r"https?://", re.IGNORECASE)
START_WITH_TOKEN = re.compile(r"^START\s+([A-Za-z0-9_.-]{16,512})$", re.IGNORECASE)


class WhatsAppTemplate(PluginSettings):
    """An approved message template, as it is named in WhatsApp Manager."""

    name: str = Field(pattern=r"^[a-z0-9_]{1,512}$")
    language: str = Field("en_US", pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$")
    body_parameters: list[str] = Field(default_factory=list)  # "{text}", "{first_name}", ...


class WhatsAppSettings(PluginSettings):
    # a settings error must not echo what was given: it may be the token
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True, defer_build=True)

    access_token: SecretStr  # a system user's permanent token
    phone_number_id: str = Field(pattern=r"^\d{1,30}$")  # the business number's id, not the number
    app_secret: SecretStr | None = None  # signs webhooks (X-Hub-Signature-256); required for inbound POST
    verify_token: SecretStr | None = None  # chosen in the webhook set-up; required for the GET handshake
    business_number: str | None = Field(None, pattern=r"^\d{5,15}$")  # the number customers see, for wa.me links
    base_url: str = Field("https://graph.facebook.com", pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    api_version: str = Field("v21.0", pattern=r"^v\d+\.\d+$")
    templates: dict[str, WhatsAppTemplate] = Field(default_factory=dict)  # journey name (or "*") -> template
    price_per_template_message: float = Field(0.025, ge=0)  # USD; free-form replies in the window are free
    timeout: float = Field(10.0, gt=0)


class WhatsAppChannel(Channel):
    name = "whatsapp"
    channel = "messenger"
    title = "WhatsApp Cloud API"
    max_body_chars = MAX_TEXT
    batch_size = 1
    rate_per_second = 80.0  # the Cloud API's default throughput per business number
    Settings: ClassVar[type[PluginSettings]] = WhatsAppSettings

    @property
    def _s(self) -> WhatsAppSettings:
        return self.settings  # type: ignore[return-value]

    # ------------------------------------------------------------------ sending
    def send(self, message: OutboundMessage) -> SendResult:
        match = WA_NUMBER.match(message.to.strip())
        if not match:
            return SendResult.failed("to is not a WhatsApp number (digits, country code first)", retryable=False)
        to = match.group(1)
        last = self.last_inbound(to, message.metadata)
        now = self.context.clock.now()
        if last is not None and now - last < WINDOW:
            if not message.text.strip():
                return SendResult.failed("text is empty", retryable=False)
            if len(message.text) > MAX_TEXT:
                return SendResult.failed(f"text is {len(message.text)} characters; WhatsApp allows {MAX_TEXT}",
                                         retryable=False)
            status, answer, retry = self._post({
                "messaging_product": "whatsapp", "recipient_type": "individual", "to": to, "type": "text",
                "text": {"preview_url": bool(URL.search(message.text)), "body": message.text}})
            if _code(answer) != REENGAGEMENT or self.template_for(message) is None:
                return self._result(status, answer, retry, cost=0.0)
        template = self.template_for(message)
        if template is None:
            journey = message.metadata.get("journey", "")
            return SendResult.failed(f"outside the 24-hour window and no template for journey {journey!r}",
                                     retryable=False)
        try:
            parameters = [_parameter(p, message) for p in template.body_parameters]
        except KeyError as exc:
            return SendResult.failed(f"template {template.name} needs {exc.args[0]!r}, which the message lacks",
                                     retryable=False)
        except (IndexError, ValueError, AttributeError) as exc:
            return SendResult.failed(f"template {template.name} has a malformed body parameter: {exc}",
                                     retryable=False)
        if any(not p for p in parameters):
            return SendResult.failed(f"template {template.name} would get an empty body parameter", retryable=False)
        body: dict[str, Any] = {"name": template.name, "language": {"code": template.language}}
        if parameters:
            body["components"] = [{"type": "body", "parameters": [{"type": "text", "text": p} for p in parameters]}]
        status, answer, retry = self._post({"messaging_product": "whatsapp", "recipient_type": "individual",
                                            "to": to, "type": "template", "template": body})
        return self._result(status, answer, retry, cost=self._s.price_per_template_message)

    def template_for(self, message: OutboundMessage) -> WhatsAppTemplate | None:
        templates = self._s.templates
        chosen = message.metadata.get("whatsapp_template")
        if chosen:
            return templates.get(chosen)
        return templates.get(message.metadata.get("journey", "")) or templates.get("*")

    def _post(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any], str | None]:
        s = self._s
        url = f"{s.base_url.rstrip('/')}/{s.api_version}/{s.phone_number_id}/messages"
        req = urllib.request.Request(url, data=json.dumps(payload, ensure_ascii=False).encode(), method="POST",  # noqa: S310
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {s.access_token.get_secret_value()}"})
        try:
            with urllib.request.urlopen(req, timeout=s.timeout) as resp:  # noqa: S310 - configured base URL
                return resp.status, _json(resp.read()), None
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, _json(exc.read()), exc.headers.get("Retry-After")
        except Exception as exc:  # noqa: BLE001 - any transport failure is worth a retry
            return 0, {"error": {"message": f"WhatsApp unreachable: {type(exc).__name__}"}}, None

    @staticmethod
    def _result(status: int, answer: dict[str, Any], retry: str | None, *, cost: float) -> SendResult:
        if 200 <= status < 300:
            messages = answer.get("messages")
            wamid = messages[0].get("id") if isinstance(messages, list) and messages else None
            if isinstance(wamid, str) and wamid:
                return SendResult(ok=True, provider_message_id=wamid, status="sent", cost_estimate=cost)
            return SendResult.failed("WhatsApp answered without a message id", retryable=False)
        return failure(status, answer, retry)

    def start_link(self, token: str) -> str:
        """``https://wa.me/<business_number>?text=START%20<token>``: the chat opens with that
        text prefilled; when the customer sends it, the webhook reports ``linked`` (with the
        token) and ``opted_in``, and the 24-hour window is open."""
        if not self._s.business_number:
            raise ValueError("business_number is not set")
        return f"https://wa.me/{self._s.business_number}?text={urllib.parse.quote('START ' + token)}"

    # ------------------------------------------------------------------ the 24-hour window
    def _window_key(self, address: str) -> str:
        digits = address.lstrip("+")
        return LAST_INBOUND + hashlib.sha256(f"{self._s.phone_number_id}:{digits}".encode()).hexdigest()[:40]

    def last_inbound(self, address: str, metadata: dict[str, str] | None = None) -> datetime | None:
        """When the customer last wrote to this business number (None: never, as far as we know)."""
        times = []
        given = (metadata or {}).get("last_inbound_at")
        if given:
            try:
                parsed = datetime.fromisoformat(given.replace("Z", "+00:00"))
                times.append(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
            except ValueError:
                pass  # a malformed hint is no hint; the recorded time still counts
        kept = self.context.blobs.get(self._window_key(address))
        if kept:
            times.append(datetime.fromisoformat(kept.decode()))
        return max(times) if times else None

    def record_inbound(self, address: str, at: datetime) -> None:
        """Keep the latest customer message time (idempotent: redeliveries change nothing)."""
        last = self.last_inbound(address)
        if last is None or at > last:
            self.context.blobs.put(self._window_key(address), at.isoformat().encode(), content_type="text/plain")

    # ------------------------------------------------------------------ inbound
    def inbound(self, request: WebhookRequest) -> InboundResult:
        if "hub.mode" in request.query or "hub.verify_token" in request.query:
            return self._verify_subscription(request)
        self._verify_signature(request)
        try:
            payload = json.loads(request.body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return InboundResult(status_code=400, body="body is not JSON")
        if not isinstance(payload, dict) or not isinstance(payload.get("entry"), list):
            return InboundResult(status_code=400, body="entry is missing")
        if payload.get("object") != "whatsapp_business_account":
            return InboundResult()  # another product's webhook on the same app
        feedback: list[DeliveryFeedback] = []
        for entry in payload["entry"]:
            for change in (entry.get("changes") or []) if isinstance(entry, dict) else []:
                if not isinstance(change, dict) or change.get("field") != "messages":
                    continue
                value = change.get("value")
                if not isinstance(value, dict):
                    continue
                meta = value.get("metadata")
                number_id = meta.get("phone_number_id") if isinstance(meta, dict) else None
                if number_id is not None and str(number_id) != self._s.phone_number_id:
                    continue  # another business number on the same app
                feedback += self._messages(value.get("messages") or [], request)
                feedback += self._statuses(value.get("statuses") or [], request)
        return InboundResult(feedback=feedback)

    def _verify_subscription(self, request: WebhookRequest) -> InboundResult:
        expected = self._s.verify_token
        if expected is None:
            raise SignatureError("whatsapp verify_token is not set")
        given = request.query.get("hub.verify_token") or ""
        if request.query.get("hub.mode") != "subscribe":
            raise SignatureError("hub.mode must be subscribe")
        if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
            raise SignatureError("hub.verify_token does not match")
        challenge = request.query.get("hub.challenge") or ""
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", challenge):
            return InboundResult(status_code=400, body="hub.challenge is missing or malformed")
        return InboundResult(body=challenge, content_type="text/plain")

    def _verify_signature(self, request: WebhookRequest) -> None:
        secret = self._s.app_secret
        if secret is None:
            raise SignatureError("whatsapp app_secret is not set")
        given = request.header("X-Hub-Signature-256")
        if not given:
            raise SignatureError("missing X-Hub-Signature-256 header")
        algorithm, _, hexdigest = given.strip().partition("=")
        try:
            signature = bytes.fromhex(hexdigest)
        except ValueError:
            signature = b""
        if algorithm != "sha256" or len(signature) != 32:
            raise SignatureError("X-Hub-Signature-256 is not sha256=<hex>")
        expected = hmac.new(secret.get_secret_value().encode(), request.body, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, signature):
            raise SignatureError("signature does not match")

    def _messages(self, messages: list[Any], request: WebhookRequest) -> list[DeliveryFeedback]:
        out = []
        for m in messages:
            if not isinstance(m, dict) or not isinstance(m.get("from"), str) or not isinstance(m.get("id"), str):
                continue
            at = _time(m.get("timestamp"), request.received_at)
            self.record_inbound(m["from"], at)
            kind_of = str(m.get("type") or "unknown")
            text = _text_of(m)
            word = " ".join(text.upper().split())
            start = START_WITH_TOKEN.match(text.strip())
            if start:  # the prefilled text of a start link: link the chat, and it is an opt-in
                out.append(DeliveryFeedback(kind="linked", channel="messenger", address=m["from"], at=at,
                                            provider_message_id=m["id"], detail={"token": start.group(1)}))
                word = "START"
            kind = ("opted_out" if word in OPT_OUT else "opted_in" if word in OPT_IN
                    else "help" if word in HELP else "replied")
            detail = {"text": "START" if start else text, "type": kind_of}
            out.append(DeliveryFeedback(kind=kind, channel="messenger", address=m["from"], at=at,
                                        provider_message_id=m["id"], detail=detail))
        return out

    @staticmethod
    def _statuses(statuses: list[Any], request: WebhookRequest) -> list[DeliveryFeedback]:
        out = []
        for st in statuses:
            if not isinstance(st, dict) or st.get("status") not in STATUS_KINDS or not isinstance(st.get("id"), str):
                continue  # "sent" is what the send already recorded
            detail: dict[str, Any] = {"status": st["status"]}
            errors = st.get("errors")
            if isinstance(errors, list) and errors and isinstance(errors[0], dict):
                detail.update(error_code=errors[0].get("code"), error=str(errors[0].get("title") or "")[:200])
            out.append(DeliveryFeedback(kind=STATUS_KINDS[st["status"]], channel="messenger",
                                        address=str(st.get("recipient_id") or ""),
                                        at=_time(st.get("timestamp"), request.received_at),
                                        provider_message_id=st["id"], detail=detail))
        return out


def _text_of(m: dict[str, Any]) -> str:
    """What the customer wrote or tapped: text, a quick-reply button, an interactive reply."""
    kind = m.get("type")
    part = m.get(kind) if isinstance(kind, str) else None
    if not isinstance(part, dict):
        return ""
    if kind == "text":
        return str(part.get("body") or "")
    if kind == "button":
        return str(part.get("text") or part.get("payload") or "")
    if kind == "reaction":
        return str(part.get("emoji") or "")
    if kind == "interactive":
        reply = part.get("button_reply") or part.get("list_reply") or {}
        return str(reply.get("title") or "") if isinstance(reply, dict) else ""
    return str(part.get("caption") or "")


def _parameter(source: str, message: OutboundMessage) -> str:
    values = {**message.metadata, "text": message.text}
    text = string.Formatter().vformat(source, (), values)
    return re.sub(r" {4,}", "   ", re.sub(r"[\t\r\n]+", " ", text)).strip()


def _time(value: Any, default: datetime) -> datetime:
    try:
        return datetime.fromtimestamp(int(value), UTC)
    except (TypeError, ValueError, OverflowError):
        return default


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _code(answer: dict[str, Any]) -> int | None:
    error = answer.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, int) else None


def failure(status: int, answer: dict[str, Any], retry_header: str | None) -> SendResult:
    """A Graph API error answer as a SendResult (the access token is never part of it)."""
    error = answer.get("error")
    error = error if isinstance(error, dict) else {}
    code = _code(answer)
    text = str(error.get("message") or f"HTTP {status}")[:200]
    label = f"WhatsApp {code}: {text}" if code is not None else text
    if status == 0:
        return SendResult.failed(label, retryable=True)
    after = float(retry_header) if retry_header and retry_header.isdigit() else None
    if status == 429 or code in RETRYABLE_CODES:
        return SendResult.failed(f"rate limited: {label}" if status == 429 or code in (4, 80007, 130429, 131056)
                                 else label, retryable=True, retry_after=after)
    if status >= 500:
        return SendResult.failed(label, retryable=True, retry_after=after)
    if status == 401 or code == 190:
        return SendResult.failed(f"access token rejected: {label}", retryable=False)
    return SendResult.failed(label, retryable=False)


@hookimpl
def register_channels(register):  # type: ignore[no-untyped-def]
    """Register the WhatsApp channel."""
    register(WhatsAppChannel)
