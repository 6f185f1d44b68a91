"""Provider feedback over Amazon SNS: SES bounces, complaints and deliveries.

SES publishes its events to the provider-feedback SNS topic, which POSTs them to
``/v1/feedback/sns``. Each message is verified as SNS signs it (the signing certificate is
fetched only from an SNS host over HTTPS, and cached; SignatureVersion 1 is SHA1, 2 is
SHA256) before anything acts on it. A subscription is confirmed by fetching its
SubscribeURL (same host rule). A permanent bounce or a complaint suppresses the address
(and a complaint also unsubscribes it from marketing); every notification is recorded
as an event on the customer's profile, once (deduplicated on the SNS MessageId).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import urllib.request
from typing import Any
from urllib.parse import urlparse

from chalicelib.clock import Clock, parse_iso
from chalicelib.errors import BadRequest, Unauthorized
from chalicelib.ports import EventStore, ProfileStore, StoredEvent
from chalicelib.services.consent import ConsentService
from chalicelib.services.identity import normalise_email

log = logging.getLogger("omnicast.feedback")
SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
SIGNED_KEYS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}


class SnsVerifier:
    def __init__(self, extra_hosts: tuple[str, ...] = ()) -> None:
        # extra hosts (plain http allowed) exist for tests with a loopback certificate server
        self.extra_hosts = extra_hosts
        self._certs: dict[str, Any] = {}
        self._lock = threading.Lock()

    def allowed(self, url: str) -> bool:
        parts = urlparse(url)
        if parts.hostname in self.extra_hosts:
            return parts.scheme in ("http", "https")
        return parts.scheme == "https" and bool(parts.hostname and SNS_HOST.match(parts.hostname))

    def fetch(self, url: str) -> bytes:
        if not self.allowed(url):
            raise Unauthorized(
                f"refusing a URL that is not an SNS host: {urlparse(url).hostname}", field="SigningCertURL"
            )
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - host checked above
            return bytes(resp.read())

    def certificate(self, url: str) -> Any:
        from cryptography import x509

        with self._lock:
            if url not in self._certs:
                self._certs[url] = x509.load_pem_x509_certificate(self.fetch(url))
            return self._certs[url]

    def verify(self, message: dict[str, Any]) -> None:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        kind = message.get("Type")
        if kind not in SIGNED_KEYS:
            raise BadRequest(
                "Type must be Notification, SubscriptionConfirmation or UnsubscribeConfirmation", field="Type"
            )
        for required in ("Signature", "SigningCertURL", "MessageId", "Timestamp", "TopicArn"):
            if not isinstance(message.get(required), str):
                raise Unauthorized(f"{required} is missing", field=required)
        text = "".join(f"{k}\n{message[k]}\n" for k in SIGNED_KEYS[kind] if k in message)
        algorithm = hashes.SHA256() if str(message.get("SignatureVersion")) == "2" else hashes.SHA1()  # noqa: S303
        try:
            signature = base64.b64decode(message["Signature"], validate=True)
            self.certificate(message["SigningCertURL"]).public_key().verify(
                signature, text.encode(), padding.PKCS1v15(), algorithm
            )
        except (InvalidSignature, ValueError) as exc:
            raise Unauthorized("SNS signature does not verify", field="Signature") from exc


class FeedbackService:
    def __init__(
        self,
        verifier: SnsVerifier,
        events: EventStore,
        profiles: ProfileStore,
        consent: ConsentService,
        clock: Clock,
        topics: tuple[str, ...] = (),
    ) -> None:
        self.verifier = verifier
        self.events = events
        self.profiles = profiles
        self.consent = consent
        self.clock = clock
        self.topics = topics  # accepted TopicArns; empty: any topic (a signed SNS message is still required)

    def handle(self, raw: bytes) -> dict[str, Any]:
        try:
            message = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadRequest(f"body is not valid JSON: {exc}", field="body") from exc
        if not isinstance(message, dict):
            raise BadRequest("body must be an SNS message object", field="body")
        self.verifier.verify(message)
        if self.topics and message["TopicArn"] not in self.topics:
            raise Unauthorized("messages from this topic are not accepted", field="TopicArn")
        if message["Type"] == "SubscriptionConfirmation":
            self.verifier.fetch(str(message.get("SubscribeURL", "")))
            return {"confirmed": True}
        if message["Type"] == "UnsubscribeConfirmation":
            return {"ok": True}
        return self._notification(message)

    def _notification(self, message: dict[str, Any]) -> dict[str, Any]:
        try:
            body = json.loads(message["Message"])
        except (TypeError, json.JSONDecodeError) as exc:
            raise BadRequest("Message is not an SES event", field="Message") from exc
        kind = body.get("eventType") or body.get("notificationType")
        mail = body.get("mail") or {}
        if kind == "Bounce":
            details = body.get("bounce") or {}
            recipients = [r.get("emailAddress") for r in details.get("bouncedRecipients") or []]
            action = "suppressed" if details.get("bounceType") == "Permanent" else None
            name = "Email Bounced"
        elif kind == "Complaint":
            recipients = [
                r.get("emailAddress") for r in (body.get("complaint") or {}).get("complainedRecipients") or []
            ]
            action, name = "suppressed", "Email Complained"
        elif kind == "Delivery":
            recipients, action, name = (
                list((body.get("delivery") or {}).get("recipients") or []),
                None,
                "Email Delivered",
            )
        else:
            return {"ignored": kind}
        changed = 0
        for address in recipients:
            email = normalise_email(address)
            profile_id = self.profiles.resolve("email", email) if email else None
            if profile_id is None:
                continue
            stored = self.events.append(
                StoredEvent(
                    message_id=f"{message['MessageId']}:{email}",
                    type="track",
                    profile_id=profile_id,
                    received_at=self.clock.now(),
                    timestamp=parse_iso(message["Timestamp"]),
                    event=name,
                    source="ses",
                    payload={
                        "type": "track",
                        "event": name,
                        "properties": {
                            "provider_message_id": mail.get("messageId"),
                            "tags": mail.get("tags"),
                            "detail": kind,
                        },
                    },
                    processed=True,
                )
            )
            if stored and action:
                self.consent.set_consent(profile_id, "email", action)
                changed += 1
        return {"event": name, "recipients": len(recipients), "suppressed": changed}
