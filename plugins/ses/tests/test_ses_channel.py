"""The SES channel under moto (sent messages visible), and its error mapping with botocore's Stubber."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends
from omnicast_ses import SesChannel, SesSettings

from chalicelib.adapters.local.blobs import FolderBlobStore
from chalicelib.clock import ManualClock
from chalicelib.plugin_api import ChannelContext, OutboundMessage


@pytest.fixture
def aws(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        boto3.client("ses", region_name="us-east-1").verify_domain_identity(Domain="example.com")
        yield ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]


def channel(tmp_path, **extra):
    return SesChannel(SesSettings(**extra), ChannelContext(clock=ManualClock(datetime(2026, 3, 2, tzinfo=UTC)),
                                                           blobs=FolderBlobStore(tmp_path)))


def message(**kw):
    base = dict(message_id="m_1", channel="email", to="ann@example.com", subject="Hello", text="Plain",
                html="<p>Hi</p>", headers={"List-Unsubscribe": "<https://shop.example/u?t=1>",
                                           "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
                metadata={"journey": "welcome", "step": "welcome_email", "profile_id": "p1"})
    base.update(kw)
    return OutboundMessage(**base)


def test_sends_raw_multipart_with_tags(aws, tmp_path):
    result = channel(tmp_path).send(message())
    assert result.ok and result.provider_message_id and result.cost_estimate == 0.0001
    [sent] = aws.sent_messages
    msg = message_from_bytes(sent.raw_data.encode() if isinstance(sent.raw_data, str) else sent.raw_data,
                             policy=policy.default)
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click" and msg["Message-ID"] == "<m_1@omnicast.local>"


def test_a_batch_sends_each_message(aws, tmp_path):
    results = channel(tmp_path).send_batch([message(message_id=f"m_{i}", to=f"u{i}@example.com") for i in range(4)])
    assert [r.ok for r in results] == [True] * 4 and len(aws.sent_messages) == 4


@pytest.mark.parametrize(("code", "status", "retryable"), [
    ("TooManyRequestsException", 429, True),
    ("MessageRejected", 400, False),
    ("InternalFailure", 500, True),
    ("MailFromDomainNotVerifiedException", 400, False),
])
def test_errors_map_to_retryable_or_not(tmp_path, code, status, retryable, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    ch = channel(tmp_path)
    with Stubber(ch.client) as stub:
        stub.add_client_error("send_email", service_error_code=code, http_status_code=status)
        result = ch.send(message())
    assert not result.ok and result.retryable is retryable and code in result.error


def test_header_injection_is_refused(tmp_path):
    result = channel(tmp_path).send(message(to="a@example.com\r\nBcc: x@example.com"))
    assert not result.ok and not result.retryable
