"""SMS through Amazon SNS ``Publish`` to a phone number.

Numbers must be E.164 (the core normalises them). The message type is Transactional for
transactional messages and Promotional otherwise (carriers treat them differently); the
cost estimate counts GSM-7 / UCS-2 segments at the configured price per segment.
Throttling and SNS's 5xx are retryable; an invalid or opted-out number is not.
"""

from __future__ import annotations

import re
from typing import ClassVar

from pydantic import Field

from chalicelib.plugin_api import AwsChannel, OutboundMessage, PluginSettings, SendResult, hookimpl, sms_segments

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
RETRYABLE = {"Throttling", "ThrottledException", "InternalError", "KMSThrottlingException"}


class SnsSmsSettings(PluginSettings):
    region: str = "us-east-1"
    endpoint_url: str | None = None
    sender_id: str | None = Field(default=None, max_length=11)
    price_per_segment: float = Field(0.00645, ge=0)  # a US list price per outbound segment, for estimates


class SnsSms(AwsChannel):
    name = "sns_sms"
    channel = "sms"
    title = "SMS through Amazon SNS"
    max_body_chars = 1600
    batch_size = 1
    rate_per_second = 20.0  # SNS's default SMS throughput per account
    aws_service = "sns"
    Settings: ClassVar[type[PluginSettings]] = SnsSmsSettings


    def send(self, message: OutboundMessage) -> SendResult:
        from botocore.exceptions import BotoCoreError, ClientError

        s: SnsSmsSettings = self.settings  # type: ignore[assignment]
        if not E164.match(message.to):
            return SendResult.failed("not an E.164 phone number", retryable=False)
        _, segments = sms_segments(message.text)
        attributes = {"AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue":
                      "Transactional" if message.metadata.get("purpose") == "transactional" else "Promotional"}}
        if s.sender_id:
            attributes["AWS.SNS.SMS.SenderID"] = {"DataType": "String", "StringValue": s.sender_id}
        try:
            answer = self.client.publish(PhoneNumber=message.to, Message=message.text, MessageAttributes=attributes)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            return SendResult.failed(f"SNS {code or status}", retryable=code in RETRYABLE or status >= 500)
        except BotoCoreError as exc:
            return SendResult.failed(f"SNS unreachable: {type(exc).__name__}", retryable=True)
        return SendResult(ok=True, provider_message_id=answer["MessageId"], status="sent",
                          cost_estimate=round(segments * s.price_per_segment, 6))


@hookimpl
def register_channels(register):  # type: ignore[no-untyped-def]
    """Register the SNS SMS channel."""
    register(SnsSms)
