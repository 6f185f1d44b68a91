"""The local stack on 127.0.0.1 with a small shop's measured traffic, and headless Chromium.

Traffic goes through the real interfaces: Segment calls over HTTP, e-mail over SMTP
(aiosmtpd), opens and clicks by GETting the tracking URLs found in the received e-mail,
orders as Segment ``Order Completed`` calls, on an injected clock. A 30% global holdout
gives the lift section its control group.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from chalicelib.clock import ManualClock
from chalicelib.config import load_settings
from chalicelib.ports import LedgerEntry
from chalicelib.runtime import Runtime
from chalicelib.server import LocalStack
from tests.conftest import SmtpCatcher, free_port

CHROMIUM = os.environ.get("OMNICAST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("OMNICAST_CHROMEDRIVER", "/usr/bin/chromedriver")
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
HOSTILE = '<img src=x onerror="document.title=\'pwned\'">&amp;"q"'
CUSTOMERS = 40
AB_JOURNEY = """
name: subject_test
description: An A/B test of two welcome e-mails, for the experiments section.
trigger: {event: identify, condition: {trait: email, op: exists}}
reentry: once
steps:
  - {id: ab, type: split, variants: {control: 50, tips_first: 50}, goto: {tips_first: send_tips}}
  - {id: send_welcome, type: send, channel: email, template: welcome, then: done}
  - {id: send_tips, type: send, channel: email, template: welcome_tips}
  - {id: done, type: exit}
"""


@dataclass
class Shop:
    url: str
    runtime: Runtime
    admin_key: str
    write_key: str
    clock: ManualClock

    def request(self, path: str, *, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None,
                ) -> tuple[int, dict[str, str], bytes]:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        opener = urllib.request.build_opener(NoRedirect)
        try:
            with opener.open(req, timeout=30) as resp:
                return resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers.items()), err.read()

    def admin(self, path: str) -> tuple[int, dict[str, str], bytes]:
        return self.request(path, headers={"Authorization": f"Bearer {self.admin_key}"})

    def segment(self, call: str, body: dict[str, Any]) -> None:
        import base64

        auth = base64.b64encode(f"{self.write_key}:".encode()).decode()
        status, _, raw = self.request(f"/v1/{call}", method="POST", body=body,
                                      headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"})
        assert status == 200, raw


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the tests read the redirect itself


def _tracking_urls(catcher: SmtpCatcher, public_url: str) -> list[tuple[str, str | None, list[str]]]:
    """(recipient, open pixel URL, click URLs) of every HTML e-mail received so far."""
    out = []
    for _, rcpts, msg in catcher.messages:
        html = msg.get_body(preferencelist=("html",))
        text = html.get_content() if html is not None else ""
        pixel = re.search(re.escape(public_url) + r"/t/o/[A-Za-z0-9_.\-]+", text)
        clicks = re.findall(re.escape(public_url) + r"/t/c/[A-Za-z0-9_.\-]+", text)
        out.append((rcpts[0], pixel.group(0) if pixel else None, clicks))
    return out


def seed_shop(shop: Shop, catcher: SmtpCatcher) -> dict[str, Any]:
    """Two days of a small shop: sign-ups (welcome e-mail), human opens and clicks, a
    scanner's HEAD request, orders by treated and holdout customers alike."""
    rt = shop.runtime
    status, _, raw = shop.request("/admin/journeys/subject_test", method="PUT", body=AB_JOURNEY.encode(),
                                  headers={"Authorization": f"Bearer {shop.admin_key}",
                                           "Content-Type": "application/yaml"})
    assert status == 200, raw
    for day in range(2):
        batch = [{"type": "identify", "userId": f"u{day}-{i}", "messageId": f"id-{day}-{i}",
                  "timestamp": shop.clock.now().isoformat(),
                  "traits": {"email": f"c{day}-{i}@shop.test", "first_name": f"C{i}"}}
                 for i in range(CUSTOMERS // 2)]
        shop.segment("batch", {"batch": batch})
        rt.drain()
        shop.clock.advance(timedelta(minutes=30))  # people read later than a link scanner does
        for rcpt, pixel, clicks in _tracking_urls(catcher, shop.url):
            if not rcpt.startswith(f"c{day}-"):
                continue
            i = int(rcpt.split("-")[1].split("@")[0])
            if pixel and i % 2 == 0:
                shop.request(pixel[len(shop.url):], headers={"User-Agent": BROWSER_UA})
            if clicks and i % 4 == 0:
                status, headers, _ = shop.request(clicks[0][len(shop.url):], headers={"User-Agent": BROWSER_UA})
                assert status == 302 and headers["Location"].startswith("http"), (status, headers)
            if clicks and i % 5 == 1:  # a security scanner: flagged, kept out of the rates
                shop.request(clicks[0][len(shop.url):], method="HEAD", headers={"User-Agent": BROWSER_UA})
        shop.clock.advance(timedelta(hours=2))
        for i in range(CUSTOMERS // 2):
            if i % 3 == 0:
                shop.segment("track", {"type": "track", "userId": f"u{day}-{i}", "event": "Order Completed",
                                       "messageId": f"order-{day}-{i}", "timestamp": shop.clock.now().isoformat(),
                                       "properties": {"order_id": f"o-{day}-{i}", "total": 40 + i,
                                                      "currency": "EUR"}})
        rt.drain()
        shop.clock.advance(timedelta(hours=21, minutes=30))
    # a journey name a user could have typed, straight into the ledger: the page must print it as text
    now = shop.clock.now()
    rt.stores.ledger.claim(LedgerEntry(key=f"u0-0|{HOSTILE}|step|-", profile_id="u0-0", journey=HOSTILE,
                                       step="step", channel="email", status="sent", reason="test", created_at=now,
                                       updated_at=now, detail={"purpose": "transactional", "cost": 0.001}))
    return {"emails": len(catcher.messages)}


@pytest.fixture(scope="module")
def shop() -> Iterator[Shop]:
    data = Path(tempfile.mkdtemp(prefix="omnicast-dash-"))
    catcher = SmtpCatcher()
    smtp = Controller(catcher, hostname="127.0.0.1", port=free_port())
    smtp.start()
    catcher.port = smtp.port
    port = free_port()
    clock = ManualClock(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    settings = load_settings({}, overrides={
        "data_dir": str(data), "public_url": f"http://127.0.0.1:{port}", "channels": {"email": "smtp"},
        "plugin_settings": {"smtp": {"host": "127.0.0.1", "port": smtp.port}},
        "send_policy": {"holdout_percent": 30},
        "shop": {"name": "Dashboard Test Shop", "url": "https://shop.test", "currency": "EUR"},
    })
    runtime = Runtime(settings, clock=clock)
    stack = LocalStack(runtime, port=port, workers=False).start()
    try:
        shop = Shop(stack.url, runtime, runtime.credentials.create_key("admin", "dashboard-test"),
                    runtime.credentials.create_key("write", "dashboard-test"), clock)
        seed_shop(shop, catcher)
        yield shop
    finally:
        stack.stop()
        smtp.stop()
        shutil.rmtree(data, ignore_errors=True)
