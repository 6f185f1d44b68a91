"""Web Push to browsers: RFC 8030 delivery, RFC 8291 aes128gcm payload encryption, RFC 8292 VAPID.

The profile's push address is the browser's ``PushSubscription`` as JSON (what
``subscription.toJSON()`` gives the storefront): ``{"endpoint": "https://...", "keys":
{"p256dh": "...", "auth": "..."}}``. The payload (title, body, message id, journey) is
encrypted for that subscription and POSTed to its endpoint with a VAPID ``Authorization``
header signed with the shop's application server key; the browser's service worker shows it.

Encryption and signing are delegated to ``pywebpush`` (which uses ``http-ece`` for RFC 8188 /
8291 and ``py-vapid`` for the RFC 8292 JWT), all imported on first send only.

Answers: 201 is accepted (the ``Location`` header names the push message); 404 and 410
mean the subscription is gone (the result carries a ``token_gone`` feedback item, no
retry); 413 is a payload too large; 429 and 5xx are retryable, honouring Retry-After;
other 4xx are not retryable. Only endpoints on known push services over HTTPS are called
(the address comes from a browser, so anything else would let a visitor make us POST to
any URL).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr

from chalicelib.plugin_api import (
    Channel,
    DeliveryFeedback,
    OutboundMessage,
    PluginSettings,
    SendResult,
    hookimpl,
)

# the push services of Chrome/Edge/Opera/Samsung (FCM), Firefox (Mozilla autopush),
# Edge on Windows (WNS) and Safari (Apple); a host matches itself and its sub-domains
PUSH_SERVICES = ("fcm.googleapis.com", "push.services.mozilla.com", "notify.windows.com", "push.apple.com")
# RFC 8291: one record of at most 4096 octets = 86 header + plaintext + 1 delimiter + 16 tag
MAX_PLAINTEXT = 4096 - 86 - 1 - 16
DATA_KEYS = ("journey", "step", "url")
JWT_LIFETIME_SECONDS = 12 * 3600  # RFC 8292: no more than 24 hours


class WebPushSettings(PluginSettings):
    # the application server key pair's private half: base64url of the raw 32-byte key (what
    # `vapid --gen` and `web-push generate-vapid-keys` print) or a PEM
    vapid_private_key: SecretStr
    # the JWT "sub": how the push service reaches the shop's operator
    vapid_subject: str = Field(pattern=r"^(mailto:[^@\s]+@[^@\s]+|https://\S+)$")
    ttl_seconds: int = Field(2 * 86400, ge=0, le=28 * 86400)  # how long a push service keeps it for an offline browser
    urgency: Literal["very-low", "low", "normal", "high"] = "normal"  # transactional messages are sent "high"
    timeout: float = Field(10.0, gt=0)
    endpoint_hosts: tuple[str, ...] = PUSH_SERVICES
    require_https: bool = True


class SubscriptionError(ValueError):
    """The push address is not a usable Web Push subscription (the message says which part)."""


def parse_subscription(address: str) -> dict[str, Any]:
    """The subscription JSON as pywebpush takes it, with its keys checked."""
    try:
        sub = json.loads(address)
    except ValueError:
        raise SubscriptionError("push address is not a Web Push subscription (JSON)") from None
    if not isinstance(sub, dict) or not isinstance(sub.get("endpoint"), str):
        raise SubscriptionError("push subscription: endpoint missing")
    keys = sub.get("keys")
    if not isinstance(keys, dict):
        raise SubscriptionError("push subscription: keys missing")
    for name, size in (("p256dh", 65), ("auth", 16)):
        value = keys.get(name)
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)) if isinstance(value, str) else b""
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != size or (name == "p256dh" and raw[0] != 4):
            raise SubscriptionError(f"push subscription: keys.{name} is not a valid key")
    return {"endpoint": sub["endpoint"], "keys": {"p256dh": keys["p256dh"], "auth": keys["auth"]}}


def topic(message_id: str) -> str:
    """RFC 8030 Topic (32 base64url characters): a retry replaces the same message still waiting
    at the push service instead of queueing a second copy."""
    return base64.urlsafe_b64encode(hashlib.sha256(message_id.encode()).digest()).decode()[:32]


def retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds (it may be a number of seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, (parsedate_to_datetime(value) - now).total_seconds())
    except (TypeError, ValueError):
        return None


class WebPush(Channel):
    name = "web_push"
    channel = "push"
    title = "Web Push (VAPID, aes128gcm)"
    max_body_chars = 2000  # the encrypted payload must stay within 4096 octets
    batch_size = 1
    required_packages = ("pywebpush", "py-vapid", "http-ece")
    Settings: ClassVar[type[PluginSettings]] = WebPushSettings

    def __init__(self, settings: PluginSettings, context: Any) -> None:
        super().__init__(settings, context)
        self._lock = threading.Lock()
        self._vapid: Any = None
        self._session: Any = None

    # ----------------------------------------------------------------- keys
    @property
    def vapid(self) -> Any:
        """The application server key (py_vapid.Vapid02), loaded on first use."""
        with self._lock:
            if self._vapid is None:
                self._vapid = load_vapid(self.settings.vapid_private_key.get_secret_value())  # type: ignore[attr-defined]
            return self._vapid

    @property
    def application_server_key(self) -> str:
        """The public key for the storefront's ``pushManager.subscribe({applicationServerKey})``."""
        from cryptography.hazmat.primitives import serialization

        raw = self.vapid.public_key.public_bytes(serialization.Encoding.X962,
                                                 serialization.PublicFormat.UncompressedPoint)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    @property
    def session(self) -> Any:
        with self._lock:
            if self._session is None:
                import requests

                self._session = requests.Session()
                self._session.max_redirects = 0  # a push service answers, it does not redirect
            return self._session

    # ----------------------------------------------------------------- sending
    def payload(self, message: OutboundMessage) -> bytes:
        """What the service worker receives in ``event.data.json()``."""
        # "tag": showNotification's tag, so a duplicate delivery replaces the shown notification
        body: dict[str, Any] = {"title": message.subject or "", "body": message.text,
                                "message_id": message.message_id, "tag": message.message_id}
        data = {k: str(message.metadata[k]) for k in DATA_KEYS if message.metadata.get(k)}
        if data:
            body["data"] = data
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

    def endpoint_problem(self, endpoint: str) -> str | None:
        s: WebPushSettings = self.settings  # type: ignore[assignment]
        parts = urlsplit(endpoint)
        host = (parts.hostname or "").lower()
        if parts.scheme != "https" and (s.require_https or parts.scheme != "http"):
            return "push subscription: endpoint is not https"
        if not any(host == h or host.endswith("." + h) for h in s.endpoint_hosts):
            return f"push subscription: endpoint host {host or '?'} is not a known push service (endpoint_hosts)"
        return None

    def send(self, message: OutboundMessage) -> SendResult:
        s: WebPushSettings = self.settings  # type: ignore[assignment]
        try:
            subscription = parse_subscription(message.to)
        except SubscriptionError as exc:
            return SendResult.failed(str(exc), retryable=False)
        problem = self.endpoint_problem(subscription["endpoint"])
        if problem:
            return SendResult.failed(problem, retryable=False)
        data = self.payload(message)
        if len(data) > MAX_PLAINTEXT:
            return SendResult.failed(f"push payload is {len(data)} bytes; Web Push takes {MAX_PLAINTEXT}",
                                     retryable=False)
        try:
            import requests
            from pywebpush import WebPusher, WebPushException
        except ImportError as exc:  # a package built without the plugin's dependencies
            return SendResult.failed(f"web_push needs the {exc.name} package", retryable=False)
        try:
            vapid = self.vapid
        except ValueError as exc:
            return SendResult.failed(str(exc), retryable=False)

        now = self.context.clock.now()
        endpoint = urlsplit(subscription["endpoint"])
        headers = vapid.sign({"aud": f"{endpoint.scheme}://{endpoint.netloc}",
                              "exp": int(now.timestamp()) + JWT_LIFETIME_SECONDS, "sub": s.vapid_subject})
        headers["Urgency"] = "high" if message.metadata.get("purpose") == "transactional" else s.urgency
        headers["Topic"] = topic(message.message_id)
        try:
            response = WebPusher(subscription, requests_session=self.session).send(
                data, headers, ttl=s.ttl_seconds, content_encoding="aes128gcm", timeout=s.timeout)
        except WebPushException as exc:  # the subscription's keys do not make a P-256 key agreement
            return SendResult.failed(f"push subscription: {type(exc).__name__}", retryable=False)
        except ValueError:
            return SendResult.failed("push subscription: keys.p256dh is not a point on P-256", retryable=False)
        except requests.TooManyRedirects:
            return SendResult.failed("push service redirected", retryable=False)
        except requests.RequestException as exc:
            return SendResult.failed(f"push service unreachable: {type(exc).__name__}", retryable=True)
        status = response.status_code
        if 200 <= status < 300:
            return SendResult(ok=True, provider_message_id=response.headers.get("Location") or message.message_id,
                              status="sent")
        if status in (404, 410):
            gone = DeliveryFeedback(kind="token_gone", channel=self.channel, address=message.to,
                                    at=self.context.clock.now(), detail={"plugin": self.name, "status": status})
            return SendResult.failed(f"push subscription gone (HTTP {status})", retryable=False, feedback=(gone,))
        if status == 413:
            return SendResult.failed("push payload too large (HTTP 413)", retryable=False)
        if status in (401, 403):
            return SendResult.failed(f"push service refused the VAPID signature (HTTP {status})", retryable=False)
        retryable = status == 429 or status >= 500
        return SendResult.failed(f"HTTP {status}", retryable=retryable,
                                 retry_after=retry_after(response.headers.get("Retry-After"), now) if retryable
                                 else None)

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None


def load_vapid(private_key: str) -> Any:
    """A py_vapid signer from a raw base64url key or a PEM; ValueError names the setting."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from py_vapid import Vapid02

    try:
        if "-----BEGIN" in private_key:
            key = serialization.load_pem_private_key(private_key.encode(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
                raise ValueError("not P-256")
            return Vapid02(key)
        return Vapid02.from_string(private_key.strip())
    except Exception:  # noqa: BLE001 - any parse failure is the same configuration error
        raise ValueError("vapid_private_key: not a P-256 private key (base64url raw key or PEM)") from None


@hookimpl
def register_channels(register):  # type: ignore[no-untyped-def]
    """Register the Web Push channel."""
    register(WebPush)
