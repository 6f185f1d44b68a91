"""Write keys, admin API keys, webhook secrets and the signing key.

Keys are random, shown once, and stored only as SHA-256 hashes (``write_keys/<hash>``),
so a leaked database does not leak a usable key. Webhook secrets must be kept as they
are (HMAC needs them); several may be active at once during rotation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets as pysecrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chalicelib.clock import Clock, iso
from chalicelib.errors import BadRequest, Unauthorized
from chalicelib.ports import Secrets

WRITE = "write_keys/"
ADMIN = "admin_keys/"
WEBHOOK = "webhook_secrets/"
SIGNING = "signing_key"


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class KeyInfo:
    name: str
    kind: str  # write or admin
    created_at: str


class Credentials:
    def __init__(self, secrets: Secrets, clock: Clock, cache_seconds: float = 30.0) -> None:
        self.secrets = secrets
        self.clock = clock
        self._cache: dict[str, tuple[float, KeyInfo | None]] = {}
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        # webhook secrets and the signing key, read once per cache period: every webhook and
        # every tracked link needs them, and on AWS each read is an SSM call (40 TPS by default)
        self._values: dict[str, tuple[float, Any]] = {}

    def _cached(self, name: str, load: Callable[[], Any]) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._values.get(name)
            if hit and hit[0] > now:
                return hit[1]
        value = load()
        with self._lock:
            self._values[name] = (now + self._cache_seconds, value)
        return value

    def _forget(self, name: str) -> None:
        with self._lock:
            self._values.pop(name, None)

    # ------------------------------------------------------------------ keys
    def create_key(self, kind: str, name: str) -> str:
        """Create a write or admin key; the plain key is returned once and never stored."""
        if kind not in ("write", "admin"):
            raise BadRequest("kind must be 'write' or 'admin'", field="kind")
        if not name or len(name) > 100:
            raise BadRequest("name must be 1-100 characters", field="name")
        prefix = "ocw_" if kind == "write" else "oca_"
        key = prefix + pysecrets.token_urlsafe(24)
        self.put_key(kind, name, key)
        return key

    def put_key(self, kind: str, name: str, key: str) -> None:
        """Store a key chosen by the operator (e.g. from a deployment secret)."""
        if len(key) < 16:
            raise BadRequest("a key must be at least 16 characters", field="key")
        info = {"name": name, "kind": kind, "created_at": iso(self.clock.now())}
        self.secrets.put((WRITE if kind == "write" else ADMIN) + _hash(key), json.dumps(info))
        with self._lock:
            self._cache.clear()

    def revoke(self, kind: str, name: str) -> int:
        prefix = WRITE if kind == "write" else ADMIN
        gone = 0
        for secret_name in self.secrets.names(prefix):
            raw = self.secrets.get(secret_name)
            if raw and json.loads(raw).get("name") == name:
                self.secrets.delete(secret_name)
                gone += 1
        with self._lock:
            self._cache.clear()
        return gone

    def list_keys(self) -> list[KeyInfo]:
        out = []
        for prefix in (WRITE, ADMIN):
            for secret_name in self.secrets.names(prefix):
                raw = self.secrets.get(secret_name)
                if raw:
                    d = json.loads(raw)
                    out.append(KeyInfo(d["name"], d["kind"], d["created_at"]))
        return out

    def _lookup(self, prefix: str, key: str) -> KeyInfo | None:
        cache_key = prefix + _hash(key)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(cache_key)
            if hit and hit[0] > now:
                return hit[1]
        raw = self.secrets.get(cache_key)
        info = None
        if raw:
            d = json.loads(raw)
            info = KeyInfo(d["name"], d["kind"], d["created_at"])
        with self._lock:
            self._cache[cache_key] = (now + self._cache_seconds, info)
        return info

    def check_write_key(self, key: str | None) -> KeyInfo:
        if not key:
            raise Unauthorized("missing write key: send it as the Basic auth username", field="Authorization")
        info = self._lookup(WRITE, key)
        if info is None:
            raise Unauthorized("unknown write key", field="Authorization")
        return info

    def check_admin_key(self, key: str | None) -> KeyInfo:
        if not key:
            raise Unauthorized("missing admin key: send 'Authorization: Bearer <key>'", field="Authorization")
        info = self._lookup(ADMIN, key)
        if info is None:
            raise Unauthorized("unknown admin key", field="Authorization")
        return info

    # ------------------------------------------------------------------ webhook secrets
    def add_webhook_secret(self, source: str, secret: str) -> str:
        if not secret:
            raise BadRequest("the secret is empty", field="secret")
        # newest sorts last; the random part keeps two secrets added in the same millisecond
        name = f"{WEBHOOK}{source}/{int(self.clock.now().timestamp() * 1000):013d}-{pysecrets.token_hex(4)}"
        self.secrets.put(name, secret)
        self._forget(f"webhook:{source}")
        return name

    def webhook_secrets(self, source: str) -> list[str]:
        """Every active secret of a source, newest first (rotation keeps the old one a while).

        Read at most once per cache period per process: a secret added or removed elsewhere
        takes effect within ``cache_seconds``; here, at once."""

        def load() -> list[str]:
            names = sorted(self.secrets.names(f"{WEBHOOK}{source}/"), reverse=True)
            return [v for v in (self.secrets.get(n) for n in names) if v]

        return list(self._cached(f"webhook:{source}", load))

    def remove_webhook_secrets(self, source: str) -> int:
        names = self.secrets.names(f"{WEBHOOK}{source}/")
        for n in names:
            self.secrets.delete(n)
        self._forget(f"webhook:{source}")
        return len(names)

    # ------------------------------------------------------------------ signed tokens
    def signing_key(self) -> bytes:
        def load() -> bytes:
            value = self.secrets.get(SIGNING)
            if value is None:
                self.secrets.put(SIGNING, pysecrets.token_urlsafe(32))
                value = self.secrets.get(SIGNING)
            assert value is not None
            return value.encode()

        key: bytes = self._cached(SIGNING, load)
        return key

    def sign(self, purpose: str, data: dict[str, str], ttl_seconds: int | None = None) -> str:
        """A compact URL-safe token: base64(json) + '.' + HMAC-SHA256, bound to ``purpose``."""
        body = dict(data)
        if ttl_seconds is not None:
            body["exp"] = str(int(self.clock.now().timestamp()) + ttl_seconds)
        raw = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).rstrip(b"=")
        mac = hmac.digest(self.signing_key(), purpose.encode() + b"." + raw, "sha256")[:18]  # one call, in C
        return raw.decode() + "." + base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def verify(self, purpose: str, token: str) -> dict[str, str]:
        try:
            raw, sig = token.split(".", 1)
            mac = hmac.digest(self.signing_key(), purpose.encode() + b"." + raw.encode(), "sha256")[:18]
            given = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
            if not hmac.compare_digest(mac, given):
                raise ValueError("bad signature")
            data: dict[str, str] = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        except (ValueError, json.JSONDecodeError) as exc:
            raise BadRequest("invalid or tampered token", field="token") from exc
        if "exp" in data and int(data["exp"]) < self.clock.now().timestamp():
            raise BadRequest("the token has expired", field="token")
        return data
