"""Telegram messages through the Bot API, and the bot's webhook (start links, /stop, blocks).

Sending: one ``sendMessage`` per message with ``parse_mode=HTML``. Plain text is escaped;
an HTML body is reduced to the tags Telegram accepts (b, i, u, s, a, code, pre,
blockquote, tg-spoiler), so a template never fails on "can't parse entities". Telegram
allows 4096 characters after entity parsing. The bot token sits in the request path, so
no error, log line or repr ever carries the URL: errors are built from Telegram's own
``description`` and the HTTP status only.

Answers, as the Bot API documents them: ``{"ok": true, "result": {"message_id": ...}}``;
429 carries ``parameters.retry_after`` (retryable); 5xx and network failures are
retryable; 403 (bot blocked, user deactivated) is not retryable and reports the chat as
``token_gone`` (``SendResult.feedback``);
other 4xx (chat not found, bad token) are not retryable.

Inbound (``/v1/inbound/telegram``): the ``X-Telegram-Bot-Api-Secret-Token`` header must
equal the ``webhook_secret`` setting (given to ``setWebhook``; compared in constant
time). Private chats only:

- ``/start <payload>``: ``linked`` (detail["token"] is the core's start token) and ``opted_in``;
- ``/start``: ``opted_in``; ``/stop``: ``opted_out`` (answered with ``stop_reply``);
  ``/help``: ``help`` (answered with ``help_reply``); anything else: ``replied``;
- ``my_chat_member`` with the new status ``kicked`` (the user blocked the bot): ``token_gone``.

Start links: Telegram deep links (``https://t.me/<bot>?start=<payload>``) take only
``[A-Za-z0-9_-]``, at most 64 characters. The core's compact start-link tokens
(``InboundService.start_link_token``, 52 characters for its own profile ids) fit and go
through :meth:`TelegramChannel.start_payload` unchanged. Any other token (the longer
dotted ``Credentials.sign`` form, a long third-party profile id) becomes a 32-character
digest of itself, and the token is kept in the blob store under
``telegram/start/<payload>`` (deterministic, so asking twice gives the same link). The
webhook maps the payload back to the token; the core then verifies its signature and
expiry as usual.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any, ClassVar

from pydantic import ConfigDict, Field, SecretStr, field_validator

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

MAX_CHARS = 4096
CHAT_ID = re.compile(r"^(-?\d{1,20}|@[A-Za-z0-9_]{5,32})$")
START_PAYLOAD = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
START_PREFIX = "telegram/start/"
SECRET_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


class TelegramSettings(PluginSettings):
    # a settings error must not echo what was given: it may be the token
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True, defer_build=True)

    bot_token: SecretStr  # from BotFather; part of every request path, never printed
    base_url: str = Field("https://api.telegram.org", pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    webhook_secret: SecretStr | None = None  # setWebhook's secret_token; required for inbound
    bot_username: str | None = Field(None, pattern=r"^[A-Za-z0-9_]{5,32}$")  # for t.me start links
    timeout: float = Field(10.0, gt=0)
    disable_link_preview: bool = False
    stop_reply: str | None = "You will get no more messages from us. Send /start to subscribe again."
    help_reply: str | None = "Send /stop to get no more messages from us, /start to get them again."

    @field_validator("webhook_secret")
    @classmethod
    def _secret_token_alphabet(cls, value: SecretStr | None) -> SecretStr | None:
        # what setWebhook accepts as secret_token; the message never echoes the value
        if value is not None and not SECRET_TOKEN.match(value.get_secret_value()):
            raise ValueError("webhook_secret must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return value


class TelegramError(Exception):
    """A Bot API call failed; the message never contains the bot token or the URL."""


class TelegramChannel(Channel):
    name = "telegram"
    channel = "messenger"
    title = "Telegram Bot API"
    max_body_chars = MAX_CHARS
    batch_size = 1
    rate_per_second = 30.0  # Telegram's documented broadcast limit per bot
    Settings: ClassVar[type[PluginSettings]] = TelegramSettings

    @property
    def _s(self) -> TelegramSettings:
        return self.settings  # type: ignore[return-value]

    # ------------------------------------------------------------------ sending
    def send(self, message: OutboundMessage) -> SendResult:
        chat = message.to.strip()
        if not CHAT_ID.match(chat):
            return SendResult.failed("to is not a Telegram chat id", retryable=False)
        text = telegram_html(message.html) if message.html else html.escape(message.text, quote=False)
        length = visible_length(text)
        if length == 0:
            return SendResult.failed("text is empty", retryable=False)
        if length > MAX_CHARS:
            return SendResult.failed(f"text is {length} characters; Telegram allows {MAX_CHARS}", retryable=False)
        payload: dict[str, Any] = {"chat_id": chat, "text": text, "parse_mode": "HTML"}
        if self._s.disable_link_preview:
            payload["link_preview_options"] = {"is_disabled": True}
        status, answer, retry_header = self._call("sendMessage", payload)
        if status == 200 and answer.get("ok") is True:
            result = answer.get("result") or {}
            return SendResult(ok=True, provider_message_id=f"{chat}:{result.get('message_id')}", status="sent")
        return failure(status, answer, retry_header, chat=chat, at=self.context.clock.now())

    def _call(self, method: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any], str | None]:
        """(HTTP status, parsed answer, Retry-After header); status 0 when Telegram was not reached."""
        token = urllib.parse.quote(self._s.bot_token.get_secret_value(), safe=":")
        url = f"{self._s.base_url.rstrip('/')}/bot{token}/{method}"
        body = json.dumps(payload, ensure_ascii=False).encode()
        req = urllib.request.Request(url, data=body, method="POST",  # noqa: S310 - configured base URL
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self._s.timeout) as resp:  # noqa: S310
                return resp.status, _json(resp.read()), None
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, _json(exc.read()), exc.headers.get("Retry-After")
        except Exception as exc:  # noqa: BLE001 - any transport failure; its text may hold the URL
            return 0, {"description": f"Telegram unreachable: {type(exc).__name__}"}, None

    def set_webhook(self, url: str, *, drop_pending_updates: bool = False) -> None:
        """Point the bot's webhook at ``url`` (Omnicast's ``/v1/inbound/telegram``) with the
        ``webhook_secret``, for the update types this plugin reads."""
        if self._s.webhook_secret is None:
            raise TelegramError("webhook_secret is not set")
        status, answer, _ = self._call("setWebhook", {
            "url": url, "secret_token": self._s.webhook_secret.get_secret_value(),
            "allowed_updates": ["message", "my_chat_member"], "drop_pending_updates": drop_pending_updates,
        })
        if not (status == 200 and answer.get("ok") is True):
            raise TelegramError(f"setWebhook failed: HTTP {status} {_description(answer)}".rstrip())

    # ------------------------------------------------------------------ start links
    def start_payload(self, token: str) -> str:
        """The deep-link payload for a core start token (see the module docstring)."""
        if START_PAYLOAD.match(token):
            return token
        digest = hashlib.sha256(token.encode()).digest()
        payload = base64.urlsafe_b64encode(digest).decode()[:32]  # 192 bits
        key = START_PREFIX + payload
        if self.context.blobs.get(key) is None:
            self.context.blobs.put(key, token.encode(), content_type="text/plain")
        return payload

    def start_link(self, token: str) -> str:
        """``https://t.me/<bot_username>?start=<payload>`` for a core start token."""
        if not self._s.bot_username:
            raise TelegramError("bot_username is not set")
        return f"https://t.me/{self._s.bot_username}?start={self.start_payload(token)}"

    def token_for(self, payload: str) -> str:
        """The core token behind a start payload (the payload itself when none was kept)."""
        kept = self.context.blobs.get(START_PREFIX + payload) if START_PAYLOAD.match(payload) else None
        return kept.decode() if kept is not None else payload

    # ------------------------------------------------------------------ inbound
    def inbound(self, request: WebhookRequest) -> InboundResult:
        secret = self._s.webhook_secret
        if secret is None:
            raise SignatureError("telegram webhook_secret is not set")
        given = request.header("X-Telegram-Bot-Api-Secret-Token")
        if not given:
            raise SignatureError("missing X-Telegram-Bot-Api-Secret-Token header")
        if not hmac.compare_digest(given.encode(), secret.get_secret_value().encode()):
            raise SignatureError("X-Telegram-Bot-Api-Secret-Token does not match")
        try:
            update = json.loads(request.body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return InboundResult(status_code=400, body="body is not JSON")
        if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
            return InboundResult(status_code=400, body="update_id is missing")
        try:
            if isinstance(update.get("message"), dict):
                return self._message(update["message"], request)
            if isinstance(update.get("my_chat_member"), dict):
                return self._member(update["my_chat_member"], request)
        except BadUpdate as exc:
            return InboundResult(status_code=400, body=str(exc))
        return InboundResult()  # other update types: nothing to record

    def _message(self, msg: dict[str, Any], request: WebhookRequest) -> InboundResult:
        chat = _field(msg, "chat", dict, "message.chat")
        if chat.get("type") != "private":
            return InboundResult()  # groups and channels are not customers' chats
        address = str(_field(chat, "id", int, "message.chat.id"))
        message_id = _field(msg, "message_id", int, "message.message_id")
        at = _time(msg.get("date"), request.received_at)

        def feedback(kind: str, **detail: Any) -> DeliveryFeedback:
            return DeliveryFeedback(kind=kind, channel="messenger", address=address, at=at,
                                    provider_message_id=f"{address}:{message_id}", detail=detail)

        text = msg.get("text")
        language = (msg.get("from") or {}).get("language_code")
        if not isinstance(text, str):
            content = next((k for k in ("photo", "sticker", "voice", "video", "document", "audio", "contact",
                                        "location", "animation", "video_note") if k in msg), "other")
            caption = msg.get("caption") if isinstance(msg.get("caption"), str) else ""
            return InboundResult(feedback=[feedback("replied", text=caption, content=content)])
        command, _, argument = text.strip().partition(" ")
        command = command.split("@", 1)[0].lower() if command.startswith("/") else ""
        argument = argument.strip()
        if command == "/start":
            items = []
            if argument:
                items.append(feedback("linked", token=self.token_for(argument), language=language))
            items.append(feedback("opted_in", text=text))
            return InboundResult(feedback=items)
        if command == "/stop":
            return self._answer(address, self._s.stop_reply, [feedback("opted_out", text=text)])
        if command == "/help":
            return self._answer(address, self._s.help_reply, [feedback("help", text=text)])
        return InboundResult(feedback=[feedback("replied", text=text)])

    def _member(self, update: dict[str, Any], request: WebhookRequest) -> InboundResult:
        chat = _field(update, "chat", dict, "my_chat_member.chat")
        if chat.get("type") != "private":
            return InboundResult()
        address = str(_field(chat, "id", int, "my_chat_member.chat.id"))
        status = _field(_field(update, "new_chat_member", dict, "my_chat_member.new_chat_member"),
                        "status", str, "my_chat_member.new_chat_member.status")
        if status != "kicked":
            return InboundResult()  # unblocking is followed by /start, which opts in
        date = update.get("date")
        return InboundResult(feedback=[DeliveryFeedback(
            kind="token_gone", channel="messenger", address=address, at=_time(date, request.received_at),
            provider_message_id=f"{address}:member:{date}:{status}", detail={"reason": "bot blocked by the user"})])

    @staticmethod
    def _answer(chat: str, reply: str | None, feedback: list[DeliveryFeedback]) -> InboundResult:
        """Answer the update with a sendMessage in the webhook response (no extra API call)."""
        if not reply:
            return InboundResult(feedback=feedback)
        body = json.dumps({"method": "sendMessage", "chat_id": int(chat), "text": reply})
        return InboundResult(feedback=feedback, body=body, content_type="application/json")

class BadUpdate(ValueError):
    """A verified update without a field this plugin needs; the text names the field."""


def _field(obj: dict[str, Any], key: str, kind: type, label: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BadUpdate(f"{label} is missing or not {kind.__name__}")
    return value


def _time(value: Any, default: datetime) -> datetime:
    return datetime.fromtimestamp(value, UTC) if isinstance(value, int) and not isinstance(value, bool) else default


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _description(answer: dict[str, Any]) -> str:
    text = answer.get("description")
    return text[:200] if isinstance(text, str) else ""


def failure(status: int, answer: dict[str, Any], retry_header: str | None, *, chat: str, at: datetime) -> SendResult:
    """A Bot API error answer as a SendResult (never containing the URL or the token); a 403
    also reports the chat as gone, so the core removes it from the profile."""
    description = _description(answer) or f"HTTP {status}"
    code = answer.get("error_code") if isinstance(answer.get("error_code"), int) else status
    if status == 0:
        return SendResult.failed(description, retryable=True)
    if code == 429 or status == 429:
        after = (answer.get("parameters") or {}).get("retry_after")
        if not isinstance(after, int | float) and retry_header and retry_header.isdigit():
            after = float(retry_header)
        return SendResult.failed(f"rate limited: {description}", retryable=True,
                                 retry_after=float(after) if isinstance(after, int | float) else None)
    if status >= 500:
        return SendResult.failed(f"Telegram {status}: {description}", retryable=True)
    if code == 403:  # blocked by the user, user deactivated, kicked from the chat
        gone = DeliveryFeedback(kind="token_gone", channel="messenger", address=chat, at=at,
                                detail={"reason": description})
        return SendResult.failed(f"token_gone: {description}", retryable=False, feedback=(gone,))
    if code in (401, 404):
        return SendResult.failed(f"bot token rejected: {description}", retryable=False)
    return SendResult.failed(description, retryable=False)


# --------------------------------------------------------------------------- HTML subset
ALLOWED = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "code", "pre", "blockquote", "tg-spoiler"}
BREAKS = {"br"}
BLOCKS = {"p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table"}


class _TelegramHtml(HTMLParser):
    """Keeps Telegram's tags (``a`` with its href only), turns blocks into line breaks,
    drops every other tag but keeps its text, and drops script/style contents."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.open: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self.skip += 1
        elif tag in ALLOWED:
            self.out.append(f"<{tag}>")
            self.open.append(tag)
        elif tag == "span" and ("class", "tg-spoiler") in attrs:
            self.out.append("<tg-spoiler>")
            self.open.append("tg-spoiler")
        elif tag == "a":
            href = dict(attrs).get("href") or ""
            if href.startswith(("http://", "https://", "tg://", "mailto:")):
                self.out.append(f'<a href="{html.escape(href, quote=True)}">')
                self.open.append("a")
        elif tag in BREAKS:
            self.out.append("\n")
        elif tag in BLOCKS and self.out and not self.out[-1].endswith("\n"):
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self.skip = max(0, self.skip - 1)
            return
        name = "tg-spoiler" if tag == "span" else tag
        if name in self.open:
            while self.open:  # close what is still open inside it, so tags stay nested
                last = self.open.pop()
                self.out.append(f"</{last}>")
                if last == name:
                    break
        elif tag in BLOCKS:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(html.escape(data, quote=False))

    def result(self) -> str:
        self.close()
        self.out.extend(f"</{t}>" for t in reversed(self.open))
        text = re.sub(r"\n{3,}", "\n\n", "".join(self.out))
        return text.strip()


def telegram_html(source: str) -> str:
    """``source`` HTML reduced to what Telegram's parse_mode HTML accepts."""
    parser = _TelegramHtml()
    parser.feed(source)
    return parser.result()


def visible_length(telegram_text: str) -> int:
    """Characters after entity parsing, in UTF-16 code units as Telegram counts them."""
    plain = html.unescape(re.sub(r"<[^>]+>", "", telegram_text))
    return len(plain.encode("utf-16-le")) // 2


@hookimpl
def register_channels(register):  # type: ignore[no-untyped-def]
    """Register the Telegram channel."""
    register(TelegramChannel)
