"""Outbound webhooks: each message is POSTed as JSON to the shop's own endpoint, signed
with the Standard Webhooks scheme (``webhook-id``, ``webhook-timestamp``,
``webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``) so the
receiver can verify it with any Standard Webhooks library.

The ``webhook-id`` is Omnicast's message id, identical on retries, so the receiver can
deduplicate. 2xx is delivered; 429 and 5xx are retryable (Retry-After honoured); other
4xx are not.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import ClassVar

from pydantic import Field, SecretStr

from chalicelib.plugin_api import (
    Channel,
    OutboundMessage,
    PluginSettings,
    SendResult,
    hookimpl,
    standard_webhooks_signature,
)


class WebhookSettings(PluginSettings):
    url: str = Field(pattern=r"^https?://")  # the shop's endpoint
    secret: SecretStr  # whsec_<base64>, shared with the receiver
    timeout: float = Field(10.0, gt=0)


class WebhookChannel(Channel):
    name = "webhook"
    channel = "webhook"
    title = "Outbound webhook (Standard Webhooks)"
    batch_size = 1
    Settings: ClassVar[type[PluginSettings]] = WebhookSettings

    def send(self, message: OutboundMessage) -> SendResult:
        s: WebhookSettings = self.settings  # type: ignore[assignment]
        body = json.dumps({
            "type": "message.send", "message_id": message.message_id, "profile_id": message.to,
            "subject": message.subject, "text": message.text, "metadata": message.metadata,
        }, separators=(",", ":")).encode()
        timestamp = int(self.context.clock.now().timestamp())
        headers = {
            "Content-Type": "application/json", "webhook-id": message.message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": standard_webhooks_signature(s.secret.get_secret_value(), message.message_id,
                                                             timestamp, body),
        }
        req = urllib.request.Request(s.url, data=body, method="POST", headers=headers)  # noqa: S310 - configured
        try:
            with urllib.request.urlopen(req, timeout=s.timeout) as resp:  # noqa: S310
                resp.read()
                return SendResult(ok=True, provider_message_id=message.message_id, status="delivered")
        except urllib.error.HTTPError as exc:
            retry = exc.headers.get("Retry-After") or ""
            retryable = exc.code == 429 or exc.code >= 500
            return SendResult.failed(f"HTTP {exc.code}", retryable=retryable,
                                     retry_after=float(retry) if retry.isdigit() else None)
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            return SendResult.failed(f"endpoint unreachable: {type(exc).__name__}", retryable=True)


@hookimpl
def register_channels(register):  # type: ignore[no-untyped-def]
    """Register the outbound webhook channel."""
    register(WebhookChannel)
