"""The channel contract: every registered channel plugin, built-in or third-party, passes.

Each channel needs a harness entry below that gives it working settings against a real
endpoint on this machine (an SMTP server, a loopback HTTP server, moto) or none for the
sandbox ones. A channel without a harness entry fails, so no plugin ships untested.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from pydantic import SecretStr

from chalicelib.adapters.local.blobs import FolderBlobStore
from chalicelib.clock import ManualClock
from chalicelib.plugin_api import Channel, ChannelContext, OutboundMessage, PluginSettings, SendResult
from chalicelib.plugin_host import PluginHost
from tests.conftest import SmtpCatcher, free_port

KINDS = {"email", "sms", "push", "messenger", "feed", "webhook"}
ADDRESS = {"email": "ann@example.com", "sms": "+14155552671", "push": "device-token-1", "messenger": "12345",
           "webhook": "https://example.com/hook"}
# a plugin whose address is not its kind's (a web push subscription): its harness fills this in
ADDRESS_BY_PLUGIN: dict[str, str] = {}
HOST = PluginHost().load()
CHANNELS = HOST.registry.channels


@contextlib.contextmanager
def smtp_harness() -> Iterator[dict[str, Any]]:
    catcher = SmtpCatcher()
    controller = Controller(catcher, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield {"host": "127.0.0.1", "port": controller.port}
    finally:
        controller.stop()


@contextlib.contextmanager
def no_settings() -> Iterator[dict[str, Any]]:
    yield {}


@contextlib.contextmanager
def aws_harness() -> Iterator[dict[str, Any]]:
    """moto for the AWS channels (SES with a verified domain, SNS)."""
    import os

    import boto3
    from moto import mock_aws

    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    try:
        with mock_aws():
            boto3.client("ses", region_name="us-east-1").verify_domain_identity(Domain="example.com")
            yield {"region": "us-east-1"}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def webhook_harness() -> Iterator[dict[str, Any]]:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Accept(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Accept)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield {"url": f"http://127.0.0.1:{server.server_address[1]}/hooks", "secret": "whsec_c2VjcmV0"}
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def sns_push_harness() -> Iterator[dict[str, Any]]:
    """moto with an FCM platform application; the contract's device token goes to it."""
    import boto3

    with aws_harness() as settings:
        app = boto3.client("sns", region_name="us-east-1").create_platform_application(
            Name="contract", Platform="GCM", Attributes={"PlatformCredential": "fcm-key"})
        yield {**settings, "fcm_application_arn": app["PlatformApplicationArn"]}


@contextlib.contextmanager
def web_push_harness() -> Iterator[dict[str, Any]]:
    """A loopback push service answering 201; the address is a subscription with a real P-256 key."""
    import base64
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    class Accept(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            ok = self.headers.get("Content-Encoding") == "aes128gcm" and \
                self.headers.get("Authorization", "").startswith("vapid t=")
            self.send_response(201 if ok else 400)
            self.send_header("Location", "/messages/1")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Accept)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    browser = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    vapid = ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value.to_bytes(32, "big")
    ADDRESS_BY_PLUGIN["web_push"] = json.dumps({
        "endpoint": f"http://127.0.0.1:{server.server_address[1]}/push/1",
        "keys": {"p256dh": b64(browser), "auth": b64(bytes(16))}})
    try:
        yield {"vapid_private_key": b64(vapid), "vapid_subject": "mailto:ops@example.com",
               "endpoint_hosts": ["127.0.0.1"], "require_https": False}
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def json_api(answer: Any) -> Iterator[str]:
    """A loopback API answering JSON: ``answer(path, headers, body) -> (status, json)``, the body
    decoded as JSON or, for form posts (Twilio), as ``parse_qs`` lists; yields its base URL."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs

    class Api(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw_body = self.rfile.read(int(self.headers["Content-Length"]))
            form = (self.headers.get("Content-Type") or "").startswith("application/x-www-form-urlencoded")
            body = parse_qs(raw_body.decode()) if form else json.loads(raw_body)
            status, reply = answer(self.path, self.headers, body)
            raw = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def telegram_harness() -> Iterator[dict[str, Any]]:
    """A loopback Bot API: sendMessage with the bot token in the path answers as Telegram does."""
    token = "123456:contract-token"
    counter = iter(range(1, 1000))

    def answer(path: str, headers: Any, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if path != f"/bot{token}/sendMessage":
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        if not body.get("text") or body.get("parse_mode") != "HTML":
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"}
        return 200, {"ok": True, "result": {"message_id": next(counter), "date": 1772445600, "text": body["text"],
                                            "chat": {"id": int(body["chat_id"]), "type": "private"}}}

    with json_api(answer) as url:
        yield {"bot_token": token, "base_url": url}


@contextlib.contextmanager
def whatsapp_harness() -> Iterator[dict[str, Any]]:
    """A loopback Cloud API: with no customer message on record, the approved template goes."""
    counter = iter(range(1, 1000))

    def answer(path: str, headers: Any, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if headers.get("Authorization") != "Bearer contract-token" or path != "/v21.0/1065403522/messages":
            return 401, {"error": {"message": "Invalid OAuth access token", "type": "OAuthException", "code": 190}}
        if body.get("type") != "template" or body["template"]["name"] != "hello_world":
            return 400, {"error": {"message": "(#131047) Re-engagement message", "type": "OAuthException",
                                   "code": 131047}}
        return 200, {"messaging_product": "whatsapp", "contacts": [{"input": body["to"], "wa_id": body["to"]}],
                     "messages": [{"id": f"wamid.contract{next(counter)}", "message_status": "accepted"}]}

    with json_api(answer) as url:
        yield {"access_token": "contract-token", "phone_number_id": "1065403522", "base_url": url,
               "templates": {"*": {"name": "hello_world", "language": "en_US"}}}


@contextlib.contextmanager
def twilio_harness() -> Iterator[dict[str, Any]]:
    """A loopback Messages API: form-encoded POST with basic auth answers 201 and an SM sid, as Twilio does."""
    import base64
    import uuid

    sid, token = "AC" + "c0" * 16, "contract-token"
    auth = "Basic " + base64.b64encode(f"{sid}:{token}".encode()).decode()

    def answer(path: str, headers: Any, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        if headers.get("Authorization") != auth or path != f"/2010-04-01/Accounts/{sid}/Messages.json":
            return 401, {"code": 20003, "message": "Authenticate", "status": 401}
        if not form.get("Body") or not form.get("To", [""])[0].startswith("+"):
            return 400, {"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400}
        return 201, {"sid": "SM" + uuid.uuid4().hex, "status": "queued", "num_segments": "1",
                     "to": form["To"][0], "body": form["Body"][0]}

    with json_api(answer) as url:
        yield {"account_sid": sid, "auth_token": token, "from_number": "+15005550006", "base_url": url}


HARNESS = {
    "webhook": webhook_harness,
    "smtp": smtp_harness,
    "ses": aws_harness,
    "sns_sms": aws_harness,
    "sns_push": sns_push_harness,
    "web_push": web_push_harness,
    "sandbox_sms": no_settings,
    "sandbox_push": no_settings,
    "sandbox_messenger": no_settings,
    "telegram": telegram_harness,
    "whatsapp": whatsapp_harness,
    "twilio_sms": twilio_harness,
}


def context(tmp_path) -> ChannelContext:
    return ChannelContext(clock=ManualClock(datetime(2026, 3, 2, 10, tzinfo=UTC)), blobs=FolderBlobStore(tmp_path))


def messages(cls: type[Channel], n: int) -> list[OutboundMessage]:
    to = ADDRESS_BY_PLUGIN.get(cls.name, ADDRESS.get(cls.channel, "x"))
    return [OutboundMessage(message_id=f"contract-{i}", channel=cls.channel, to=to,
                            subject="Contract", text=f"Message {i}", html="<p>hi</p>" if cls.channel == "email"
                            else None) for i in range(n)]


@pytest.mark.parametrize("name", sorted(CHANNELS))
def test_class_metadata(name):
    cls = CHANNELS[name]
    assert cls.name == name and cls.channel in KINDS
    assert isinstance(cls.batch_size, int) and cls.batch_size >= 1
    assert issubclass(cls.Settings, PluginSettings) and cls.Settings.model_config.get("extra") == "forbid"
    assert cls.max_body_chars is None or cls.max_body_chars > 0
    assert cls.send is not Channel.send, "a channel must implement send"


@pytest.mark.parametrize("name", sorted(CHANNELS))
def test_secrets_are_masked_in_every_printed_form(name, tmp_path):
    cls = CHANNELS[name]
    secret_fields = [f for f, info in cls.Settings.model_fields.items()
                     if info.annotation in (SecretStr, SecretStr | None)]
    if not secret_fields:
        assert all("secret" not in f and "password" not in f and "token" not in f
                   for f in cls.Settings.model_fields), "a secret-looking setting that is not a SecretStr"
        return
    with HARNESS[name]() as settings:
        settings = {**settings, **{f: "s3cr3t-value" for f in secret_fields}}
        channel = cls(cls.Settings.model_validate(settings), context(tmp_path))
        printed = f"{channel!r} {channel.settings!r} {channel.settings} {channel.settings.model_dump()}"
        assert "s3cr3t-value" not in printed


@pytest.mark.parametrize("name", sorted(CHANNELS))
def test_sends_one_and_a_batch_against_its_harness(name, tmp_path):
    assert name in HARNESS, f"channel {name!r} has no harness in the contract suite"
    cls = CHANNELS[name]
    with HARNESS[name]() as settings:
        channel = cls(cls.Settings.model_validate(settings), context(tmp_path))
        one = channel.send(messages(cls, 1)[0])
        assert isinstance(one, SendResult) and one.ok and one.provider_message_id, one
        batch = messages(cls, min(cls.batch_size, 3) + 1)
        results = channel.send_batch(batch)
        assert len(results) == len(batch) and all(r.ok for r in results), results
        channel.close()


def test_the_suite_covers_every_registered_channel():
    assert set(CHANNELS) <= set(HARNESS), f"no harness for {set(CHANNELS) - set(HARNESS)}"
    assert {"smtp", "ses", "sandbox_sms"} <= set(CHANNELS)
