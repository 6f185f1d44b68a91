"""E-mail through Amazon SES (the v2 API, ``SendEmail`` with raw MIME).

Each message is rendered per customer by Omnicast, so it goes as one raw ``SendEmail``:
SES's ``SendBulkEmail`` (50 destinations a call) only fills in SES-side templates and
cannot carry per-customer content. Batches reuse one client. A configuration set routes
SES events (deliveries, bounces, complaints, opens, clicks) to the provider-feedback SNS
topic; message tags carry the journey and step so those events can be attributed.

Errors: throttling and SES's 5xx are retryable; a rejected message, an unverified sender
or a paused account is not.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from chalicelib.plugin_api import (
    AwsChannel,
    OutboundMessage,
    PluginSettings,
    SendResult,
    email_bytes,
    header_injection,
    hookimpl,
    mime_email,
)

RETRYABLE = {"Throttling", "ThrottlingException", "TooManyRequestsException", "LimitExceededException",
             "ServiceUnavailable", "InternalFailure", "RequestTimeout"}
PRICE_PER_EMAIL = 0.0001  # USD list price: $0.10 per 1,000 e-mails


class SesSettings(PluginSettings):
    region: str = "us-east-1"
    from_address: str = "Omnicast Shop <shop@example.com>"
    reply_to: str | None = None
    configuration_set: str | None = None
    endpoint_url: str | None = None  # a local AWS endpoint (moto's server) in tests
    message_id_domain: str = "omnicast.local"
    timeout: float = Field(10.0, gt=0)


def _tag(value: str) -> str:
    # SES tag values allow letters, digits, _ - . @ only
    return "".join(c if c.isalnum() or c in "_-.@" else "_" for c in value)[:256] or "_"


class SesChannel(AwsChannel):
    name = "ses"
    channel = "email"
    title = "Amazon SES"
    batch_size = 50
    rate_per_second = None  # the account's own send rate: set send_policy.provider_rate_per_second.ses
    aws_service = "sesv2"
    Settings: ClassVar[type[PluginSettings]] = SesSettings


    def send(self, message: OutboundMessage) -> SendResult:
        from botocore.exceptions import BotoCoreError, ClientError

        s: SesSettings = self.settings  # type: ignore[assignment]
        if header_injection(message.to, message.subject):
            return SendResult.failed("address or subject contains a line break (header injection)", retryable=False)
        mail = {"from_address": s.from_address, "at": self.context.clock.now(),
                "message_id_domain": s.message_id_domain, "reply_to": s.reply_to}
        raw = email_bytes(message, **mail) or mime_email(message, **mail).as_bytes()  # None: SMTPUTF8 addresses
        kwargs: dict[str, Any] = {
            "FromEmailAddress": s.from_address,
            "Destination": {"ToAddresses": [message.to]},
            "Content": {"Raw": {"Data": raw}},
            "EmailTags": [{"Name": k, "Value": _tag(v)} for k, v in sorted(message.metadata.items())
                          if k in ("journey", "step")] + [{"Name": "omnicast_message_id",
                                                           "Value": _tag(message.message_id)}],
        }
        if s.configuration_set:
            kwargs["ConfigurationSetName"] = s.configuration_set
        try:
            answer = self.client.send_email(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            return SendResult.failed(f"SES {code or status}", retryable=code in RETRYABLE or status >= 500)
        except BotoCoreError as exc:
            return SendResult.failed(f"SES unreachable: {type(exc).__name__}", retryable=True)
        return SendResult(ok=True, provider_message_id=answer["MessageId"], status="sent",
                          cost_estimate=PRICE_PER_EMAIL)


@hookimpl
def register_channels(register):  # type: ignore[no-untyped-def]
    """Register the Amazon SES e-mail channel."""
    register(SesChannel)
