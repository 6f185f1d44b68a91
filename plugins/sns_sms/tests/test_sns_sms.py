"""SMS through SNS under moto (what was published is visible), and its refusals."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from botocore.stub import Stubber
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sns.models import sns_backends
from omnicast_sns_sms import SnsSms, SnsSmsSettings

from chalicelib.adapters.local.blobs import FolderBlobStore
from chalicelib.clock import ManualClock
from chalicelib.plugin_api import ChannelContext, OutboundMessage


@pytest.fixture(autouse=True)
def creds(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")


def channel(tmp_path):
    return SnsSms(SnsSmsSettings(price_per_segment=0.01),
                  ChannelContext(clock=ManualClock(datetime(2026, 3, 2, tzinfo=UTC)), blobs=FolderBlobStore(tmp_path)))


def sms(to="+14155552671", text="Your order shipped", purpose="transactional"):
    return OutboundMessage(message_id="m1", channel="sms", to=to, text=text, metadata={"purpose": purpose})


def test_publishes_to_the_number_with_its_segment_cost(tmp_path):
    with mock_aws():
        result = channel(tmp_path).send(sms(text="x" * 200))
        published = dict(sns_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sms_messages)
    assert result.ok and result.cost_estimate == 0.02  # 200 GSM-7 characters: two segments
    assert list(published.values()) == [("+14155552671", "x" * 200)]


def test_refusals(tmp_path):
    assert not channel(tmp_path).send(sms(to="0612345678")).ok
    ch = channel(tmp_path)
    with Stubber(ch.client) as stub:
        stub.add_client_error("publish", service_error_code="Throttling", http_status_code=400)
        stub.add_client_error("publish", service_error_code="InvalidParameter", http_status_code=400)
        throttled, invalid = ch.send(sms()), ch.send(sms())
    assert throttled.retryable and not invalid.retryable
