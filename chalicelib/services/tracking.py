"""Tracking: an open pixel and click redirects with signed, expiring tokens; UTM tags.

Every link in a message becomes ``<public_url>/t/c/<token>``; the token signs the
destination, so the redirect can only go where the message pointed (no open redirect),
and expires (90 days). The HTML part gets a 1x1 pixel ``/t/o/<token>``. Destinations get
UTM tags (source omnicast, medium the channel, campaign the journey, content the step)
unless they carry their own.

Machine activity is flagged and kept out of the rates: mail-privacy proxies and image
proxies that prefetch every pixel, security scanners that follow every link (known user
agents, HEAD requests, or a click within seconds of the send).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import re
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlparse, urlunparse

from chalicelib.clock import Clock, iso, parse_iso
from chalicelib.errors import BadRequest, NotFound
from chalicelib.ports import BlobStore, EventStore, Queue, SendLedger, StoredEvent
from chalicelib.services.credentials import Credentials
from chalicelib.services.ingest import INGEST_QUEUE

TOKEN_DAYS = 90
PIXEL = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")
URL = re.compile(r"https?://[^\s<>\"')]+")
HREF = re.compile(r'href="(https?://[^"]+)"')
MACHINE_AGENTS = re.compile(
    r"googleimageproxy|yahoomailproxy|bingpreview|barracuda|mimecast|proofpoint|symantec|trendmicro|"
    r"microsoft office|ms-office|safelinks|bot\b|crawler|spider|scanner|curl/|python-requests|headless|"
    r"facebookexternalhit|whatsapp/|telegrambot|slackbot|twitterbot|discordbot|skypeuripreview",
    re.IGNORECASE,
)


def _is_machine(user_agent: str) -> bool:
    return MACHINE_AGENTS.search(user_agent) is not None


_machine_seen = functools.lru_cache(maxsize=4096)(_is_machine)


def machine_agent(user_agent: str) -> bool:
    """A known image proxy, link scanner or bot (each user agent of a usual length read once:
    the same few mail clients and proxies fetch most opens; a long one is not kept)."""
    return (_is_machine if len(user_agent) > 512 else _machine_seen)(user_agent)


SCANNER_SECONDS = 10  # a human does not click within seconds of the send
SHORT_PREFIX = "links/"
SHORT_CODE = re.compile(r"[A-Za-z0-9_-]{12}")
CLICK_EVENTS = frozenset({"Email Link Clicked", "Message Link Clicked"})


def with_utm(url: str, channel: str, journey: str, step: str) -> str:
    """``url`` with the campaign's UTM parameters, unless it has its own (the same link in
    every message of a step: worked out once, unless it is unusually long)."""
    return (_with_utm if len(url) > 2048 else _utm_seen)(url, channel, journey, step)


def _with_utm(url: str, channel: str, journey: str, step: str) -> str:
    parts = urlparse(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if not any(k.startswith("utm_") for k in query):
        query.update({"utm_source": "omnicast", "utm_medium": channel, "utm_campaign": journey, "utm_content": step})
    return urlunparse(parts._replace(query=urlencode(query)))


_utm_seen = functools.lru_cache(maxsize=4096)(_with_utm)


class Tracking:
    def __init__(
        self,
        credentials: Credentials,
        events: EventStore,
        ledger: SendLedger,
        clock: Clock,
        public_url: str,
        *,
        links: bool = True,
        opens: bool = True,
        blobs: BlobStore | None = None,
        queue: Queue | None = None,
    ) -> None:
        self.credentials = credentials
        self.events = events
        # with a queue, a hit is queued (ingest) and a worker records it: the API answers
        # without writing to the event log (locally: without waiting for the workers' writes)
        self.queue = queue
        self.ledger = ledger
        self.clock = clock
        self.public_url = public_url.rstrip("/")
        self.links = links
        self.opens = opens
        self.blobs = blobs  # short links: code -> destination, for SMS, push and messengers

    # ------------------------------------------------------------------ short links
    def short_link(self, url: str, meta: dict[str, str]) -> str:
        """``<public_url>/s/<12 characters>``: SMS segments, push payloads and chat messages
        have no room for a signed token, so the destination and its message are kept in the
        blob store under a code derived (HMAC) from message and destination: the same link
        in a retried message gets the same code, and a code cannot be guessed."""
        if self.blobs is None:
            return self.link(url, meta)
        destination = with_utm(url, meta["channel"], meta["journey"], meta["step"])
        mac = hmac.new(self.credentials.signing_key(), f"short|{meta['key']}|{destination}".encode(),
                       hashlib.sha256).digest()
        code = base64.urlsafe_b64encode(mac[:9]).decode()
        record = {"u": destination, "m": meta["message_id"], "p": meta["profile_id"], "k": meta["key"],
                  "exp": int(self.clock.now().timestamp()) + TOKEN_DAYS * 86400}
        self.blobs.put(f"{SHORT_PREFIX}{code}.json", json.dumps(record).encode(), content_type="application/json")
        return f"{self.public_url}/s/{code}"

    def shorten(self, text: str, meta: dict[str, str]) -> str:
        """Every link in a plain-text message (SMS, push, messenger) as a short tracked link."""
        if not self.links:
            return text
        skip = (f"{self.public_url}/v1/unsubscribe", f"{self.public_url}/t/", f"{self.public_url}/s/")
        cache: dict[str, str] = {}

        def short(m: re.Match[str]) -> str:
            url = m.group(0)
            if url.startswith(skip):
                return url
            if url not in cache:
                cache[url] = self.short_link(url, meta)
            return cache[url]

        return URL.sub(short, text)

    def short_click(self, code: str, user_agent: str = "", method: str = "GET") -> str:
        if not SHORT_CODE.fullmatch(code) or self.blobs is None:
            raise NotFound("no such link", field="code")
        raw = self.blobs.get(f"{SHORT_PREFIX}{code}.json")
        if raw is None:
            raise NotFound("no such link", field="code")
        data = json.loads(raw)
        if int(data.get("exp", 0)) < self.clock.now().timestamp():
            raise BadRequest("the link has expired", field="code")
        self._record("Message Link Clicked", {k: str(v) for k, v in data.items()}, user_agent, method)
        return str(data["u"])

    # ------------------------------------------------------------------ rewriting
    def _token(self, purpose: str, data: dict[str, str]) -> str:
        return self.credentials.sign(purpose, data, ttl_seconds=TOKEN_DAYS * 86400)

    def link(self, url: str, meta: dict[str, str]) -> str:
        destination = with_utm(url, meta["channel"], meta["journey"], meta["step"])
        token = self._token(
            "click", {"m": meta["message_id"], "p": meta["profile_id"], "k": meta["key"], "u": destination}
        )
        return f"{self.public_url}/t/c/{token}"

    def rewrite(self, text: str, html: str | None, meta: dict[str, str]) -> tuple[str, str | None]:
        """Track every link except the unsubscribe one; add the pixel to the HTML part."""
        skip = f"{self.public_url}/v1/unsubscribe"
        cache: dict[str, str] = {}

        def tracked(url: str) -> str:
            if url.startswith(skip) or url.startswith(f"{self.public_url}/t/"):
                return url
            if url not in cache:
                cache[url] = self.link(url, meta)
            return cache[url]

        if self.links:
            text = URL.sub(lambda m: tracked(m.group(0)), text)
            if html is not None:
                html = HREF.sub(lambda m: f'href="{tracked(m.group(1))}"', html)
        if html is not None and self.opens:
            token = self._token("open", {"m": meta["message_id"], "p": meta["profile_id"], "k": meta["key"]})
            pixel = f'<img src="{self.public_url}/t/o/{token}" width="1" height="1" alt="">'
            html = html.replace("</body>", pixel + "</body>") if "</body>" in html else html + pixel
        return text, html

    def untracked(self, text: str) -> str:
        """``text`` with every tracked link replaced by its signed destination (previews, support)."""
        prefix = re.escape(f"{self.public_url}/t/c/")

        def destination(m: re.Match[str]) -> str:
            return str(self.credentials.verify("click", m.group(1)).get("u", m.group(0)))

        return re.sub(prefix + r"([A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+)", destination, text)

    # ------------------------------------------------------------------ hits
    def _machine(self, user_agent: str, method: str, key: str, now: datetime) -> str | None:
        if method == "HEAD":
            return "HEAD request (link scanner)"
        if machine_agent(user_agent or ""):
            return "known proxy or scanner user agent"
        if not user_agent:
            return "no user agent"
        entry = self.ledger.get(key)
        if entry is not None and entry.status == "sent" and (now - entry.updated_at).total_seconds() < SCANNER_SECONDS:
            return f"within {SCANNER_SECONDS} s of the send"
        return None

    def _record(self, name: str, data: dict[str, str], user_agent: str, method: str) -> None:
        """A hit, as the event ``store`` writes: queued for the workers where there is a queue."""
        now = self.clock.now()
        machine = self._machine(user_agent, method, data["k"], now)
        journey, step = [*data["k"].split("|"), "", "", ""][1:3]
        digest = hashlib.sha256(f"{name}|{data['m']}|{data.get('u', '')}|{now.isoformat()}|{user_agent}".encode())
        hit = {
            "message_id": f"trk-{digest.hexdigest()[:24]}",
            "profile_id": data["p"],
            "at": iso(now),
            "event": name,
            "payload": {
                "type": "track",
                "event": name,
                "properties": {
                    "message_id": data["m"],
                    "ledger_key": data["k"],
                    "journey": journey,
                    "step": step,
                    "url": data.get("u"),
                    "machine": machine is not None,
                    "machine_reason": machine,
                },
            },
        }
        if self.queue is None:
            self.store(hit)
        else:
            self.queue.send(INGEST_QUEUE, {"kind": "tracking", "event": hit})

    def store(self, hit: dict[str, Any]) -> bool:
        """A hit (from ``_record``, directly or through the queue) into the event log, once."""
        at = parse_iso(hit["at"])
        return self.events.append(StoredEvent(
            message_id=hit["message_id"], type="track", profile_id=hit["profile_id"], received_at=at, timestamp=at,
            event=hit["event"], source="tracking", processed=True, payload=hit["payload"]))

    def click(self, token: str, user_agent: str = "", method: str = "GET") -> str:
        """Record a click; returns the signed destination to redirect to."""
        data = self.credentials.verify("click", token)
        if not str(data.get("u", "")).startswith(("http://", "https://")):
            raise BadRequest("the link has no destination", field="token")
        self._record("Email Link Clicked", data, user_agent, method)
        return str(data["u"])

    def open(self, token: str, user_agent: str = "", method: str = "GET") -> bytes:
        data = self.credentials.verify("open", token)
        self._record("Email Opened", data, user_agent, method)
        return PIXEL
