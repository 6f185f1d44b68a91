"""E-mail over SMTP: multipart text + HTML, stable Message-ID, one kept-alive connection.

The connection is kept between sends (one channel instance per process) and closed after
``idle_seconds`` without use, when the channel closes, or when the server drops it; a
connection the server dropped while idle is reopened once before the message is given up.
Errors map to retryable or not the way SMTP defines them: a 4xx reply or a dropped
connection may succeed later; a 5xx reply will not.
"""

from __future__ import annotations

import functools
import smtplib
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from email.utils import parseaddr
from typing import Any, ClassVar

from pydantic import Field, SecretStr

from chalicelib.plugin_api import (
    Channel,
    OutboundMessage,
    PluginSettings,
    SendResult,
    email_bytes,
    header_injection,
    hookimpl,
    message_id_header,
    mime_email,
)


@functools.lru_cache(maxsize=65536)
def _mailbox(address: str) -> str:
    """The envelope's address of a header address ("Ann <ann@x.com>" -> ann@x.com), read once
    per address (the shop's sender on every message, a customer on each of theirs)."""
    return parseaddr(address)[1]


@functools.lru_cache(maxsize=65536)
def _quoted(address: str) -> str:
    return smtplib.quoteaddr(address)


class _EnvelopeOnce:
    """``MAIL FROM`` and ``RCPT TO`` as smtplib writes them, each address quoted once per
    process: smtplib quotes both on every message with the ``email`` package's address
    parser (some 36 us a message, a twelfth of the simulated shop's sending process), and
    the shop's sender and its customers come back again and again. SMTPUTF8 (non-ASCII
    addresses) goes to smtplib's own."""

    def mail(self, sender: str, options: Any = ()) -> tuple[int, bytes]:
        if any(option.lower() == "smtputf8" for option in options):
            return super().mail(sender, options)  # type: ignore[misc, no-any-return]
        more = " " + " ".join(options) if options and self.does_esmtp else ""  # type: ignore[attr-defined]
        self.putcmd("mail", f"FROM:{_quoted(sender)}{more}")  # type: ignore[attr-defined]
        return self.getreply()  # type: ignore[attr-defined, no-any-return]

    def rcpt(self, recip: str, options: Any = ()) -> tuple[int, bytes]:
        more = " " + " ".join(options) if options and self.does_esmtp else ""  # type: ignore[attr-defined]
        self.putcmd("rcpt", f"TO:{_quoted(recip)}{more}")  # type: ignore[attr-defined]
        return self.getreply()  # type: ignore[attr-defined, no-any-return]


class _Smtp(_EnvelopeOnce, smtplib.SMTP):
    pass


class _SmtpSsl(_EnvelopeOnce, smtplib.SMTP_SSL):
    pass


class SmtpSettings(PluginSettings):
    host: str = "127.0.0.1"
    port: int = Field(1025, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    starttls: bool = False
    use_ssl: bool = False
    timeout: float = Field(10.0, gt=0)
    from_address: str = "Omnicast Shop <shop@example.com>"
    reply_to: str | None = None
    message_id_domain: str = "omnicast.local"
    idle_seconds: float = Field(30.0, ge=0)  # keep the connection this long between sends (0: one per batch)
    connections: int = Field(1, ge=1, le=32)  # a batch is spread over this many connections at once


class _Slot:
    """One kept-alive connection and the lock of whoever is using it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conn: smtplib.SMTP | None = None
        self.last_used = 0.0


class SmtpChannel(Channel):
    name = "smtp"
    channel = "email"
    title = "E-mail over SMTP"
    batch_size = 50
    max_body_chars = None
    Settings: ClassVar[type[PluginSettings]] = SmtpSettings

    def __init__(self, settings: Any, context: Any) -> None:
        super().__init__(settings, context)
        self._slots = [_Slot() for _ in range(settings.connections)]
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def build(self, message: OutboundMessage) -> Message:
        s: SmtpSettings = self.settings  # type: ignore[assignment]
        return mime_email(message, from_address=s.from_address, at=self.context.clock.now(),
                          message_id_domain=s.message_id_domain, reply_to=s.reply_to)

    def _connect(self) -> smtplib.SMTP:
        s: SmtpSettings = self.settings  # type: ignore[assignment]
        if s.use_ssl:
            conn: smtplib.SMTP = _SmtpSsl(s.host, s.port, timeout=s.timeout,
                                                  context=ssl.create_default_context())
        else:
            conn = _Smtp(s.host, s.port, timeout=s.timeout)
            if s.starttls:
                conn.starttls(context=ssl.create_default_context())
        if s.username:
            conn.login(s.username, s.password.get_secret_value() if s.password else "")
        return conn

    def _one(self, conn: smtplib.SMTP, message: OutboundMessage) -> SendResult:
        if header_injection(message.to, message.subject):
            return SendResult.failed("address or subject contains a line break (header injection)", retryable=False)
        s: SmtpSettings = self.settings  # type: ignore[assignment]
        data = email_bytes(message, from_address=s.from_address, at=self.context.clock.now(),
                           message_id_domain=s.message_id_domain, reply_to=s.reply_to)
        try:
            if data is None:  # an address that is not ASCII: smtplib sends the EmailMessage with SMTPUTF8
                refused = conn.send_message(self.build(message))
            else:  # the bytes as they go on the wire, with the envelope taken from the same addresses
                refused = conn.sendmail(_mailbox(s.from_address), [_mailbox(message.to)], data)
        except smtplib.SMTPRecipientsRefused as exc:
            code = next(iter(exc.recipients.values()))[0]
            return SendResult.failed(f"recipient refused ({code})", retryable=400 <= code < 500)
        except smtplib.SMTPResponseException as exc:
            return SendResult.failed(f"SMTP {exc.smtp_code}", retryable=400 <= exc.smtp_code < 500)
        if refused:
            code = next(iter(refused.values()))[0]
            return SendResult.failed(f"recipient refused ({code})", retryable=400 <= code < 500)
        return SendResult(ok=True, provider_message_id=message_id_header(message, s.message_id_domain), status="sent")

    def send(self, message: OutboundMessage) -> SendResult:
        return self.send_batch([message])[0]

    @staticmethod
    def _drop(slot: _Slot) -> None:
        conn, slot.conn = slot.conn, None
        if conn is not None:
            try:
                conn.quit()
            except (OSError, smtplib.SMTPException):
                conn.close()

    def close(self) -> None:
        for slot in self._slots:
            with slot.lock:
                self._drop(slot)
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None

    def send_batch(self, messages: list[OutboundMessage]) -> list[SendResult]:
        """In order on one connection, or spread over ``connections`` at once (message i on
        connection i mod n): the server works on several while each waits for its reply."""
        n = min(len(self._slots), len(messages))
        if n <= 1:
            return self._send_on(self._slots[0], messages)
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=len(self._slots), thread_name_prefix="smtp")
            pool = self._pool
        shares = [pool.submit(self._send_on, self._slots[i], messages[i::n]) for i in range(n)]
        results: list[SendResult] = [SendResult.failed("not attempted", retryable=True)] * len(messages)
        for i, share in enumerate(shares):
            results[i::n] = share.result()
        return results

    def _send_on(self, slot: _Slot, messages: list[OutboundMessage]) -> list[SendResult]:
        s: SmtpSettings = self.settings  # type: ignore[assignment]
        with slot.lock:
            if slot.conn is not None and time.monotonic() - slot.last_used > s.idle_seconds:
                self._drop(slot)
            results: list[SendResult] = []
            reused = slot.conn is not None
            while len(results) < len(messages):
                if slot.conn is None:
                    try:
                        slot.conn = self._connect()
                    except smtplib.SMTPAuthenticationError as exc:
                        failed = SendResult.failed(f"SMTP authentication failed ({exc.smtp_code})", retryable=False)
                        return results + [failed] * (len(messages) - len(results))
                    except (OSError, smtplib.SMTPException) as exc:
                        # connection refused, timeouts, TLS failures: the server may be back later
                        reason = f"cannot reach the SMTP server: {type(exc).__name__}"
                        failed = SendResult.failed(reason, retryable=True)
                        return results + [failed] * (len(messages) - len(results))
                try:
                    results.append(self._one(slot.conn, messages[len(results)]))
                except (TimeoutError, smtplib.SMTPServerDisconnected, OSError) as exc:
                    self._drop(slot)
                    if reused and isinstance(exc, smtplib.SMTPServerDisconnected):
                        reused = False  # the server closed the kept connection while it was idle: reopen once
                        continue
                    results.append(SendResult.failed(f"connection lost: {type(exc).__name__}", retryable=True))
                    results += [SendResult.failed("not attempted: connection lost", retryable=True)] * (
                        len(messages) - len(results))
                reused = False  # this connection has worked: a later drop is not staleness
            slot.last_used = time.monotonic()
            if s.idle_seconds == 0:
                self._drop(slot)
            return results


@hookimpl
def register_channels(register):  # type: ignore[no-untyped-def]
    """Register the SMTP e-mail channel."""
    register(SmtpChannel)
