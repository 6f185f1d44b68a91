"""The demo behind ``make demo``: a real local stack, fed shop events over HTTP.

It starts a real SMTP server (aiosmtpd) that writes each message it receives to
``<data-dir>/mailbox/``, serves the Omnicast app on a free port with the SMTP channel
pointed at it, sends a stream of Segment API calls the way a storefront would (Basic
auth with a write key, batches, a duplicate delivery), then runs three virtual days on
an injected clock so that waits and quiet-hour deferrals play out, and prints what went
out and why.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import socket
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from chalicelib.clock import ManualClock, iso
from chalicelib.config import load_settings
from chalicelib.runtime import Runtime
from chalicelib.server import LocalStack

FIRST = ["Ann", "Ben", "Chloé", "Dev", "Emma", "Femi", "Gus", "Hana", "Ivan", "Jo", "Kai", "Lena", "Mo", "Nora"]
ZONES = ["Europe/London", "Europe/Paris", "America/New_York", "America/Los_Angeles", "Asia/Tokyo", "Australia/Sydney"]
PRODUCTS = [("sku-tee", "Organic tee", 24.0), ("sku-mug", "Stoneware mug", 18.5), ("sku-bag", "Canvas tote", 32.0)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mailbox:
    """An aiosmtpd handler that keeps every message as an .eml file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        (self.folder / f"{self.count:04d}.eml").write_bytes(envelope.content)
        return "250 Message accepted for delivery"


def post(url: str, key: str, path: str, body: dict[str, Any]) -> int:
    auth = base64.b64encode(f"{key}:".encode()).decode()
    req = urllib.request.Request(  # noqa: S310 - loopback URL we built
        url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Basic {auth}"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
        return int(resp.status)


def shop_traffic(customers: int, seed: int, start: datetime) -> list[tuple[str, dict[str, Any]]]:
    """Segment API calls as a storefront sends them: browse anonymously, sign up, buy."""
    rng = random.Random(seed)
    calls: list[tuple[str, dict[str, Any]]] = []
    for i in range(customers):
        name = FIRST[i % len(FIRST)]
        anon = f"anon-{seed}-{i}"
        user = f"user-{seed}-{i}"
        tz = rng.choice(ZONES)
        when = start + timedelta(minutes=rng.randint(0, 600))
        ctx = {"timezone": tz, "library": {"name": "omnicast-demo", "version": "1"}}
        sku, title, price = rng.choice(PRODUCTS)
        calls.append(
            (
                "track",
                {
                    "anonymousId": anon,
                    "event": "Product Viewed",
                    "messageId": f"pv-{i}",
                    "timestamp": iso(when),
                    "context": ctx,
                    "properties": {"product_id": sku, "name": title, "price": price},
                },
            )
        )
        traits: dict[str, Any] = {"first_name": name, "timezone": tz}
        if rng.random() < 0.9:  # a few sign up with a phone only
            traits["email"] = f"{name.lower()}.{i}@example.com"
        calls.append(
            (
                "identify",
                {
                    "userId": user,
                    "anonymousId": anon,
                    "messageId": f"id-{i}",
                    "timestamp": iso(when + timedelta(minutes=2)),
                    "traits": traits,
                    "context": ctx,
                },
            )
        )
        if rng.random() < 0.4:
            calls.append(
                (
                    "track",
                    {
                        "userId": user,
                        "event": "Order Completed",
                        "messageId": f"oc-{i}",
                        "timestamp": iso(when + timedelta(minutes=9)),
                        "context": ctx,
                        "properties": {
                            "order_id": f"o-{i}",
                            "total": price,
                            "currency": "EUR",
                            "products": [{"product_id": sku, "price": price, "quantity": 1}],
                        },
                    },
                )
            )
    calls.append(("identify", dict(calls[1][1])))  # a storefront retry: same messageId, one event
    return calls


def _wait_idle(stack: LocalStack, runtime: Runtime, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if stack.idle() and not runtime.stores.journeys.due(runtime.clock.now(), limit=1):
            time.sleep(0.1)  # the in-flight batch finishes its last send
            if stack.idle():
                return
        time.sleep(0.05)


def run_demo(data_dir: Path, customers: int = 40, seed: int = 7) -> int:
    from aiosmtpd.controller import Controller

    if data_dir.exists():
        shutil.rmtree(data_dir)
    mailbox = Mailbox(data_dir / "mailbox")
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    port = free_port()
    settings = load_settings(
        overrides={
            "data_dir": str(data_dir),
            "public_url": f"http://127.0.0.1:{port}",
            "channels": {"email": "smtp"},
            "plugin_settings": {"smtp": {"host": "127.0.0.1", "port": smtp.port}},
        }
    )
    clock = ManualClock(datetime(2026, 11, 2, 6, 0, tzinfo=UTC))
    runtime = Runtime(settings, clock=clock)
    stack = LocalStack(runtime, port=port).start()
    try:
        write_key = runtime.credentials.create_key("write", "demo-storefront")
        admin_key = runtime.credentials.create_key("admin", "demo-admin")
        calls = shop_traffic(customers, seed, clock.now())
        print(f"Omnicast demo: local stack on {stack.url}, SMTP server on 127.0.0.1:{smtp.port}")
        print(f"Sending {len(calls)} Segment API calls from a storefront ({customers} customers)...")
        for i in range(0, len(calls), 10):  # mix single calls and batches, as real clients do
            chunk = calls[i : i + 10]
            if i % 20 == 0:
                post(stack.url, write_key, "/v1/batch", {"batch": [{"type": k, **b} for k, b in chunk]})
            else:
                for kind, body in chunk:
                    post(stack.url, write_key, f"/v1/{kind}", body)
        _wait_idle(stack, runtime)
        print("Running 3 virtual days (waits, quiet hours in each customer's time zone)...")
        for _ in range(72):
            clock.advance(timedelta(hours=1))
            runtime.tick()
            _wait_idle(stack, runtime)
        report(runtime, mailbox, data_dir, stack.url, admin_key)
    finally:
        stack.stop()
        smtp.stop()
    return 0


def report(runtime: Runtime, mailbox: Mailbox, data_dir: Path, url: str, admin_key: str) -> None:
    entries = runtime.stores.ledger.all(100_000)
    by_status = Counter(e.status for e in entries)
    by_step = Counter((e.journey, e.step, e.channel, e.status) for e in entries)
    deferred = [e for e in entries if e.detail.get("deferred_until")]
    skipped = Counter(e.reason for e in entries if e.status == "skipped")
    print("\n=== What happened ===")
    print(f"events stored:   {runtime.stores.events.count()} (one duplicate delivery was dropped)")
    print(f"profiles:        {runtime.stores.profiles.count()}")
    print(f"ledger entries:  {len(entries)}  " + ", ".join(f"{k}={v}" for k, v in sorted(by_status.items())))
    print("\nmessages by journey / step / channel / outcome:")
    for (journey, step, channel, status), n in sorted(by_step.items()):
        print(f"  {journey:<10} {step:<15} {channel:<7} {status:<9} {n}")
    print(f"\ndeferred by quiet hours, then sent in the morning: {len(deferred)}")
    for e in deferred[:3]:
        print(f"  e.g. {e.profile_id}: {e.detail.get('deferred_until')}")
    for reason, n in skipped.items():
        print(f"skipped ({n}): {reason}")
    print(f"\nSMTP server received {mailbox.count} e-mails, saved in {mailbox.folder.resolve()}/")
    first = sorted(mailbox.folder.glob("*.eml"))[:1]
    if first:
        msg = message_from_bytes(first[0].read_bytes(), policy=policy.default)
        print(f"  first: Subject: {msg['Subject']}")
        print(f"         List-Unsubscribe-Post: {msg['List-Unsubscribe-Post']}")
    print(f"\nData folder: {data_dir.resolve()} (SQLite: omnicast.db)")
    print("To look around while it runs, `omnicast serve --data-dir " + str(data_dir) + "` and e.g.")
    print(f"  curl -H 'Authorization: Bearer <admin key>' {url}/admin/ledger?limit=20")
    print(f"(this run's admin key, valid in that data folder: {admin_key})")
