"""Web Push against a loopback push service that does what a real one does: it checks the
VAPID JWT (ES256 signature with the key in ``k=``, ``aud`` = its own origin, ``exp`` within 24
hours) and, standing in for the browser, decrypts the aes128gcm body with the subscription's
private key (RFC 8291, written out here with ``cryptography`` independently of http-ece)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from omnicast_web_push import MAX_PLAINTEXT, WebPush, WebPushSettings

from chalicelib.adapters.local.blobs import FolderBlobStore
from chalicelib.clock import ManualClock
from chalicelib.plugin_api import ChannelContext, OutboundMessage

NOW = datetime(2026, 3, 2, 10, tzinfo=UTC)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def raw_public(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


# the shop's application server key (VAPID) and one browser's subscription key pair
VAPID_KEY = ec.generate_private_key(ec.SECP256R1())
VAPID_RAW = b64(VAPID_KEY.private_numbers().private_value.to_bytes(32, "big"))
VAPID_PEM = VAPID_KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
BROWSER_KEY = ec.generate_private_key(ec.SECP256R1())
AUTH_SECRET = bytes(range(16))


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()[:length]  # one block is enough here


def decrypt_aes128gcm(body: bytes) -> bytes:
    """RFC 8291 section 3.4 + RFC 8188, as the browser does it."""
    salt, rs, idlen = body[:16], int.from_bytes(body[16:20], "big"), body[20]
    as_public, ciphertext = body[21:21 + idlen], body[21 + idlen:]
    assert idlen == 65 and len(ciphertext) <= rs, "one record, keyid = the sender's ephemeral public key"
    shared = BROWSER_KEY.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), as_public))
    prk_key = hmac.new(AUTH_SECRET, shared, hashlib.sha256).digest()
    ikm = hkdf_expand(prk_key, b"WebPush: info\x00" + raw_public(BROWSER_KEY) + as_public, 32)
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    cek = hkdf_expand(prk, b"Content-Encoding: aes128gcm\x00", 16)
    nonce = hkdf_expand(prk, b"Content-Encoding: nonce\x00", 12)
    padded = AESGCM(cek).decrypt(nonce, ciphertext, None)
    plaintext, delimiter = padded.rstrip(b"\x00")[:-1], padded.rstrip(b"\x00")[-1:]
    assert delimiter == b"\x02", "the last (only) record ends with 0x02"
    return plaintext


def verify_vapid(authorization: str, origin: str) -> dict:
    """RFC 8292: ``vapid t=<JWT>, k=<public key>``; the JWT verifies with k, aud is our origin."""
    scheme, _, params = authorization.partition(" ")
    assert scheme == "vapid", authorization[:20]
    fields = dict(p.strip().split("=", 1) for p in params.split(","))
    assert unb64(fields["k"]) == raw_public(VAPID_KEY), "k is the application server key of the subscription"
    header, claims, signature = fields["t"].split(".")
    assert json.loads(unb64(header)) == {"typ": "JWT", "alg": "ES256"}
    sig = unb64(signature)
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64(fields["k"]))
    public.verify(encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")),
                  f"{header}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))  # raises InvalidSignature
    decoded = json.loads(unb64(claims))
    assert decoded["aud"] == origin
    assert NOW.timestamp() < decoded["exp"] <= NOW.timestamp() + 24 * 3600
    return decoded


class PushService(BaseHTTPRequestHandler):
    answers: list[tuple[int, dict[str, str]]] = []
    received: list[dict] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status, headers = PushService.answers.pop(0) if PushService.answers else (201, {})
        try:
            claims = verify_vapid(self.headers["Authorization"], f"http://127.0.0.1:{self.server.server_address[1]}")
            assert self.headers["Content-Encoding"] == "aes128gcm"
            PushService.received.append({
                "path": self.path, "claims": claims, "ttl": self.headers["TTL"], "urgency": self.headers["Urgency"],
                "topic": self.headers["Topic"],
                "payload": json.loads(decrypt_aes128gcm(body))})
            if status == 201:
                headers = {"Location": f"/messages/{len(PushService.received)}", **headers}
        except (AssertionError, InvalidSignature, KeyError, ValueError) as exc:
            status, headers = 401, {}
            PushService.received.append({"rejected": repr(exc)})
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def service():
    PushService.answers, PushService.received = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), PushService)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def subscription(endpoint: str, p256dh: bytes | None = None) -> str:
    return json.dumps({"endpoint": endpoint, "expirationTime": None,
                       "keys": {"p256dh": b64(p256dh or raw_public(BROWSER_KEY)), "auth": b64(AUTH_SECRET)}})


def channel(tmp_path, **overrides):
    settings = {"vapid_private_key": VAPID_RAW, "vapid_subject": "mailto:ops@shop.example",
                "endpoint_hosts": ["127.0.0.1"], "require_https": False, **overrides}
    return WebPush(WebPushSettings(**settings), ChannelContext(clock=ManualClock(NOW), blobs=FolderBlobStore(tmp_path)))


def push(to, text="Back in stock: the blue kettle", purpose="marketing"):
    return OutboundMessage(message_id="m_7", channel="push", to=to, subject="Good news", text=text,
                           metadata={"journey": "back_in_stock", "step": "notify", "profile_id": "p_1",
                                     "purpose": purpose, "url": "https://shop.example/p/kettle"})


def test_encrypted_signed_push_reaches_the_browser(service, tmp_path):
    result = channel(tmp_path).send(push(subscription(service + "/push/sub-1")))
    assert result.ok and result.provider_message_id == "/messages/1" and result.cost_estimate == 0.0
    [got] = PushService.received
    assert got["path"] == "/push/sub-1" and got["ttl"] == "172800" and got["urgency"] == "normal"
    assert got["claims"]["sub"] == "mailto:ops@shop.example"
    assert got["topic"] == b64(hashlib.sha256(b"m_7").digest())[:32]
    assert got["payload"] == {"title": "Good news", "body": "Back in stock: the blue kettle", "message_id": "m_7",
                              "tag": "m_7",
                              "data": {"journey": "back_in_stock", "step": "notify",
                                       "url": "https://shop.example/p/kettle"}}


def test_pem_key_and_high_urgency_for_transactional(service, tmp_path):
    ch = channel(tmp_path, vapid_private_key=VAPID_PEM, ttl_seconds=60)
    assert ch.send(push(subscription(service + "/s"), purpose="transactional", text="Your order shipped")).ok
    [got] = PushService.received
    assert (got["ttl"], got["urgency"], got["payload"]["body"]) == ("60", "high", "Your order shipped")
    assert ch.application_server_key == b64(raw_public(VAPID_KEY))  # what the storefront subscribes with


def test_a_foreign_vapid_key_is_refused_by_the_service(service, tmp_path):
    other = b64(ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value.to_bytes(32, "big"))
    result = channel(tmp_path, vapid_private_key=other).send(push(subscription(service + "/s")))
    assert not result.ok and not result.retryable and "VAPID" in result.error
    assert "application server key" in PushService.received[0]["rejected"]


@pytest.mark.parametrize("status", [404, 410])
def test_gone_subscription_is_reported(service, tmp_path, status):
    PushService.answers = [(status, {})]
    address = subscription(service + "/expired")
    result = channel(tmp_path).send(push(address))
    assert not result.ok and not result.retryable and result.error == f"push subscription gone (HTTP {status})"
    [feedback] = result.feedback
    assert (feedback.kind, feedback.channel, feedback.address, feedback.at) == ("token_gone", "push", address, NOW)


@pytest.mark.parametrize(("status", "headers", "retryable", "after"), [
    (429, {"Retry-After": "30"}, True, 30.0),
    (429, {"Retry-After": format_datetime(NOW + timedelta(minutes=2), usegmt=True)}, True, 120.0),
    (503, {"Retry-After": "5"}, True, 5.0), (500, {}, True, None),
    (413, {}, False, None), (400, {}, False, None)])
def test_service_answers(service, tmp_path, status, headers, retryable, after):
    PushService.answers = [(status, headers)]
    result = channel(tmp_path).send(push(subscription(service + "/s")))
    assert not result.ok and result.retryable is retryable and result.retry_after_seconds == after
    assert not result.feedback and len(PushService.received) == 1
    if status == 413:
        assert result.error == "push payload too large (HTTP 413)"


def test_refusals_before_anything_is_sent(service, tmp_path):
    ch = channel(tmp_path)
    cases = {
        "device-token-1": "push address is not a Web Push subscription (JSON)",
        json.dumps({"keys": {}}): "push subscription: endpoint missing",
        subscription(service + "/s", p256dh=b"\x04" + b"\x01" * 10):
            "push subscription: keys.p256dh is not a valid key",
        subscription("https://evil.example/collect"):
            "push subscription: endpoint host evil.example is not a known push service (endpoint_hosts)",
    }
    for address, error in cases.items():
        result = ch.send(push(address))
        assert (result.ok, result.retryable, result.error) == (False, False, error)
    off_curve = ch.send(push(subscription(service + "/s", p256dh=b"\x04" + b"\x01" * 64)))
    assert not off_curve.ok and not off_curve.retryable and off_curve.error.startswith("push subscription")
    too_big = ch.send(push(subscription(service + "/s"), text="x" * MAX_PLAINTEXT))
    assert not too_big.ok and not too_big.retryable and too_big.error.startswith("push payload is ")
    https_only = channel(tmp_path, require_https=True).send(push(subscription(service + "/s")))
    assert https_only.error == "push subscription: endpoint is not https"
    bad_key = channel(tmp_path, vapid_private_key="not-a-key").send(push(subscription(service + "/s")))
    assert not bad_key.ok and bad_key.error.startswith("vapid_private_key: not a P-256 private key")
    assert PushService.received == []


def test_default_hosts_are_the_browser_push_services(tmp_path):
    ch = channel(tmp_path, endpoint_hosts=WebPushSettings.model_fields["endpoint_hosts"].default, require_https=True)
    assert ch.endpoint_problem("https://fcm.googleapis.com/fcm/send/abc") is None
    assert ch.endpoint_problem("https://updates.push.services.mozilla.com/wpush/v2/abc") is None
    assert ch.endpoint_problem("https://web.push.apple.com/QO3") is None
    assert ch.endpoint_problem("https://fcm.googleapis.com.evil.example/x") is not None


def test_unreachable_service_is_retryable(tmp_path):
    result = channel(tmp_path).send(push(subscription("http://127.0.0.1:9/s")))
    assert not result.ok and result.retryable and result.error.startswith("push service unreachable")


def test_secret_key_never_printed(tmp_path):
    ch = channel(tmp_path)
    assert VAPID_RAW not in f"{ch!r} {ch.settings!r} {ch.settings.model_dump()}"


def test_a_redirect_is_not_followed(service, tmp_path):
    PushService.answers = [(307, {"Location": "http://169.254.169.254/latest/meta-data/"})]
    result = channel(tmp_path).send(push(subscription(service + "/s")))
    assert not result.ok and not result.retryable and result.error == "push service redirected"
    assert len(PushService.received) == 1


def test_a_missing_dependency_is_a_clear_failure(service, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pywebpush", None)  # as in a package built without it
    result = channel(tmp_path).send(push(subscription(service + "/s")))
    assert (result.ok, result.retryable, result.error) == (False, False, "web_push needs the pywebpush package")
    assert PushService.received == []
