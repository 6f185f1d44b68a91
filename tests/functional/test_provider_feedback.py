"""SES feedback through SNS: signed as SNS signs (a certificate served on loopback), bounces and
complaints suppress the address, forged or tampered messages are refused."""

from __future__ import annotations

import base64
import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from chalicelib.services.feedback import SIGNED_KEYS

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.test")])
CERT = (x509.CertificateBuilder().subject_name(NAME).issuer_name(NAME).public_key(KEY.public_key())
        .serial_number(1).not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2040, 1, 1, tzinfo=UTC)).sign(KEY, hashes.SHA256()))


class CertServer(BaseHTTPRequestHandler):
    confirmed: list[str] = []

    def do_GET(self):
        if self.path.startswith("/confirm"):
            CertServer.confirmed.append(self.path)
            body = b"<ConfirmSubscriptionResponse/>"
        else:
            body = CERT.public_bytes(serialization.Encoding.PEM)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def sns(make_runtime, smtp_server):
    server = ThreadingHTTPServer(("127.0.0.1", 0), CertServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    runtime = make_runtime(smtp_server, feedback={"extra_cert_hosts": ["127.0.0.1"]})
    yield runtime, base
    server.shutdown()
    server.server_close()


def signed(base: str, kind: str, version: str = "2", **fields) -> dict:
    message = {"Type": kind, "MessageId": fields.pop("MessageId", "sns-1"), "TopicArn": "arn:aws:sns:us-east-1:1:fb",
               "Timestamp": "2026-03-02T10:00:00.000Z", "SignatureVersion": version,
               "SigningCertURL": f"{base}/cert.pem", **fields}
    text = "".join(f"{k}\n{message[k]}\n" for k in SIGNED_KEYS[kind] if k in message)
    algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()
    message["Signature"] = base64.b64encode(KEY.sign(text.encode(), padding.PKCS1v15(), algorithm)).decode()
    return message


def bounce(email: str, bounce_type: str = "Permanent") -> str:
    return json.dumps({"eventType": "Bounce", "mail": {"messageId": "ses-1"},
                       "bounce": {"bounceType": bounce_type, "bouncedRecipients": [{"emailAddress": email}]}})


def customer(runtime, email="ann@example.com"):
    from tests.unit.test_journeys import emit

    emit(runtime, "identify", userId="u1", traits={"email": email, "first_name": "Ann"})
    return runtime.stores.profiles.resolve("email", email)


def test_subscription_is_confirmed_through_an_allowed_host(sns):
    runtime, base = sns
    CertServer.confirmed = []
    msg = signed(base, "SubscriptionConfirmation", Message="confirm", Token="t",
                 SubscribeURL=f"{base}/confirm?token=t")
    assert runtime.feedback.handle(json.dumps(msg).encode()) == {"confirmed": True}
    assert CertServer.confirmed == ["/confirm?token=t"]


def test_a_permanent_bounce_suppresses_and_marketing_stops(sns, smtp_server, clock):
    runtime, base = sns
    profile_id = customer(runtime)
    sent_before = len(smtp_server.messages)
    answer = runtime.feedback.handle(json.dumps(signed(base, "Notification", Message=bounce("Ann@Example.com")))
                                     .encode())
    assert answer == {"event": "Email Bounced", "recipients": 1, "suppressed": 1}
    assert runtime.stores.profiles.get(profile_id).traits["consent"]["email"] == "suppressed"
    clock.advance(timedelta(days=3))
    runtime.drain()
    tips = next(e for e in runtime.stores.ledger.all() if e.step == "tips_email")
    assert tips.status == "skipped" and "suppressed" in tips.reason
    assert len(smtp_server.messages) == sent_before
    again = runtime.feedback.handle(json.dumps(signed(base, "Notification", Message=bounce("ann@example.com")))
                                    .encode())
    assert again["suppressed"] == 0  # the same SNS message twice changes nothing


def test_transient_bounces_only_record_and_sha1_signatures_verify(sns):
    runtime, base = sns
    profile_id = customer(runtime)
    msg = signed(base, "Notification", version="1", Message=bounce("ann@example.com", "Transient"))
    assert runtime.feedback.handle(json.dumps(msg).encode())["suppressed"] == 0
    assert "suppressed" not in str(runtime.stores.profiles.get(profile_id).traits.get("consent"))


def test_forged_tampered_and_foreign_cert_urls_are_refused(sns):
    from chalicelib.errors import BadRequest, Unauthorized

    runtime, base = sns
    customer(runtime)
    msg = signed(base, "Notification", Message=bounce("ann@example.com"))
    tampered = {**msg, "Message": bounce("someone@example.com")}
    with pytest.raises(Unauthorized, match="does not verify"):
        runtime.feedback.handle(json.dumps(tampered).encode())
    foreign = signed("https://evil.example", "Notification", Message=bounce("ann@example.com"))
    with pytest.raises(Unauthorized, match=r"not an SNS host: evil\.example"):
        runtime.feedback.handle(json.dumps(foreign).encode())
    with pytest.raises(BadRequest, match="Type must be"):
        runtime.feedback.handle(json.dumps({**msg, "Type": "Other"}).encode())
    with pytest.raises(BadRequest, match="not valid JSON"):
        runtime.feedback.handle(b"{oops")


def test_the_route_answers_401_for_unsigned_posts(api):
    r = api.client.http.post("/v1/feedback/sns", headers={"Content-Type": "text/plain"},
                             body=json.dumps({"Type": "Notification", "Message": "{}"}))
    assert r.status_code == 401 and json.loads(r.body)["error"] == "unauthorized"
