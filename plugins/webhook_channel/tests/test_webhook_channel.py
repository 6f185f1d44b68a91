"""Outbound webhooks against a loopback receiver that verifies them as a Standard Webhooks consumer."""

from __future__ import annotations

import base64
import hmac
import json
import threading
from datetime import UTC, datetime
from hashlib import sha256
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from omnicast_webhook_channel import WebhookChannel, WebhookSettings

from chalicelib.adapters.local.blobs import FolderBlobStore
from chalicelib.clock import ManualClock
from chalicelib.plugin_api import ChannelContext, OutboundMessage

SECRET = "whsec_" + base64.b64encode(b"receiver-secret-0123456789abcdef").decode()


class Receiver(BaseHTTPRequestHandler):
    answers: list[tuple[int, dict[str, str]]] = []
    verified: list[dict] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        key = base64.b64decode(SECRET[6:])
        signed = f"{self.headers['webhook-id']}.{self.headers['webhook-timestamp']}.".encode() + body
        expected = base64.b64encode(hmac.new(key, signed, sha256).digest()).decode()
        given = [p.split(",", 1)[1] for p in self.headers["webhook-signature"].split()]
        status, headers = Receiver.answers.pop(0) if Receiver.answers else (204, {})
        if not any(hmac.compare_digest(expected, g) for g in given):
            status = 401
        else:
            Receiver.verified.append({"id": self.headers["webhook-id"], **json.loads(body)})
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    Receiver.answers, Receiver.verified = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks"
    server.shutdown()
    server.server_close()


def channel(tmp_path, url, secret=SECRET):
    return WebhookChannel(WebhookSettings(url=url, secret=secret),
                          ChannelContext(clock=ManualClock(datetime(2026, 3, 2, tzinfo=UTC)),
                                         blobs=FolderBlobStore(tmp_path)))


def msg():
    return OutboundMessage(message_id="m_42", channel="webhook", to="p_1", subject="Hi", text="Body",
                           metadata={"journey": "welcome"})


def test_signed_delivery_verifies_at_the_receiver(receiver, tmp_path):
    result = channel(tmp_path, receiver).send(msg())
    assert result.ok and result.provider_message_id == "m_42"
    assert Receiver.verified == [{"id": "m_42", "type": "message.send", "message_id": "m_42", "profile_id": "p_1",
                                  "subject": "Hi", "text": "Body", "metadata": {"journey": "welcome"}}]
    bad = channel(tmp_path, receiver, secret="whsec_" + base64.b64encode(b"another").decode()).send(msg())
    assert not bad.ok and not bad.retryable and bad.error == "HTTP 401"


@pytest.mark.parametrize(("status", "headers", "retryable", "after"), [
    (429, {"Retry-After": "12"}, True, 12.0), (503, {}, True, None), (400, {}, False, None)])
def test_failures(receiver, tmp_path, status, headers, retryable, after):
    Receiver.answers = [(status, headers)]
    result = channel(tmp_path, receiver).send(msg())
    assert not result.ok and result.retryable is retryable and result.retry_after_seconds == after


def test_unreachable_is_retryable(tmp_path):
    result = channel(tmp_path, "http://127.0.0.1:9/nothing").send(msg())
    assert not result.ok and result.retryable
