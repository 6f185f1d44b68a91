"""Mobile push (APNs, FCM) through Amazon SNS platform endpoints.

The profile's push address is the device token the app got from APNs or FCM, optionally
prefixed with its platform (``apns:<hex>``, ``fcm:<token>``). A bare token goes to the only
configured platform application, or, when both are configured, to APNs if it is 64 hex
digits and to FCM otherwise.

Each send makes sure an SNS platform endpoint exists for the token (CreatePlatformEndpoint
is idempotent for the same token and attributes; when SNS says the endpoint "already
exists with the same Token, but different attributes" - the token moved to another
customer - the endpoint is read, updated and re-enabled, as the SNS documentation's
registration flow does), then publishes one ``MessageStructure=json`` message with the
platform's own payload (``APNS`` / ``APNS_SANDBOX`` aps dictionary, ``GCM`` FCM v1 message).

A disabled endpoint (SNS disables it when APNs or FCM reports the token invalid) means the
token is gone: the send fails without retry, its result carries a ``token_gone`` feedback
item so the core removes the token from the profile, and the dead endpoint is deleted so
a later re-registration of the same token starts from a fresh, enabled endpoint.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

from pydantic import Field, model_validator

from chalicelib.plugin_api import (
    AwsChannel,
    DeliveryFeedback,
    OutboundMessage,
    PluginSettings,
    SendResult,
    hookimpl,
)

APP_ARN = re.compile(r"^arn:aws[\w-]*:sns:[\w-]+:\d{12}:app/(APNS|APNS_SANDBOX|GCM)/[\w.-]+$")
ENDPOINT_EXISTS = re.compile(r"Endpoint (arn:aws[\w-]*:sns:\S+) already exists with the same [Tt]oken")
HEX_TOKEN = re.compile(r"^[0-9a-fA-F]{64,200}$")
TOKEN = re.compile(r"^[\x21-\x7e]{1,4096}$")  # printable ASCII, no spaces
RETRYABLE = {"Throttling", "ThrottledException", "InternalError", "InternalErrorException",
             "KMSThrottlingException", "ServiceUnavailable"}
DISABLED = {"EndpointDisabled", "EndpointDisabledException"}
MAX_PAYLOAD_BYTES = 4096  # APNs and FCM both refuse larger notification payloads
DATA_KEYS = ("journey", "step", "url", "deep_link")  # metadata handed to the app with the notification


class SnsPushSettings(PluginSettings):
    region: str = "us-east-1"
    endpoint_url: str | None = None
    # the SNS platform applications (arn:aws:sns:<region>:<account>:app/APNS|APNS_SANDBOX|GCM/<name>)
    apns_application_arn: str | None = Field(default=None, pattern=APP_ARN.pattern)
    fcm_application_arn: str | None = Field(default=None, pattern=APP_ARN.pattern)
    sound: str | None = "default"
    ttl_seconds: int = Field(2 * 86400, ge=0, le=28 * 86400)  # how long APNs / FCM keep it for an offline device
    # SNS list prices (us-east-1): $0.50 per million API requests beyond the free tier, and
    # $0.50 per million mobile push deliveries
    price_per_million_requests: float = Field(0.50, ge=0)
    price_per_million_deliveries: float = Field(0.50, ge=0)

    @model_validator(mode="after")
    def _platforms(self) -> SnsPushSettings:
        if not (self.apns_application_arn or self.fcm_application_arn):
            raise ValueError("apns_application_arn or fcm_application_arn: set at least one platform application")
        if self.apns_application_arn and "/GCM/" in self.apns_application_arn:
            raise ValueError("apns_application_arn: is an FCM (GCM) platform application")
        if self.fcm_application_arn and "/GCM/" not in self.fcm_application_arn:
            raise ValueError("fcm_application_arn: is not an FCM (GCM) platform application")
        return self


class SnsPush(AwsChannel):
    name = "sns_push"
    channel = "push"
    title = "Mobile push (APNs, FCM) through Amazon SNS"
    max_body_chars = 2000  # the whole platform payload must stay within 4 KB
    batch_size = 1  # SNS PublishBatch takes topics, not platform endpoints
    aws_service = "sns"
    Settings: ClassVar[type[PluginSettings]] = SnsPushSettings


    # ----------------------------------------------------------------- addressing
    def platform_application(self, address: str) -> tuple[str, str] | str:
        """(application ARN, token) for a push address, or why it cannot be sent to."""
        s: SnsPushSettings = self.settings  # type: ignore[assignment]
        prefix, _, rest = address.partition(":")
        if prefix in ("apns", "fcm", "gcm") and rest:
            platform, token = ("apns" if prefix == "apns" else "fcm"), rest
        else:
            token = address
            if not (s.apns_application_arn and s.fcm_application_arn):
                platform = "apns" if s.apns_application_arn else "fcm"
            else:
                platform = "apns" if HEX_TOKEN.match(token) else "fcm"
        if not TOKEN.match(token):
            return "push address is not a device token"
        arn = s.apns_application_arn if platform == "apns" else s.fcm_application_arn
        if not arn:
            return f"no {platform.upper()} platform application configured ({platform}_application_arn)"
        return arn, token

    def endpoint(self, application_arn: str, token: str, profile_id: str | None) -> tuple[str, bool, int]:
        """(endpoint ARN, enabled, API requests made) for the token, created if needed."""
        from botocore.exceptions import ClientError

        extra = {"CustomUserData": profile_id} if profile_id else {}
        try:
            answer = self.client.create_platform_endpoint(PlatformApplicationArn=application_arn, Token=token,
                                                          **extra)
            return answer["EndpointArn"], True, 1
        except ClientError as exc:
            found = ENDPOINT_EXISTS.search(exc.response.get("Error", {}).get("Message", ""))
            if exc.response.get("Error", {}).get("Code") != "InvalidParameter" or not found:
                raise
        # the token has an endpoint with other attributes: read it, then update it (SNS docs)
        arn = found.group(1)
        attributes = self.client.get_endpoint_attributes(EndpointArn=arn)["Attributes"]
        enabled = str(attributes.get("Enabled", "true")).lower() == "true"
        owner = attributes.get("CustomUserData")
        if not enabled and owner in (None, profile_id):
            return arn, False, 2  # disabled for this very registration: the provider said the token is dead
        if profile_id and owner != profile_id:
            # the app registered this token for another customer since: a fresh registration,
            # so the endpoint is pointed at them and enabled again
            self.client.set_endpoint_attributes(EndpointArn=arn, Attributes={
                "CustomUserData": profile_id, "Token": token, "Enabled": "true"})
            return arn, True, 3
        return arn, enabled, 2

    # ----------------------------------------------------------------- payloads
    def payload(self, platform_key: str, message: OutboundMessage) -> str:
        """The platform's notification JSON: an aps dictionary for APNs, an FCM v1 message for GCM."""
        s: SnsPushSettings = self.settings  # type: ignore[assignment]
        data = {"message_id": message.message_id,
                **{k: str(message.metadata[k]) for k in DATA_KEYS if message.metadata.get(k)}}
        alert = {"title": message.subject or "", "body": message.text}
        if platform_key.startswith("APNS"):
            aps: dict[str, Any] = {"alert": alert}
            if s.sound:
                aps["sound"] = s.sound
            if message.metadata.get("journey"):
                aps["thread-id"] = message.metadata["journey"]  # groups a journey's notifications
            return json.dumps({"aps": aps, **data}, ensure_ascii=False, separators=(",", ":"))
        priority = "high" if message.metadata.get("purpose") == "transactional" else "normal"
        # the message id as the notification's tag: a duplicate delivery replaces it in the drawer
        notification = {"tag": message.message_id, **({"sound": s.sound} if s.sound else {})}
        android: dict[str, Any] = {"priority": priority, "notification": notification}
        return json.dumps({"fcmV1Message": {"message": {"notification": alert, "data": data, "android": android}}},
                          ensure_ascii=False, separators=(",", ":"))

    def attributes(self, platform_key: str, message: OutboundMessage) -> dict[str, Any]:
        """SNS's per-platform message attributes: time to live, and APNs push type and priority."""
        s: SnsPushSettings = self.settings  # type: ignore[assignment]

        def text(value: str) -> dict[str, str]:
            return {"DataType": "String", "StringValue": value}

        service = "FCM" if platform_key == "GCM" else platform_key
        found = {f"AWS.SNS.MOBILE.{service}.TTL": text(str(s.ttl_seconds))}
        if platform_key.startswith("APNS"):
            transactional = message.metadata.get("purpose") == "transactional"
            found["AWS.SNS.MOBILE.APNS.PUSH_TYPE"] = text("alert")
            found["AWS.SNS.MOBILE.APNS.PRIORITY"] = text("10" if transactional else "5")  # 5: power-considerate
        return found

    # ----------------------------------------------------------------- sending
    def send(self, message: OutboundMessage) -> SendResult:
        from botocore.exceptions import BotoCoreError, ClientError

        s: SnsPushSettings = self.settings  # type: ignore[assignment]
        target = self.platform_application(message.to)
        if isinstance(target, str):
            return SendResult.failed(target, retryable=False)
        application_arn, token = target
        platform_key = APP_ARN.match(application_arn).group(1)  # type: ignore[union-attr]
        payload = self.payload(platform_key, message)
        size = len(payload.encode())
        if size > MAX_PAYLOAD_BYTES:
            return SendResult.failed(f"push payload is {size} bytes; {platform_key} takes {MAX_PAYLOAD_BYTES}",
                                     retryable=False)
        requests, arn = 0, ""
        try:
            arn, enabled, requests = self.endpoint(application_arn, token, message.metadata.get("profile_id"))
            if not enabled:
                return self.token_gone(message, arn, "endpoint disabled")
            requests += 1
            answer = self.client.publish(TargetArn=arn, MessageStructure="json",
                                         Message=json.dumps({"default": message.text, platform_key: payload}),
                                         MessageAttributes=self.attributes(platform_key, message))
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in DISABLED:
                return self.token_gone(message, arn, "endpoint disabled")
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if code == "InvalidParameter" and "Token" in exc.response.get("Error", {}).get("Message", ""):
                return SendResult.failed("SNS refused the device token", retryable=False)
            return SendResult.failed(f"SNS {code or status}", retryable=code in RETRYABLE or status >= 500)
        except BotoCoreError as exc:
            return SendResult.failed(f"SNS unreachable: {type(exc).__name__}", retryable=True)
        cost = (requests * s.price_per_million_requests + s.price_per_million_deliveries) / 1e6
        return SendResult(ok=True, provider_message_id=answer["MessageId"], status="sent", cost_estimate=round(cost, 9))

    def token_gone(self, message: OutboundMessage, endpoint_arn: str, reason: str) -> SendResult:
        """Fail without retry and tell the core to drop the token; delete the dead endpoint."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            if endpoint_arn:
                self.client.delete_endpoint(EndpointArn=endpoint_arn)
        except (ClientError, BotoCoreError):
            pass  # best effort: a leftover disabled endpoint costs nothing and is re-read next time
        gone = DeliveryFeedback(kind="token_gone", channel=self.channel, address=message.to,
                                at=self.context.clock.now(), detail={"plugin": self.name, "reason": reason})
        return SendResult.failed(f"push token gone ({reason})", retryable=False, feedback=(gone,))


@hookimpl
def register_channels(register):  # type: ignore[no-untyped-def]
    """Register the SNS mobile push channel."""
    register(SnsPush)
