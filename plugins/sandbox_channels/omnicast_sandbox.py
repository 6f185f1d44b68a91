"""Sandbox channels: SMS, push and messenger that write each message they would send.

Each message becomes ``outbox/<channel>/<message_id>.json`` in the blob store the core
lends (a folder locally, S3 on AWS), so the demo, the simulator and the tests can read
what went out. Writing the same message id twice leaves one file (idempotent).
"""

from __future__ import annotations

import json
from typing import ClassVar

from pydantic import Field

from chalicelib.plugin_api import Channel, OutboundMessage, PluginSettings, SendResult, hookimpl, sms_segments


class SandboxSettings(PluginSettings):
    price_per_sms_segment: float = Field(0.0079, ge=0)  # a typical US list price, for cost estimates


class _Sandbox(Channel):
    Settings: ClassVar[type[PluginSettings]] = SandboxSettings

    def record(self, message: OutboundMessage, extra: dict[str, object]) -> SendResult:
        body = {"message_id": message.message_id, "channel": message.channel, "to": message.to,
                "subject": message.subject, "text": message.text, "metadata": message.metadata,
                "sent_at": self.context.clock.now().isoformat(), **extra}
        key = f"outbox/{self.channel}/{message.message_id}.json"
        self.context.blobs.put(key, json.dumps(body, ensure_ascii=False).encode(), content_type="application/json")
        return SendResult(ok=True, provider_message_id=f"sandbox-{message.message_id}", status="delivered",
                          cost_estimate=float(extra.get("cost", 0.0)))  # type: ignore[arg-type]

    def send(self, message: OutboundMessage) -> SendResult:
        return self.record(message, {})


class SandboxSms(_Sandbox):
    name = "sandbox_sms"
    channel = "sms"
    title = "SMS (sandbox)"
    max_body_chars = 1600
    batch_size = 10

    def send(self, message: OutboundMessage) -> SendResult:
        encoding, segments = sms_segments(message.text)
        price = self.settings.price_per_sms_segment  # type: ignore[attr-defined]
        return self.record(message, {"encoding": encoding, "segments": segments,
                                     "cost": round(segments * price, 6)})


class SandboxPush(_Sandbox):
    name = "sandbox_push"
    channel = "push"
    title = "Push (sandbox)"
    max_body_chars = 4000
    batch_size = 10


class SandboxMessenger(_Sandbox):
    name = "sandbox_messenger"
    channel = "messenger"
    title = "Messenger (sandbox)"
    max_body_chars = 4096


@hookimpl
def register_channels(register):  # type: ignore[no-untyped-def]
    """Register the sandbox SMS, push and messenger channels."""
    for cls in (SandboxSms, SandboxPush, SandboxMessenger):
        register(cls)
