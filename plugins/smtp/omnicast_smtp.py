"""E-mail over SMTP: multipart text + HTML, stable Message-ID, one connection per batch.

Errors map to retryable or not the way SMTP defines them: a 4xx reply or a dropped
connection may succeed later; a 5xx reply will not.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from typing import ClassVar

from pydantic import Field, SecretStr

from chalicelib.plugin_api import (
    Channel,
    OutboundMessage,
    PluginSettings,
    SendResult,
    header_injection,
    hookimpl,
    mime_email,
)


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


class SmtpChannel(Channel):
    name = "smtp"
    channel = "email"
    title = "E-mail over SMTP"
    batch_size = 50
    max_body_chars = None
    Settings: ClassVar[type[PluginSettings]] = SmtpSettings

    def build(self, message: OutboundMessage) -> EmailMessage:
        s: SmtpSettings = self.settings  # type: ignore[assignment]
        return mime_email(message, from_address=s.from_address, at=self.context.clock.now(),
                          message_id_domain=s.message_id_domain, reply_to=s.reply_to)

    def _connect(self) -> smtplib.SMTP:
        s: SmtpSettings = self.settings  # type: ignore[assignment]
        if s.use_ssl:
            conn: smtplib.SMTP = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout,
                                                  context=ssl.create_default_context())
        else:
            conn = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
            if s.starttls:
                conn.starttls(context=ssl.create_default_context())
        if s.username:
            conn.login(s.username, s.password.get_secret_value() if s.password else "")
        return conn

    def _one(self, conn: smtplib.SMTP, message: OutboundMessage) -> SendResult:
        if header_injection(message.to, message.subject):
            return SendResult.failed("address or subject contains a line break (header injection)", retryable=False)
        msg = self.build(message)
        try:
            refused = conn.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            code = next(iter(exc.recipients.values()))[0]
            return SendResult.failed(f"recipient refused ({code})", retryable=400 <= code < 500)
        except smtplib.SMTPResponseException as exc:
            return SendResult.failed(f"SMTP {exc.smtp_code}", retryable=400 <= exc.smtp_code < 500)
        if refused:
            code = next(iter(refused.values()))[0]
            return SendResult.failed(f"recipient refused ({code})", retryable=400 <= code < 500)
        return SendResult(ok=True, provider_message_id=msg["Message-ID"], status="sent")

    def send(self, message: OutboundMessage) -> SendResult:
        return self.send_batch([message])[0]

    def send_batch(self, messages: list[OutboundMessage]) -> list[SendResult]:
        try:
            conn = self._connect()
        except smtplib.SMTPAuthenticationError as exc:
            return [SendResult.failed(f"SMTP authentication failed ({exc.smtp_code})", retryable=False)] * len(messages)
        except (OSError, smtplib.SMTPException) as exc:
            # connection refused, timeouts, TLS failures: the server may be back later
            reason = f"cannot reach the SMTP server: {type(exc).__name__}"
            return [SendResult.failed(reason, retryable=True)] * len(messages)
        results: list[SendResult] = []
        try:
            for message in messages:
                try:
                    results.append(self._one(conn, message))
                except (TimeoutError, smtplib.SMTPServerDisconnected, OSError) as exc:
                    results.append(SendResult.failed(f"connection lost: {type(exc).__name__}", retryable=True))
                    break
        finally:
            try:
                conn.quit()
            except (OSError, smtplib.SMTPException):
                pass
        results += [SendResult.failed("not attempted: connection lost", retryable=True)] * (
            len(messages) - len(results))
        return results


@hookimpl
def register_channels(register):  # type: ignore[no-untyped-def]
    """Register the SMTP e-mail channel."""
    register(SmtpChannel)
