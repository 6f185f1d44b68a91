"""Sandbox channels write what they would send; SMS segments are counted as carriers do."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from omnicast_sandbox import SandboxSettings, SandboxSms

from chalicelib.adapters.local.blobs import FolderBlobStore
from chalicelib.clock import ManualClock
from chalicelib.plugin_api import ChannelContext, OutboundMessage, sms_segments


@pytest.mark.parametrize(
    ("text", "encoding", "segments"),
    [
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("a" * 306, "GSM-7", 2),
        ("a" * 307, "GSM-7", 3),
        ("€" * 80, "GSM-7", 1),  # the euro sign is in the extension table: two septets each
        ("€" * 81, "GSM-7", 2),
        ("é" * 160, "GSM-7", 1),
        ("ç" * 70, "UCS-2", 1),  # lower-case ç is not GSM-7
        ("ç" * 71, "UCS-2", 2),
        ("👍" * 35, "UCS-2", 1),  # an emoji is two UTF-16 units
        ("👍" * 36, "UCS-2", 2),
    ],
)
def test_segment_counting(text, encoding, segments):
    assert sms_segments(text) == (encoding, segments)


def test_sms_is_written_once_with_its_cost(tmp_path):
    blobs = FolderBlobStore(tmp_path)
    sms = SandboxSms(SandboxSettings(price_per_sms_segment=0.01),
                     ChannelContext(clock=ManualClock(datetime(2026, 3, 2, tzinfo=UTC)), blobs=blobs))
    msg = OutboundMessage(message_id="m1", channel="sms", to="+14155552671", text="x" * 200)
    first = sms.send(msg)
    second = sms.send(msg)
    assert first.ok and first.provider_message_id == second.provider_message_id == "sandbox-m1"
    assert blobs.list("outbox/sms/") == ["outbox/sms/m1.json"]
    body = json.loads(blobs.get("outbox/sms/m1.json"))
    assert (body["segments"], body["encoding"], body["to"]) == (2, "GSM-7", "+14155552671")
    assert first.cost_estimate == 0.02
