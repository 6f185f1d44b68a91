"""Mobile push through SNS platform endpoints under moto: what was published to which endpoint,
the endpoint life cycle (created once, re-pointed, dead tokens reported and deleted), refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sns.models import sns_backends
from omnicast_sns_push import SnsPush, SnsPushSettings
from pydantic import ValidationError

from chalicelib.adapters.local.blobs import FolderBlobStore
from chalicelib.clock import ManualClock
from chalicelib.plugin_api import ChannelContext, OutboundMessage

NOW = datetime(2026, 3, 2, 10, tzinfo=UTC)
APNS_TOKEN = "a" * 32 + "0123456789abcdef" * 2  # 64 hex digits, as APNs hands them out
FCM_TOKEN = "dGhpcyBpcyBub3QgYSByZWFs:APA91bH-fcm_token-example_0123456789"


@pytest.fixture(autouse=True)
def aws(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        sns = boto3.client("sns", region_name="us-east-1")
        apns = sns.create_platform_application(Name="shop-ios", Platform="APNS_SANDBOX",
                                               Attributes={"PlatformCredential": "p8", "PlatformPrincipal": "key"})
        fcm = sns.create_platform_application(Name="shop-android", Platform="GCM",
                                              Attributes={"PlatformCredential": "fcm-service-account"})
        yield sns, apns["PlatformApplicationArn"], fcm["PlatformApplicationArn"]


def channel(tmp_path, **settings):
    return SnsPush(SnsPushSettings(**settings),
                   ChannelContext(clock=ManualClock(NOW), blobs=FolderBlobStore(tmp_path)))


def push(to, text="Your cart misses you", subject="Still thinking?", profile_id="p_1", purpose="marketing",
         message_id="m_1"):
    return OutboundMessage(message_id=message_id, channel="push", to=to, subject=subject, text=text,
                           metadata={"journey": "abandoned_cart", "step": "remind", "profile_id": profile_id,
                                     "purpose": purpose})


def endpoints(sns, app_arn):
    return sns.list_endpoints_by_platform_application(PlatformApplicationArn=app_arn)["Endpoints"]


def published(endpoint_arn):
    endpoint = sns_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].platform_endpoints[endpoint_arn]
    return [json.loads(m) for m in endpoint.messages.values()]


def test_apns_notification_on_one_endpoint_per_token(aws, tmp_path):
    sns, apns, fcm = aws
    ch = channel(tmp_path, apns_application_arn=apns, fcm_application_arn=fcm)
    first = ch.send(push(APNS_TOKEN))
    again = ch.send(push(APNS_TOKEN, message_id="m_2"))
    assert first.ok and again.ok and first.provider_message_id != again.provider_message_id
    # create (idempotent) + publish, and one mobile push delivery, at $0.50 per million each
    assert first.cost_estimate == pytest.approx(1.5e-6)
    [endpoint] = endpoints(sns, apns)
    assert endpoint["Attributes"]["Token"] == APNS_TOKEN
    assert sns_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].platform_endpoints[endpoint["EndpointArn"]].custom_user_data \
        == "p_1"
    assert endpoints(sns, fcm) == []
    message = published(endpoint["EndpointArn"])[0]
    assert set(message) == {"default", "APNS_SANDBOX"} and message["default"] == "Your cart misses you"
    assert json.loads(message["APNS_SANDBOX"]) == {
        "aps": {"alert": {"title": "Still thinking?", "body": "Your cart misses you"}, "sound": "default",
                "thread-id": "abandoned_cart"},
        "message_id": "m_1", "journey": "abandoned_cart", "step": "remind"}


def test_fcm_v1_message_for_a_prefixed_token(aws, tmp_path):
    sns, apns, fcm = aws
    ch = channel(tmp_path, apns_application_arn=apns, fcm_application_arn=fcm)
    result = ch.send(push("fcm:" + FCM_TOKEN, purpose="transactional"))
    assert result.ok
    assert ch.attributes("GCM", push(FCM_TOKEN)) == {
        "AWS.SNS.MOBILE.FCM.TTL": {"DataType": "String", "StringValue": "172800"}}
    [endpoint] = endpoints(sns, fcm)
    assert endpoint["Attributes"]["Token"] == FCM_TOKEN
    [message] = published(endpoint["EndpointArn"])
    assert json.loads(message["GCM"]) == {"fcmV1Message": {"message": {
        "notification": {"title": "Still thinking?", "body": "Your cart misses you"},
        "data": {"message_id": "m_1", "journey": "abandoned_cart", "step": "remind"},
        "android": {"priority": "high", "notification": {"tag": "m_1", "sound": "default"}}}}}


def test_bare_tokens_go_to_the_only_platform_or_by_shape(aws, tmp_path):
    sns, apns, fcm = aws
    assert channel(tmp_path, fcm_application_arn=fcm).send(push(APNS_TOKEN)).ok  # FCM only: everything is FCM
    assert [e["Attributes"]["Token"] for e in endpoints(sns, fcm)] == [APNS_TOKEN]
    both = channel(tmp_path, apns_application_arn=apns, fcm_application_arn=fcm)
    assert both.send(push(FCM_TOKEN)).ok
    assert sorted(e["Attributes"]["Token"] for e in endpoints(sns, fcm)) == sorted([APNS_TOKEN, FCM_TOKEN])
    assert endpoints(sns, apns) == []


def test_disabled_endpoint_is_token_gone_and_is_deleted(aws, tmp_path):
    sns, apns, _ = aws
    ch = channel(tmp_path, apns_application_arn=apns)
    assert ch.send(push(APNS_TOKEN)).ok
    [endpoint] = endpoints(sns, apns)
    # what SNS does when APNs answers 410 Unregistered for the token
    sns.set_endpoint_attributes(EndpointArn=endpoint["EndpointArn"], Attributes={"Enabled": "false"})
    gone = ch.send(push(APNS_TOKEN, message_id="m_2"))
    assert not gone.ok and not gone.retryable and gone.error == "push token gone (endpoint disabled)"
    [feedback] = gone.feedback
    assert (feedback.kind, feedback.channel, feedback.address, feedback.at) == ("token_gone", "push", APNS_TOKEN, NOW)
    assert endpoints(sns, apns) == []  # the dead endpoint is deleted...
    again = ch.send(push(APNS_TOKEN, message_id="m_3"))  # ...so a re-registered token starts afresh
    assert again.ok and not again.feedback
    assert [e["Attributes"]["Enabled"] for e in endpoints(sns, apns)] == ["true"]


def test_token_registered_by_another_customer_is_repointed_and_enabled(aws, tmp_path):
    sns, apns, _ = aws
    arn = sns.create_platform_endpoint(PlatformApplicationArn=apns, Token=APNS_TOKEN,
                                       Attributes={"CustomUserData": "p_old", "Enabled": "false"})["EndpointArn"]
    result = channel(tmp_path, apns_application_arn=apns).send(push(APNS_TOKEN, profile_id="p_new"))
    assert result.ok
    attributes = sns.get_endpoint_attributes(EndpointArn=arn)["Attributes"]
    assert attributes["CustomUserData"] == "p_new" and attributes["Enabled"] == "true"
    assert len(published(arn)) == 1 and len(endpoints(sns, apns)) == 1
    # read + update cost two more requests
    assert result.cost_estimate == pytest.approx((4 * 0.5 + 0.5) / 1e6)


def test_publish_call_with_platform_attributes(aws, tmp_path):
    _, apns, _ = aws
    ch = channel(tmp_path, apns_application_arn=apns, ttl_seconds=3600)
    arn = apns.replace(":app/", ":endpoint/") + "/3f1c2a"
    with Stubber(ch.client) as stub:
        stub.add_response("create_platform_endpoint", {"EndpointArn": arn},
                          {"PlatformApplicationArn": apns, "Token": APNS_TOKEN, "CustomUserData": "p_1"})
        stub.add_response("publish", {"MessageId": "sns-1"}, {
            "TargetArn": arn, "MessageStructure": "json", "Message": ANY,
            "MessageAttributes": {
                "AWS.SNS.MOBILE.APNS_SANDBOX.TTL": {"DataType": "String", "StringValue": "3600"},
                "AWS.SNS.MOBILE.APNS.PUSH_TYPE": {"DataType": "String", "StringValue": "alert"},
                "AWS.SNS.MOBILE.APNS.PRIORITY": {"DataType": "String", "StringValue": "10"}}})
        result = ch.send(push(APNS_TOKEN, purpose="transactional"))
        stub.assert_no_pending_responses()
    assert result.ok and result.provider_message_id == "sns-1"


def test_publish_answers_endpoint_disabled(aws, tmp_path):
    """Real SNS returns a disabled endpoint's ARN from CreatePlatformEndpoint; Publish then says so."""
    _, apns, _ = aws
    ch = channel(tmp_path, apns_application_arn=apns)
    arn = apns.replace(":app/", ":endpoint/") + "/3f1c2a"
    with Stubber(ch.client) as stub:
        stub.add_response("create_platform_endpoint", {"EndpointArn": arn})
        stub.add_client_error("publish", service_error_code="EndpointDisabled", service_message="Endpoint is disabled",
                              http_status_code=400)
        stub.add_response("delete_endpoint", {}, {"EndpointArn": arn})
        gone = ch.send(push(APNS_TOKEN))
        stub.assert_no_pending_responses()
    assert not gone.ok and not gone.retryable and [f.kind for f in gone.feedback] == ["token_gone"]


@pytest.mark.parametrize(("code", "status", "retryable"), [
    ("Throttling", 400, True), ("InternalError", 500, True), ("AuthorizationError", 403, False),
    ("PlatformApplicationDisabled", 400, False)])
def test_provider_errors(aws, tmp_path, code, status, retryable):
    _, apns, _ = aws
    ch = channel(tmp_path, apns_application_arn=apns)
    with Stubber(ch.client) as stub:
        stub.add_response("create_platform_endpoint", {"EndpointArn": apns.replace(":app/", ":endpoint/") + "/1"})
        stub.add_client_error("publish", service_error_code=code, http_status_code=status)
        result = ch.send(push(APNS_TOKEN))
    assert not result.ok and result.retryable is retryable and result.error == f"SNS {code}" and not result.feedback


def test_refusals_name_the_problem(aws, tmp_path):
    _, _, fcm = aws
    only_fcm = channel(tmp_path, fcm_application_arn=fcm)
    no_apns = only_fcm.send(push("apns:" + APNS_TOKEN))
    assert not no_apns.ok and not no_apns.retryable
    assert no_apns.error == "no APNS platform application configured (apns_application_arn)"
    assert only_fcm.send(push("not a token")).error == "push address is not a device token"
    too_big = only_fcm.send(push(FCM_TOKEN, text="x" * 5000))
    assert not too_big.ok and not too_big.retryable and too_big.error.startswith("push payload is ")


def test_settings_name_the_field():
    with pytest.raises(ValidationError, match="apns_application_arn or fcm_application_arn"):
        SnsPushSettings()
    with pytest.raises(ValidationError, match="fcm_application_arn"):
        SnsPushSettings(fcm_application_arn="arn:aws:sns:us-east-1:123456789012:app/APNS/shop-ios")
    with pytest.raises(ValidationError, match="apns_application_arn"):
        SnsPushSettings(apns_application_arn="arn:aws:sns:us-east-1:123456789012:topic/not-an-app")


def test_disabled_endpoint_of_the_same_customer_is_not_re_enabled(aws, tmp_path):
    sns, apns, _ = aws
    sns.create_platform_endpoint(PlatformApplicationArn=apns, Token=APNS_TOKEN,
                                 Attributes={"CustomUserData": "p_1", "Enabled": "false"})
    gone = channel(tmp_path, apns_application_arn=apns).send(push(APNS_TOKEN, profile_id="p_1"))
    assert not gone.ok and [f.address for f in gone.feedback] == [APNS_TOKEN] and endpoints(sns, apns) == []
