"""A simulated shop: months of trade in minutes, over the real interfaces.

The shop has a catalog (categories, prices, stock that runs out and comes back, new
arrivals) and customers with hidden traits (how often they visit, how likely they buy,
their time zone, whether they consent to marketing, when they lapse). Each simulated hour
they browse (Segment API calls from the storefront), start checkouts and buy (signed
Shopify webhooks), over HTTP to the local stack. The simulator reads what the channels
delivered (the SMTP server's mailbox) and customers react to it by their hidden traits:

    the planted effect: a customer who abandoned a checkout comes back to buy it within
    48 hours with probability ``base_return``; one who received the abandoned-cart
    reminder in time does so with ``base_return + cart_email_effect``.

The report then measures that effect from Omnicast's own data (the event log and the send
ledger, with the global holdout as control group) and prints it beside the planted one.
Reproducible from a seed; the virtual clock makes 90 days take minutes.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import logging
import math
import queue
import random
import re
import secrets
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from chalicelib.clock import ManualClock, iso
from chalicelib.plugin_api import hmac_sha256

log = logging.getLogger("omnicast.simulation")

ZONES = ["Europe/London", "Europe/Paris", "Europe/Berlin", "America/New_York", "America/Chicago",
         "America/Los_Angeles", "Asia/Tokyo", "Australia/Sydney"]
CATEGORIES = ["Tops", "Shoes", "Bags", "Home", "Beauty"]
FIRST = ["Ann", "Ben", "Chloe", "Dev", "Emma", "Femi", "Gus", "Hana", "Ivan", "Jo", "Kai", "Lena", "Mo", "Nora",
         "Omar", "Pia", "Quinn", "Rosa", "Sam", "Tara"]
CART_SUBJECT = "You left something in your cart"
TRACKED_LINK = re.compile(r"https?://[^\s/]+/t/c/[A-Za-z0-9_\-.]+")
OPEN_PIXEL = re.compile(r'<img src="(https?://[^"]+/t/o/[^"]+)"')
# The trade's other processes (the API, the sending process, the shop and, through the
# shop, its mail server) run this much nicer than the workers: the workers are the
# pipeline's slowest stage (some 45 of a 10,000 x 20 run's 60 s of trade), and five
# processes on two cores took turns with them. At equal priority the scheduler gave their
# core to the API or the sender while the workers were ready to run. Yielding to them,
# the same run's trade took 58.3 and 60.8 s against 60.7 and 63.6 s (pairs back to back).
HELPER_NICENESS = 10
BROWSER = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"
IMAGE_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"


@dataclass
class Product:
    id: int
    title: str
    category: str
    price: float
    stock: int


@dataclass
class Customer:
    n: int
    user_id: str
    shopify_id: int
    email: str
    first_name: str
    timezone: str
    visits_per_day: float
    buy_rate: float  # chance a visit ends in a checkout
    finish_rate: float  # chance a started checkout is paid at once
    consent: bool
    lapses_on_day: int
    opens_mail: float = 0.4  # chance a human reads a message (and its images load)
    image_proxy: bool = False  # their mailbox provider prefetches every image (machine opens)
    signed_up: bool = False
    open_cart: dict[str, Any] | None = None


@dataclass
class Truth:
    """What the simulator knows and the product must measure."""

    carts_abandoned: int = 0
    reminders_seen: int = 0
    returned_with_reminder: int = 0
    returned_without: int = 0
    orders: int = 0
    revenue: float = 0.0
    human_opens: int = 0
    proxy_opens: int = 0
    clicks: int = 0
    broadcasts: int = 0  # customers entered into the Black Friday greeting (no planted effect)
    seasonal_days: dict[str, int] = field(default_factory=dict)


@dataclass
class SimConfig:
    customers: int = 1000
    days: int = 90
    seed: int = 7
    base_return: float = 0.10
    cart_email_effect: float = 0.20
    holdout_percent: float = 20.0
    monthly_fixed_cost: float = 50.0  # the shop's platform and sending costs per 30 days, for ROMI and CAC
    train_models: bool = True  # at the end, train the models on the shop's history (needs 60+ days)
    start: datetime = field(default_factory=lambda: datetime(2026, 9, 1, 0, 0, tzinfo=UTC))


_ALTERNATIVE = re.compile(rb'multipart/alternative; boundary="([^"]+)"')
_PART_TYPE = re.compile(rb'(?im)^content-type: text/(plain|html); charset="(us-ascii|utf-8)"\r?$')
_PART_ENCODING = re.compile(rb"(?im)^content-transfer-encoding: (7bit|quoted-printable)\r?$")


def read_mail(content: bytes) -> tuple[str, str, str | None, str | None]:
    """What a customer's mail reader finds in a message: (subject, Message-ID, the tracked
    link in its text part, the open pixel in its HTML part).

    The usual mail (what ``email_bytes`` writes: ASCII headers on one line each, a text and
    an HTML part, in 7 bits or UTF-8 quoted-printable) is read straight from its bytes, several
    times quicker; anything else (encoded words, folded headers, text only, base64) goes
    through the ``email`` package's parser, which gives the same answers for the usual mail
    (tested)."""
    return _read_usual(content) or _read_parsed(content)


def _read_usual(content: bytes) -> tuple[str, str, str | None, str | None] | None:
    head, sep, body = content.partition(b"\r\n\r\n")
    if not sep or not head.isascii() or b"\r\n " in head or b"\r\n\t" in head or b"=?" in head:
        return None
    headers: dict[bytes, bytes] = {}
    for line in head.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if not colon:
            return None
        headers.setdefault(name.strip().lower(), value.lstrip(b" \t"))
    found = _ALTERNATIVE.fullmatch(headers.get(b"content-type", b""))
    if not found:
        return None
    parts = body.split(b"--" + found.group(1))
    if len(parts) != 4 or not parts[3].startswith(b"--"):
        return None
    texts: dict[bytes, str] = {}
    for part in parts[1:3]:
        part_head, sep, part_body = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        kind = _PART_TYPE.search(part_head)
        encoding = _PART_ENCODING.search(part_head)
        if not sep or not kind or not encoding:
            return None
        if encoding.group(1).lower() == b"quoted-printable":
            part_body = binascii.a2b_qp(part_body.removesuffix(b"\r\n"))
        texts[kind.group(1).lower()] = part_body.decode(kind.group(2).decode(), "replace")
    link = TRACKED_LINK.search(texts.get(b"plain", ""))
    pixel = OPEN_PIXEL.search(texts.get(b"html", ""))
    return (headers.get(b"subject", b"").decode("ascii"), headers.get(b"message-id", b"").decode("ascii"),
            link.group(0) if link else None, pixel.group(1) if pixel else None)


def _read_parsed(content: bytes) -> tuple[str, str, str | None, str | None]:
    from email import message_from_bytes
    from email.header import decode_header, make_header

    # compat32 parsing: the default policy's header objects cost more than the rest of the mail
    msg = message_from_bytes(content)
    link = pixel = None
    for part in msg.walk():
        kind = part.get_content_type()
        if kind in ("text/plain", "text/html"):
            raw = part.get_payload(decode=True)
            body = raw.decode(part.get_content_charset() or "utf-8", "replace") if isinstance(raw, bytes) else ""
            if kind == "text/plain":
                found = TRACKED_LINK.search(body)
                link = found.group(0) if found else None
            else:
                found_pixel = OPEN_PIXEL.search(body)
                pixel = found_pixel.group(1) if found_pixel else None
    subject = str(make_header(decode_header(msg["Subject"] or "")))
    return subject, str(msg["Message-ID"] or ""), link, pixel


class Mailbox:
    """The SMTP server's handler: keeps (recipient, subject) of each message and the .eml file.

    It reads each message (``read_mail``) before it answers 250, so what the sender was told
    is delivered is in the mailbox; ``since()`` answers from there."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.lock = threading.Lock()
        self.received: list[tuple[str, str]] = []
        self.links: list[tuple[str | None, str | None]] = []  # (tracked link, open pixel) per message
        self.ids: list[str] = []  # Message-ID per message
        self._kept = threading.Condition(self.lock)
        if folder:
            folder.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        try:
            self.keep(list(envelope.rcpt_tos), envelope.content)
        except Exception:
            log.exception("the simulated mailbox could not read a message")
            return "451 Requested action aborted: error in processing"
        return "250 OK"

    def keep(self, rcpts: list[str], content: bytes) -> None:
        subject, message_id, link, pixel = read_mail(content)
        with self.lock:
            for rcpt in rcpts:
                self.received.append((rcpt, subject))
                self.links.append((link, pixel))
                self.ids.append(message_id)
            if self.folder:
                (self.folder / f"{len(self.received):06d}.eml").write_bytes(content)
            self._kept.notify_all()

    def since(self, start: int, upto: int | None = None) -> list[tuple[str, str, str | None, str | None]]:
        """The messages from number ``start`` on (to ``upto``, once that many have come; else
        all received so far), in Message-ID order: the order they arrived in depends on which
        of the sender's connections was quicker, and the customers' reactions (random draws)
        must not."""
        with self.lock:
            if upto is not None and not self._kept.wait_for(lambda: len(self.received) >= upto, timeout=60):
                raise RuntimeError(f"the mailbox holds {len(self.received)} messages; {upto} were delivered")
            end = len(self.received) if upto is None else upto
            new = sorted(zip(self.ids[start:end], self.received[start:end], self.links[start:end], strict=True))
            return [(r, s, *links) for _, (r, s), links in new]


class Storefront:
    """Talks to Omnicast the way a shop does: Segment batches and signed Shopify webhooks.

    ``pipelined``: the calls go out in order from a sender thread, so the shop goes on
    trading while Omnicast answers; ``wait()`` returns when every call made so far was
    answered (and raises the first failure)."""

    def __init__(self, url: str, write_key: str, shopify_secret: str, *, pipelined: bool = False) -> None:
        self.url = url
        self.shopify_secret = shopify_secret
        self.auth = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
        self.segment_buffer: list[dict[str, Any]] = []
        self.webhooks = 0
        self.calls = 0
        self.conn: http.client.HTTPConnection | None = None
        self._outbox: queue.Queue[tuple[str, str, bytes | None, dict[str, str]]] | None = None
        self._failure: Exception | None = None
        if pipelined:
            self._outbox = queue.Queue(maxsize=1000)
            threading.Thread(target=self._send_loop, name="storefront-sender", daemon=True).start()

    def _send_loop(self) -> None:
        assert self._outbox is not None
        while True:
            method, path, body, headers = self._outbox.get()
            try:
                if self._failure is None:  # after a failure the rest is dropped; wait() reports it
                    self._send(method, path, body, headers)
            except Exception as exc:  # noqa: BLE001 - handed to the shop's thread by wait()
                self._failure = exc
            finally:
                self._outbox.task_done()

    def wait(self) -> None:
        if self._outbox is not None:
            self._outbox.join()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise RuntimeError(f"the storefront's call failed: {failure}") from failure

    def _request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> int:
        """One request on a kept-alive HTTP/1.1 connection (reopened once if the server closed it)."""
        for attempt in (1, 2):
            if self.conn is None:
                parts = urllib.parse.urlsplit(self.url)
                self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=60)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                resp.read()
                if resp.will_close:
                    self.conn.close()
                    self.conn = None
                return resp.status
            except (http.client.HTTPException, ConnectionError):
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _send(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> None:
        status = self._request(method, path, body, headers)
        if method == "POST":
            if status >= 300:
                raise RuntimeError(f"the local stack answered {status} to POST {path}")
            self.calls += 1

    def _call(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> None:
        if self._outbox is not None:
            self._outbox.put((method, path, body, headers))
        else:
            self._send(method, path, body, headers)

    def _post(self, path: str, body: bytes, headers: dict[str, str]) -> None:
        self._call("POST", path, body, headers)

    def hit(self, url: str, agent: str) -> None:
        """A mail client or a browser fetching a tracked URL (the redirect is not followed)."""
        self._call("GET", urllib.parse.urlsplit(url).path,
                   None, {"User-Agent": agent, "Accept": "image/gif,*/*;q=0.8"})

    def track(self, call: dict[str, Any]) -> None:
        self.segment_buffer.append(call)
        if len(self.segment_buffer) >= 100:
            self.flush()

    def flush(self) -> None:
        if self.segment_buffer:
            body = json.dumps({"batch": self.segment_buffer}).encode()
            self._post("/v1/batch", body, {"Content-Type": "application/json", "Authorization": self.auth})
            self.segment_buffer = []

    def shopify(self, topic: str, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.webhooks += 1
        self._post("/webhooks/shopify", body, {
            "Content-Type": "application/json", "X-Shopify-Topic": topic,
            "X-Shopify-Webhook-Id": f"sim-{self.webhooks}", "X-Shopify-Shop-Domain": "sim.myshopify.com",
            "X-Shopify-Hmac-Sha256": base64.b64encode(hmac_sha256(self.shopify_secret, body)).decode(),
        })


def black_friday(year: int) -> date:
    """The day after the fourth Thursday of November."""
    first = date(year, 11, 1)
    thursday = first + timedelta(days=(3 - first.weekday()) % 7 + 21)
    return thursday + timedelta(days=1)


WEEKDAY = (0.9, 0.9, 0.95, 1.0, 1.05, 1.2, 1.15)  # Monday .. Sunday


def seasonality(day: date) -> tuple[float, str | None]:
    """How much more (or less) people shop on ``day`` than on an ordinary day, and why."""
    bf = black_friday(day.year)
    factor = WEEKDAY[day.weekday()]
    if day == bf:
        return factor * 3.0, "Black Friday"
    if day == bf + timedelta(days=3):
        return factor * 2.2, "Cyber Monday"
    if bf - timedelta(days=6) <= day < bf:
        return factor * 0.8, "the lull before Black Friday"
    if date(day.year, 12, 1) <= day <= date(day.year, 12, 20):
        return factor * 1.4, "the Christmas run-up"
    if date(day.year, 12, 24) <= day <= date(day.year, 12, 26):
        return factor * 0.4, "Christmas"
    return factor, None


class ShopSimulator:
    def __init__(self, config: SimConfig, storefront: Storefront, mailbox: Mailbox, clock: ManualClock) -> None:
        self.c = config
        self.rng = random.Random(config.seed)
        self.front = storefront
        self.mailbox = mailbox
        self.clock = clock
        self.truth = Truth()
        self.read = 0
        self.products = [
            Product(1000 + i, f"{self.rng.choice(['Classic', 'Everyday', 'Organic', 'Studio'])} "
                    f"{CATEGORIES[i % 5][:-1].lower()} {i}", CATEGORIES[i % 5],
                    round(self.rng.uniform(12, 140), 2), self.rng.randint(0, 40))
            for i in range(40)
        ]
        from zoneinfo import ZoneInfo

        self.zones = {z: ZoneInfo(z) for z in ZONES}
        self.customers = [self._customer(i) for i in range(config.customers)]
        # engagement (opens, clicks) draws from its own stream, so adding it changed no purchase
        self.engage = random.Random(config.seed * 7919 + 1)
        for c in self.customers:
            c.opens_mail, c.image_proxy = self.engage.uniform(0.15, 0.7), self.engage.random() < 0.3
        self.pending_hits: list[tuple[datetime, str, str, str]] = []  # due, url, user agent, kind
        self.by_email = {c.email: c for c in self.customers}
        self.pending_returns: list[tuple[datetime, Customer, dict[str, Any]]] = []
        self.carts_open: dict[int, Customer] = {}  # whose cart may be open (the hourly expiry looks at these)

    def _customer(self, i: int) -> Customer:
        r = self.rng
        return Customer(
            n=i, user_id=f"sim-{self.c.seed}-{i}", shopify_id=7_000_000_000_000_000_000 + i,
            email=f"{FIRST[i % len(FIRST)].lower()}.{i}@example.com", first_name=FIRST[i % len(FIRST)],
            timezone=r.choice(ZONES), visits_per_day=r.choice([0.05, 0.1, 0.2, 0.4]), buy_rate=r.uniform(0.1, 0.4),
            finish_rate=r.uniform(0.3, 0.6), consent=r.random() < 0.85,
            lapses_on_day=r.randint(20, 400),
        )

    # ------------------------------------------------------------------ shop behaviour
    def _products_payload(self, items: list[tuple[Product, int]]) -> list[dict[str, Any]]:
        return [{"product_id": p.id, "variant_id": p.id * 10, "title": p.title, "price": f"{p.price:.2f}",
                 "quantity": q, "sku": f"SKU-{p.id}"} for p, q in items]

    def _customer_payload(self, c: Customer) -> dict[str, Any]:
        return {"id": c.shopify_id, "admin_graphql_api_id": f"gid://shopify/Customer/{c.shopify_id}",
                "email": c.email, "first_name": c.first_name}

    def _checkout(self, c: Customer, items: list[tuple[Product, int]]) -> dict[str, Any]:
        token = f"chk-{c.n}-{int(self.clock.now().timestamp())}"
        total = round(sum(p.price * q for p, q in items), 2)
        return {"token": token, "cart_token": token, "email": c.email, "currency": "EUR",
                "created_at": iso(self.clock.now()), "updated_at": iso(self.clock.now()),
                "total_price": f"{total:.2f}", "subtotal_price": f"{total:.2f}",
                "abandoned_checkout_url": f"https://sim.shop/checkouts/{token}/recover",
                "line_items": self._products_payload(items), "customer": self._customer_payload(c)}

    def _order(self, c: Customer, checkout: dict[str, Any]) -> None:
        self.truth.orders += 1
        total = float(checkout["total_price"])
        self.truth.revenue += total
        order_id = 9_000_000_000_000_000_000 + self.truth.orders
        self.front.shopify("orders/create", {
            "id": order_id, "admin_graphql_api_id": f"gid://shopify/Order/{order_id}", "email": c.email,
            "checkout_token": checkout["token"], "currency": "EUR", "total_price": checkout["total_price"],
            "current_total_price": checkout["total_price"], "subtotal_price": checkout["subtotal_price"],
            "processed_at": iso(self.clock.now()), "line_items": checkout["line_items"],
            "customer": self._customer_payload(c), "financial_status": "paid",
        })
        for item in checkout["line_items"]:
            product = next(p for p in self.products if p.id == item["product_id"])
            product.stock = max(0, product.stock - item["quantity"])

    def _visit(self, c: Customer, day: int) -> None:
        now = self.clock.now()
        if not c.signed_up:
            c.signed_up = True
            self.front.track({"type": "identify", "userId": c.user_id, "messageId": f"{c.user_id}-signup",
                              "timestamp": iso(now), "context": {"timezone": c.timezone},
                              "traits": {"email": c.email, "first_name": c.first_name, "timezone": c.timezone,
                                         **({} if c.consent else {"consent": {"email": "unsubscribed"}})}})
        seen = self.rng.sample(self.products, k=self.rng.randint(1, 3))
        for p in seen:
            self.front.track({"type": "track", "userId": c.user_id, "event": "Product Viewed",
                              "messageId": f"{c.user_id}-pv-{int(now.timestamp())}-{p.id}", "timestamp": iso(now),
                              "properties": {"product_id": str(p.id), "name": p.title, "price": p.price,
                                             "category": p.category}})
        in_stock = [p for p in seen if p.stock > 0]
        if c.open_cart is None and in_stock and self.rng.random() < c.buy_rate:
            items = [(p, 1) for p in in_stock[:2]]
            checkout = self._checkout(c, items)
            self.front.flush()  # the storefront's calls reach us before the checkout webhook
            self.front.shopify("checkouts/create", checkout)
            if self.rng.random() < c.finish_rate:
                self._order(c, checkout)
            else:
                # abandoned: the customer's own hidden draw decides whether a reminder would bring them back
                self.truth.carts_abandoned += 1
                c.open_cart = {"checkout": checkout, "at": now, "u": self.rng.random(), "reminded": False}
                self.carts_open[c.n] = c
                if c.open_cart["u"] < self.c.base_return:
                    later = now + timedelta(hours=self.rng.uniform(2, 47))
                    self.pending_returns.append((later, c, c.open_cart))

    def _react_to_mail(self, delivered: int | None) -> None:
        """The mail delivered so far (``delivered`` messages; None: all that came) is read."""
        now = self.clock.now()
        for rcpt, subject, link, pixel in self.mailbox.since(self.read, delivered):
            self.read += 1
            c = self.by_email.get(rcpt)
            if c is None:
                continue
            if pixel and c.image_proxy:  # the provider fetches images as the mail arrives
                self.pending_hits.append((now + timedelta(minutes=1), pixel, IMAGE_PROXY, "proxy_open"))
            if pixel and self.engage.random() < c.opens_mail:
                read_at = now + timedelta(minutes=self.engage.uniform(5, 600))
                self.pending_hits.append((read_at, pixel, BROWSER, "open"))
                if link and subject != CART_SUBJECT and self.engage.random() < 0.12:
                    self.pending_hits.append((read_at + timedelta(minutes=1), link, BROWSER, "click"))
            if subject != CART_SUBJECT or c.open_cart is None:
                continue
            cart = c.open_cart
            cart["link"] = link
            if self.clock.now() - cart["at"] > timedelta(hours=48) or cart["reminded"]:
                continue
            cart["reminded"] = True
            self.truth.reminders_seen += 1
            if self.c.base_return <= cart["u"] < self.c.base_return + self.c.cart_email_effect:
                self.pending_returns.append((self.clock.now() + timedelta(hours=self.rng.uniform(0.5, 6)), c, cart))

    def _hits_due(self) -> None:
        now = self.clock.now()
        due = [h for h in self.pending_hits if h[0] <= now]
        self.pending_hits = [h for h in self.pending_hits if h[0] > now]
        for _, url, agent, kind in due:
            self.front.hit(url, agent)
            if kind == "proxy_open":
                self.truth.proxy_opens += 1
            elif kind == "open":
                self.truth.human_opens += 1
            else:
                self.truth.clicks += 1

    def _returns_due(self) -> None:
        now = self.clock.now()
        due = [r for r in self.pending_returns if r[0] <= now]
        self.pending_returns = [r for r in self.pending_returns if r[0] > now]
        for _, c, cart in due:
            if c.open_cart is not cart:
                continue
            c.open_cart = None
            if cart["reminded"] and cart.get("link"):  # back through the reminder's link
                self.front.hit(cart["link"], BROWSER)
                self.truth.clicks += 1
            self._order(c, cart["checkout"])
            if cart["reminded"] and cart["u"] >= self.c.base_return:
                self.truth.returned_with_reminder += 1
            else:
                self.truth.returned_without += 1

    def _expire_carts(self) -> None:
        now = self.clock.now()
        for c in list(self.carts_open.values()):
            if c.open_cart is None:
                del self.carts_open[c.n]  # bought
            elif now - c.open_cart["at"] > timedelta(hours=48):
                c.open_cart = None
                del self.carts_open[c.n]

    def _catalog_moves(self, day: int) -> None:
        for p in self.products:
            if p.stock == 0 and self.rng.random() < 0.15:
                p.stock = self.rng.randint(5, 40)  # restocked
                self._product_update(p)
        if day % 15 == 7:
            p = Product(2000 + day, f"New arrival {day}", self.rng.choice(CATEGORIES),
                        round(self.rng.uniform(20, 90), 2), 25)
            self.products.append(p)
            self._product_update(p, topic="products/create")

    def _product_update(self, p: Product, topic: str = "products/update") -> None:
        self.front.shopify(topic, {
            "id": p.id, "admin_graphql_api_id": f"gid://shopify/Product/{p.id}", "title": p.title,
            "product_type": p.category, "status": "active", "handle": f"p-{p.id}",
            "variants": [{"id": p.id * 10, "admin_graphql_api_id": f"gid://shopify/ProductVariant/{p.id * 10}",
                          "price": f"{p.price:.2f}", "inventory_quantity": p.stock, "title": "Default Title"}],
        })

    # ------------------------------------------------------------------ the clock
    def run(self, stack: Any, progress: Any = None, broadcast: Any = None) -> None:
        """Walk the simulation hour by hour. ``stack.step(next)`` hands the hour's trade to
        Omnicast's workers (who work on it while the shop trades the next hour, the clock
        then moving to ``next``); ``stack.settle()`` waits until they are done with it and
        answers how many messages have been delivered (the last hour's may still be on
        their way: they are read an hour later). What the shop does between the two
        (reading its mail, coming back to buy, the marketer's broadcast) happens while the
        workers are idle; the opens and clicks due in an hour go with its visits, queued
        past the position the workers stop at; so what they see never depends on which
        process was quicker. ``broadcast(journey)`` is the shop starting a seasonal
        campaign (Black Friday eve)."""
        for p in self.products:
            self._product_update(p, topic="products/create")
        self.front.flush()
        stack.step(self.clock.now())
        for day in range(self.c.days):
            self._catalog_moves(day)
            today = (self.c.start + timedelta(days=day)).date()
            season, why = seasonality(today)
            if why:
                self.truth.seasonal_days[why] = self.truth.seasonal_days.get(why, 0) + 1
            active = [(c, c.timezone, c.visits_per_day) for c in self.customers if day < c.lapses_on_day]
            rates = {c.visits_per_day for c in self.customers}
            for hour in range(24):
                # the opens and clicks that come due this hour (mail read in the hours before),
                # and the hour's browsing and buying: calls the API takes while the workers take
                # the hour before
                self._hits_due()
                now = self.clock.now()
                chance = {}  # a visit's chance this hour, by time zone and visit rate: daytime, weekday, holidays
                for name, zone in self.zones.items():
                    weight = (1.6 if 9 <= now.astimezone(zone).hour < 22 else 0.2) * season
                    chance[name] = {v: v * weight / 24 * 1.5 for v in rates}
                draw = self.rng.random
                for c, zone_name, rate in active:
                    if draw() < chance[zone_name][rate]:
                        self._visit(c, day)
                self.front.flush()
                delivered = stack.settle()  # the workers are done with the hour before
                if hour == 0 and broadcast and today == black_friday(today.year) - timedelta(days=1):
                    self.truth.broadcasts += broadcast("holiday_greetings")
                self._react_to_mail(delivered)
                self._returns_due()
                self._expire_carts()
                stack.step(self.clock.now() + timedelta(hours=1))
                self.clock.advance(timedelta(hours=1))
            if progress:
                progress(day + 1)
        self.front.flush()
        stack.settle()
        stack.step(self.clock.now(), last=True)  # everything delivered before the shop closes
        stack.settle()


class Unplugged:
    """No stack behind the shop (the benchmark's baseline): steps cost nothing."""

    def step(self, next_time: datetime, last: bool = False) -> None:
        pass

    def settle(self) -> int | None:
        return None


# --------------------------------------------------------------------------- measurement
def wilson_difference(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float, float]:
    """Difference of two proportions with a 95% Newcombe (Wilson) interval: small samples welcome."""
    def wilson(x: int, n: int) -> tuple[float, float, float]:
        if n == 0:
            return 0.0, 0.0, 1.0
        z, p = 1.96, x / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return p, centre - half, centre + half

    p1, l1, u1 = wilson(x1, n1)
    p2, l2, u2 = wilson(x2, n2)
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def measure_cart_lift(runtime: Any) -> dict[str, Any]:
    """From Omnicast's own records: carts that got the reminder vs carts in the holdout."""
    db = runtime.stores.events.db
    groups: dict[str, set[str]] = {"treated": set(), "holdout": set()}
    for key, status, reason in db.query(
        "SELECT key, status, reason FROM ledger WHERE journey = 'abandoned_cart' AND step = 'cart_reminder'"
    ):
        checkout = key.split("|")[3]
        if status == "sent":
            groups["treated"].add(checkout)
        elif "holdout" in reason:
            groups["holdout"].add(checkout)
    ordered = {json.loads(p).get("properties", {}).get("checkout_id") for (p,) in db.query(
        "SELECT payload FROM events WHERE event = 'Order Completed' AND source = 'shopify'")}
    # a cart reaches the reminder only if unpaid after an hour; count orders after that as conversions
    out = {}
    for name, carts in groups.items():
        out[name] = (len(carts & ordered), len(carts))
    (x1, n1), (x2, n2) = out["treated"], out["holdout"]
    d, lo, hi = wilson_difference(x1, n1, x2, n2)
    return {"treated": out["treated"], "holdout": out["holdout"], "lift": d, "low": lo, "high": hi}


def report(runtime: Any, truth: Truth, config: SimConfig, emails_received: int, seconds: float,
           data_dir: Path | None) -> dict[str, Any]:
    db = runtime.stores.events.db
    by_source = dict(db.query("SELECT source, COUNT(*) FROM events GROUP BY source ORDER BY 2 DESC"))
    ledger = db.query("SELECT journey, channel, status, COUNT(*) FROM ledger GROUP BY 1, 2, 3 ORDER BY 1, 2, 3")
    reasons: Counter[str] = Counter()
    for reason, n in db.query("SELECT reason, COUNT(*) FROM ledger WHERE status IN ('skipped', 'deferred') "
                              "GROUP BY reason"):
        reasons[reason.split(":")[0] + ": " + reason.split(":", 2)[1].strip().split(" (")[0]
                if ":" in reason else reason] += n
    deferred_then_sent = db.query("SELECT COUNT(*) FROM ledger WHERE status = 'sent' AND detail LIKE "
                                  "'%deferred_until%'")[0][0]
    lift = measure_cart_lift(runtime)
    segments: Counter[str] = Counter()
    for (traits,) in db.query("SELECT traits FROM profiles"):
        for s in json.loads(traits).get("_segments", []):
            segments[s] += 1
    sent = sum(n for _, _, status, n in ledger if status == "sent")
    events = sum(by_source.values())
    result = {
        "events": by_source, "profiles": runtime.stores.profiles.count(), "messages_sent": sent,
        "emails_received_by_smtp": emails_received, "lift": lift, "truth": truth.__dict__,
        "seconds": seconds, "events_per_second": events / seconds if seconds else 0,
    }
    p = print
    p(f"\n=== A simulated shop: {config.customers:,} customers, {config.days} days, seed {config.seed} ===")
    p(f"ran in {seconds:.1f} s ({result['events_per_second']:.0f} events/s stored)")
    p(f"events stored: {events:,}  " + ", ".join(f"{k}={v:,}" for k, v in by_source.items()))
    p(f"profiles: {result['profiles']:,}; orders: {truth.orders:,}; revenue: {truth.revenue:,.2f} EUR")
    if truth.seasonal_days:
        p("seasons: " + ", ".join(f"{k} ({v} d)" for k, v in truth.seasonal_days.items())
          + f"; Black Friday greeting broadcast to {truth.broadcasts:,} subscribers")
    p("segments: " + ", ".join(f"{k}={v:,}" for k, v in segments.most_common()))
    p("\nmessages by journey / channel / outcome:")
    for journey, channel, status, n in ledger:
        p(f"  {journey:<22} {channel:<6} {status:<10} {n:,}")
    p(f"  deferred, then sent in the recipient's daytime or budget window: {deferred_then_sent:,}")
    p("withheld and why:")
    for reason, n in reasons.most_common(8):
        p(f"  {n:>6,}  {reason}")
    p(f"SMTP server received {emails_received:,} e-mails" + (f" (in {data_dir}/mailbox/)" if data_dir else ""))
    t, h = lift["treated"], lift["holdout"]
    p("\nabandoned-cart reminder, measured by Omnicast (global holdout as control):")
    p(f"  carts reminded: {t[1]:,}, bought: {t[0]:,} ({t[0] / t[1] if t[1] else 0:.1%})")
    p(f"  carts in holdout: {h[1]:,}, bought: {h[0]:,} ({h[0] / h[1] if h[1] else 0:.1%})")
    p(f"  incremental conversion: {lift['lift']:+.1%}  (95% interval {lift['low']:+.1%} to {lift['high']:+.1%})")
    p(f"  planted by the simulator: {config.cart_email_effect:+.1%}  "
      f"({'inside' if lift['low'] <= config.cart_email_effect <= lift['high'] else 'OUTSIDE'} the interval)")

    m = runtime.measurement
    snap = m.snapshot()
    kpis = m.kpis("journey", snap=snap)
    channels = m.kpis("channel", snap=snap)
    total = m.funnel(snap=snap)
    overall = m.lift(snap=snap)
    result.update(kpis=kpis, channels=channels, funnel=total, overall_lift=overall, machine_hits=snap.machine_hits)
    p("\nKPIs per journey (last touch: click 5 d, open 1 d, delivery 1 d; machine opens and clicks left out):")
    p(f"  {'journey':<22} {'sent':>6} {'opened':>7} {'clicked':>7} {'CTR':>6} {'conv':>6} {'revenue':>10} "
      f"{'cost':>8} {'ROMI':>7} {'CAC':>7}")
    for r in kpis:
        romi = f"{r['romi']:.1f}" if r["romi"] is not None else "-"
        cac = f"{r['cac']:.2f}" if r["cac"] is not None else "-"
        p(f"  {r['journey']:<22} {r['sent']:>6,} {r['opened']:>7,} {r['clicked']:>7,} {r['ctr']:>6.1%} "
          f"{r['conversions']:>6.0f} {r['revenue']:>10,.2f} {r['cost']:>8.2f} {romi:>7} {cac:>7}")
    p(f"  machine hits flagged and left out: {snap.machine_hits:,} (the simulator's image proxies fetched "
      f"{truth.proxy_opens:,}); human opens {truth.human_opens:,}, clicks {truth.clicks:,}")
    p("channel mix: " + ", ".join(f"{r['channel']} {r['sent']:,} sent, {r['revenue']:,.2f} EUR" for r in channels))
    p(f"all marketing against the holdout: {overall['summary']}")
    rev = overall["incremental_revenue"]
    if rev["low"] is not None:
        p(f"  incremental revenue: {rev['value']:+,.2f} EUR (95% CI {rev['low']:+,.2f} to {rev['high']:+,.2f})")
    p("dashboard: `omnicast serve`, then open /admin/dashboard with an admin key "
      "(data in " + (str(data_dir) if data_dir else "a scratch folder") + ")")
    return result


def train_models(runtime: Any) -> list[dict[str, Any]]:
    """Train every enabled model on the simulated history, then score every customer."""
    try:
        cards = runtime.scoring.train()
        runtime.scoring.run()
    except Exception as exc:  # noqa: BLE001 - the models are a part of the report, never the reason it fails
        log.warning("training on the simulated shop failed: %s", exc)
        return [{"name": "(training)", "error": str(exc)}]
    return list(cards)


def _headline(card: dict[str, Any]) -> str:
    metrics = card.get("metrics") or {}
    keys = ("auc", "brier", "brier_base_rate", "spend_mae", "spend_mae_naive", "precision_at_k",
            "popularity_precision_at_k", "share_within_1h", "click_rate_on_best_channel",
            "click_rate_on_other_channels", "customers")
    shown = [f"{k} {metrics[k]:.3g}" if isinstance(metrics[k], float) else f"{k} {metrics[k]}"
             for k in keys if k in metrics and not isinstance(metrics[k], list | dict)]
    spend, naive = metrics.get("spend"), metrics.get("spend_naive_baseline")
    if isinstance(spend, dict) and isinstance(naive, dict):  # CLV: error against a naive forecast
        shown.append(f"spend MAE {spend['mae']:.1f} (naive {naive['mae']:.1f}), predicted total "
                     f"{spend['predicted_total']:,.0f} vs actual {spend['actual_total']:,.0f}")
    segments = metrics.get("segments")
    if isinstance(segments, dict) and segments:  # RFM: who bought in the holdout, per segment
        shown.append(", ".join(f"{name} {v.get('bought_in_holdout', 0):.0%} bought"
                               for name, v in sorted(segments.items(), key=lambda kv: -kv[1].get("customers", 0))[:4]))
    if "held_out_messages" in metrics:
        shown.append(f"held-out messages {metrics['held_out_messages']}")
    return ", ".join(shown) or "learns online (no holdout metrics)"


def report_models(cards: list[dict[str, Any]]) -> None:
    if not cards:
        return
    print("\nmodels trained on the simulated history (time-based split, metrics on the holdout):")
    for card in cards:
        if "error" in card:
            print(f"  {card['name']}: {card['error']}")
            continue
        print(f"  {card['name']:<16} {card.get('method', 'model'):<34} {_headline(card)}")


@dataclass
class ShopPlan:
    """What the shop's process needs to trade with a running stack (picklable)."""

    config: SimConfig
    url: str
    write_key: str
    admin_key: str
    shopify_secret: str
    smtp_port: int
    mailbox: Path | None
    quiet: bool


class _StackLink:
    """The shop's end of the line to Omnicast's workers (in the process that started it)."""

    def __init__(self, conn: Any, front: Storefront, clock: ManualClock) -> None:
        self.conn, self.front, self.clock = conn, front, clock
        self.working = False
        self.delivered = 0

    def step(self, next_time: datetime, last: bool = False) -> None:
        """Every call so far answered (in the queue), the workers take them at this hour;
        the API's clock moves to ``next_time`` before this returns. ``last``: they deliver
        everything before they answer."""
        self.front.flush()
        self.front.wait()
        self.conn.send(("step", self.clock.now(), next_time, last))
        self.conn.recv()  # "cut": the hour's calls are theirs; the next hour's go on to the API
        self.working = True

    def settle(self) -> int | None:
        """Wait until the workers are done with the hour; how many messages they have delivered."""
        if self.working:
            self.delivered = int(self.conn.recv()[1])  # ("drained", delivered)
            self.working = False
        return self.delivered


@dataclass
class MailPlan:
    port: int
    folder: Path | None


def mail_server(handler: Any, port: int) -> Any:
    """aiosmtpd's threaded server on 127.0.0.1:``port``, its sessions remembering the
    addresses they have read: aiosmtpd parses each MAIL FROM and RCPT TO address with the
    ``email`` package's header parser and defines a class while doing it (a quarter of the
    shop's mail server's CPU), and the shop's customers get mail again and again. The same
    parser's answer for the same argument, so what is refused is refused as before (tested)."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP

    read: dict[tuple[str, int | None], tuple[str | None, str | None]] = {}

    class Session(SMTP):  # type: ignore[misc]
        def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
            key = (arg, self.local_part_limit)
            found = read.get(key)
            if found is None:
                found = read[key] = super()._getaddr(arg)
                if len(read) > 100_000:
                    read.clear()
            return found

    class Server(Controller):  # type: ignore[misc]
        def factory(self) -> SMTP:
            return Session(self.handler, **self.SMTP_kwargs)

    return Server(handler, hostname="127.0.0.1", port=port)


def mail_process(plan: MailPlan, conn: Any) -> None:
    """The shop's SMTP server (aiosmtpd) in its own process, so that taking Omnicast's mail
    never waits for the shop's trading. ("since", (n, upto)) answers the messages from number
    n on (``Mailbox.since``); "stop" ends it."""
    boxes: list[Mailbox] = []

    def start() -> Callable[[], Any]:
        boxes.append(Mailbox(plan.folder))
        smtp = mail_server(boxes[0], plan.port)
        smtp.start()
        return smtp.stop

    _serve(conn, start, "since", lambda span: boxes[0].since(*span))


def _serve(conn: Any, start: Callable[[], Callable[[], Any]], kind: str, answer: Callable[[Any], Any]) -> None:
    """A helper process's life: ``start()`` (which returns its stop), say "ready", answer each
    (``kind``, argument) with ``answer(argument)`` until any other message, stop. A failure
    goes back over the connection as ("failed", why); a connection closed by the other side
    ends it quietly (that process is gone, nobody is listening)."""
    try:
        stop = start()
        try:
            conn.send(("ready",))
            while True:
                message = conn.recv()
                if message[0] != kind:
                    break
                conn.send(answer(message[1]))
        finally:
            stop()
    except EOFError:
        pass
    except BaseException as exc:  # noqa: BLE001 - reported to the process that started this one
        conn.send(_failed(exc))
    finally:
        conn.close()


def _failed(exc: BaseException) -> tuple[str, str]:
    import traceback

    return "failed", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"


class _Served:
    """A process that ``_serve`` runs (Omnicast's API, the shop's mail server), seen from the
    process that started it: started once it says "ready"; ``ask`` sends a request and
    returns the answer (``tell`` sends it, ``answer`` reads it later); a failure over there
    is raised here with its reason."""

    def __init__(self, role: str, plan: Any, name: str) -> None:
        self.name = name
        self.conn, self.process = _start(role, plan)
        self.answer()  # ("ready",)

    def answer(self) -> Any:
        answer = _receive(self.conn, self.process, self.name)
        if isinstance(answer, tuple) and answer[:1] == ("failed",):
            raise RuntimeError(f"{self.name} failed: {answer[1]}")
        return answer

    def tell(self, kind: str, argument: Any) -> None:
        self.conn.send((kind, argument))

    def ask(self, kind: str, argument: Any) -> Any:
        self.tell(kind, argument)
        return self.answer()

    def stop(self) -> None:
        self.conn.send(("stop",))


class _MailboxLink:
    """The shop's view of its mail server's mailbox (in the mail process)."""

    def __init__(self, server: _Served) -> None:
        self.server = server

    def since(self, start: int, upto: int | None = None) -> list[tuple[str, str, str | None, str | None]]:
        return list(self.server.ask("since", (start, upto)))


def shop_process(plan: ShopPlan, conn: Any) -> None:
    """The simulated shop in its own process: a storefront calling Omnicast's API over HTTP
    and, in a process of its own, an SMTP server for its customers' mailboxes. ``conn`` (a
    Pipe's end) hands each hour's trade to Omnicast's workers; it ends with the simulator's
    truth."""
    mail = None
    try:
        mail = _Served("mail", MailPlan(plan.smtp_port, plan.mailbox), "the shop's mail process")
        mailbox = _MailboxLink(mail)
        try:
            front = Storefront(plan.url, plan.write_key, plan.shopify_secret, pipelined=True)
            clock = ManualClock(plan.config.start)
            sim = ShopSimulator(plan.config, front, mailbox, clock)  # type: ignore[arg-type]

            def broadcast(journey: str) -> int:
                # the marketer starts the seasonal greeting through the admin API, as a person would
                front.wait()
                req = urllib.request.Request(  # noqa: S310 - the local stack
                    f"{plan.url}/admin/journeys/{journey}/broadcast", data=b"{}", method="POST",
                    headers={"Authorization": f"Bearer {plan.admin_key}", "Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310
                    return int(json.loads(resp.read())["entered"])

            def progress(day: int) -> None:
                print(f"\r  day {day}/{plan.config.days}", end="", flush=True)

            # the SMTP server has each message before it answers 250, so what the workers sent
            # is in the mailbox when they say they are done
            sim.run(_StackLink(conn, front, clock), progress=None if plan.quiet else progress, broadcast=broadcast)
            front.wait()
            if not plan.quiet:
                print()
            conn.send(("done", dict(sim.truth.__dict__), len(mailbox.since(0))))
        finally:
            mail.stop()
            mail.process.wait(30)
    except BaseException as exc:  # noqa: BLE001 - reported to the stack's process, which raises it
        conn.send(_failed(exc))
    finally:
        if mail is not None and mail.process.poll() is None:
            mail.process.kill()
            mail.process.wait()
        conn.close()


@dataclass
class ApiPlan:
    """What Omnicast's API process needs: the settings (as overrides), its port, the start."""

    overrides: dict[str, Any]
    port: int
    start: datetime


def api_process(plan: ApiPlan, conn: Any) -> None:
    """Omnicast's HTTP API in its own process, as API Gateway and its Lambda are on AWS: the
    same app on Chalice's local server, over the same database as the workers. It says
    "ready" once it listens; ("clock", t) moves its clock (the shop's hour), "stop" ends it."""
    from chalicelib.config import load_settings
    from chalicelib.runtime import Runtime
    from chalicelib.server import LocalStack

    clock = ManualClock(plan.start)

    def start() -> Callable[[], Any]:
        runtime = Runtime(load_settings({}, overrides=plan.overrides), clock=clock)
        try:
            return LocalStack(runtime, port=plan.port, workers=False).start().stop
        except BaseException:
            runtime.close()
            raise

    def move(to: datetime) -> bool:
        clock.set(to)
        return True

    _serve(conn, start, "clock", move)


@dataclass
class ModelsPlan:
    """What the models' process needs: the settings (as overrides) and the shop's closing time."""

    overrides: dict[str, Any]
    at: datetime


def models_process(plan: ModelsPlan, conn: Any) -> None:
    """The models trained on the shop's history and every customer scored, in a process of
    its own once the trade is over, while the workers' process writes the report (the two
    only read what the trade wrote, each on a core): at 10,000 x 90 the two took 19.4-20.5 s
    one after the other, 15.1-15.7 s this way. (Scoring the two shards in two processes
    once the report is written saved 2 s more, but forks this process, whose checkpointer
    thread may hold a lock of SQLite's at that moment: not worth a demo that may hang.)
    ("train", None) answers the model cards; "stop" ends it."""
    from chalicelib.config import load_settings
    from chalicelib.runtime import Runtime

    runtime: Any = None

    def start() -> Callable[[], Any]:
        nonlocal runtime
        runtime = Runtime(load_settings({}, overrides=plan.overrides), clock=ManualClock(plan.at))
        return runtime.close  # type: ignore[no-any-return]

    _serve(conn, start, "train", lambda _: train_models(runtime))


@dataclass
class SenderPlan:
    """What Omnicast's sending process needs: the settings (as overrides) and the start."""

    overrides: dict[str, Any]
    start: datetime


def sender_process(plan: SenderPlan, conn: Any) -> None:
    """Omnicast's deliveries in a process of their own, as the send function is apart from
    the ingest function on AWS: the workers take every decision and record every answer;
    this process holds the channels (the SMTP connections) and hands them the messages.
    ("transmit", (time, [(channel kind, messages)])) answers each batch's results at that
    time (the Date a message bears); "stop" ends it."""
    from chalicelib.config import load_settings
    from chalicelib.runtime import Runtime
    from chalicelib.services.send import SendService

    clock = ManualClock(plan.start)
    runtime: Any = None

    def start() -> Callable[[], Any]:
        nonlocal runtime
        runtime = Runtime(load_settings({}, overrides=plan.overrides), clock=clock)
        return runtime.close  # type: ignore[no-any-return]

    def transmit(argument: tuple[datetime, list[tuple[str, list[Any]]]]) -> list[list[Any]]:
        at, batches = argument
        if at > clock.now():
            clock.set(at)
        return [SendService.transmit([(runtime.channel(kind), [], messages)])[0][1] for kind, messages in batches]

    _serve(conn, start, "transmit", transmit)


class _SenderLink:
    """The workers' end of the line to the sending process (``SendService.elsewhere``): one
    batch of deliveries at a time, its answers read when asked for."""

    def __init__(self, server: _Served, clock: Any) -> None:
        self.server, self.clock = server, clock

    def __call__(self, groups: list[tuple[Any, list[int], list[Any]]]) -> _SenderLink.Answers:
        self.server.tell("transmit", (self.clock.now(), [(messages[0].channel, messages)
                                                         for _, _, messages in groups]))
        return self.Answers(self.server, groups)

    class Answers:
        def __init__(self, server: _Served, groups: list[tuple[Any, list[int], list[Any]]]) -> None:
            self.server, self.groups = server, groups

        def result(self) -> list[tuple[list[int], list[Any]]]:
            results = self.server.answer()
            return [(positions, answer) for (_, positions, _), answer in zip(self.groups, results, strict=True)]


def _start(role: str, plan: Any) -> tuple[Any, Any]:
    """A process (``python -m chalicelib.simulation <role> <fd>``) and a connection to it: a
    socket pair, so nothing of the caller's ``__main__`` is re-imported (multiprocessing's
    spawn would) and nothing of this process's threads or database is copied (fork would)."""
    import os
    import socket
    import subprocess
    import sys
    from multiprocessing.connection import Connection

    ours, theirs = socket.socketpair()
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    process = subprocess.Popen([sys.executable, "-m", "chalicelib.simulation", role, str(theirs.fileno())],
                               pass_fds=(theirs.fileno(),), env=env)
    theirs.close()
    conn = Connection(ours.detach())
    conn.send(plan)
    return conn, process


def _receive(conn: Any, process: Any, name: str, others: tuple[Any, ...] = ()) -> Any:
    """The next message from ``process``, or an error if it (or one of ``others``) ended."""
    while not conn.poll(1.0):
        for proc, who in ((process, name), *others):
            if proc.poll() is not None:
                raise RuntimeError(f"{who} ended (exit code {proc.returncode})")
    try:
        return conn.recv()
    except EOFError:
        raise RuntimeError(f"{name} ended (exit code {process.wait(30)})") from None


def run_simulation(config: SimConfig, data_dir: Path | None = None, quiet: bool = False) -> dict[str, Any]:
    """Omnicast's workers here, its HTTP API in a second process, its sending process in a
    third, the simulated shop in a fourth and the shop's SMTP server in a fifth (the shop
    starts it); trade, then the report here while a sixth trains the models. While the
    workers take an hour's trade, the API takes the next hour's calls, the shop makes them
    and the sending process delivers the hour before's mail: the two cores work at once,
    and the outcome does not depend on which is quicker (see ShopSimulator.run)."""
    import resource
    import socket
    import subprocess
    import tempfile

    from chalicelib.config import load_settings
    from chalicelib.runtime import Runtime
    from chalicelib.services.ingest import INGEST_QUEUE

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    smtp_port, port = free_port(), free_port()
    scratch = None
    if data_dir is None:
        scratch = tempfile.TemporaryDirectory(prefix="omnicast-sim-")
    overrides = {
        "data_dir": str(data_dir or scratch.name),  # type: ignore[union-attr]
        "public_url": f"http://127.0.0.1:{port}", "channels": {"email": "smtp"},
        "send_policy": {"holdout_percent": config.holdout_percent},
        "measurement": {"fixed_costs": round(config.monthly_fixed_cost * config.days / 30, 2)},
        # a quarter of history: 30-day horizons (fit, holdout, deploy), and a small shop's threshold
        "plugin_settings": {"smtp": {"host": "127.0.0.1", "port": smtp_port, "connections": 4},
                            "churn": {"horizon_days": 30, "min_customers": 100},
                            "clv": {"horizon_days": 30, "value_days": 365, "min_customers": 100}},
        "shop": {"name": "Omnicast Simulated Shop", "url": "https://sim.shop"},
    }
    clock = ManualClock(config.start)
    runtime = Runtime(load_settings({}, overrides=overrides), clock=clock)
    queue_ = runtime.stores.queue
    api: _Served | None = None
    sender: _Served | None = None
    models: _Served | None = None
    shop = None
    try:
        shopify_secret = secrets.token_urlsafe(24)  # the simulated shop's app secret, for this run only
        runtime.credentials.add_webhook_secret("shopify", shopify_secret)
        plan = ShopPlan(config, f"http://127.0.0.1:{port}",
                        runtime.credentials.create_key("write", "simulated-storefront"),
                        runtime.credentials.create_key("admin", "simulated-marketer"), shopify_secret, smtp_port,
                        data_dir / "mailbox" if data_dir else None, quiet)
        api = _Served("api", ApiPlan(overrides, port, config.start), "Omnicast's API process")
        sender = _Served("sender", SenderPlan(overrides, config.start), "Omnicast's sending process")
        runtime.sender.elsewhere = _SenderLink(sender, runtime.channel_clock)
        ours, shop = _start("shop", plan)
        watched = ((api.process, api.name), (sender.process, sender.name))
        started = time.perf_counter()
        while True:
            message = _receive(ours, shop, "the simulated shop's process", watched)
            kind = message[0]
            if kind == "step":  # ("step", the hour, the next hour, the last?)
                clock.set(message[1])
                horizon = queue_.position(INGEST_QUEUE)  # type: ignore[attr-defined]
                api.ask("clock", message[2])  # the API takes the next hour's calls at the next hour
                ours.send(("cut",))
                # the hour's mail goes out while the next hour's events are taken (the shop
                # reads it an hour later); its only channel is e-mail over SMTP
                runtime.drain(ingest_up_to=horizon, leave_sends_in_flight=not message[3])
                ours.send(("drained", runtime.delivered))
            elif kind == "done":
                truth, received = Truth(**message[1]), message[2]
                break
            else:
                raise RuntimeError(f"the simulated shop failed: {message[1]}")
        seconds = time.perf_counter() - started
        trade_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the report
        api.stop()
        sender.stop()
        runtime.sender.elsewhere = None
        for process, name in ((shop, "shop"), (api.process, "API"), (sender.process, "sending")):
            try:
                process.wait(30)  # done; if one lingers, the finally below ends it
            except subprocess.TimeoutExpired:
                log.warning("the simulation's %s process did not exit within 30 s; it is stopped", name)
        cards: list[dict[str, Any]] = []
        failed: str | None = None  # the models are a part of the report, never the reason it fails
        if config.train_models and config.days >= 60:  # trained over there while the report is written here
            try:
                models = _Served("models", ModelsPlan(overrides, clock.now()), "the models' process")
                models.tell("train", None)
            except Exception as exc:  # noqa: BLE001 - a process that could not start: the report goes on
                failed = str(exc) or type(exc).__name__
        result = report(runtime, truth, config, received, seconds, data_dir)
        if models is not None and failed is None:
            try:
                cards = models.answer()
                models.stop()
            except RuntimeError as exc:
                failed = str(exc) or type(exc).__name__
            try:
                models.process.wait(30)  # done; if it lingers, the finally below ends it
            except subprocess.TimeoutExpired:
                log.warning("the simulation's models process did not exit within 30 s; it is stopped")
        if failed is not None:
            log.warning("training on the simulated shop failed: %s", failed)
            cards = [{"name": "(training)", "error": failed.splitlines()[0]}]  # the first line, not a traceback
        result["models"] = cards
        result["peak_mb_after_trade"] = trade_peak_mb
        report_models(cards)
        return result
    finally:
        for process in (shop, api.process if api else None, sender.process if sender else None,
                        models.process if models else None):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        runtime.close()
        if scratch:
            scratch.cleanup()


if __name__ == "__main__":  # a process run_simulation starts: the API, sending, shop, mail server or models
    import sys
    from multiprocessing.connection import Connection

    from chalicelib import simulation  # the module's own classes, not __main__'s copies (they are pickled)

    roles: dict[str, Any] = {"shop": simulation.shop_process, "api": simulation.api_process,
                             "mail": simulation.mail_process, "sender": simulation.sender_process,
                             "models": simulation.models_process}
    if len(sys.argv) != 3 or sys.argv[1] not in roles or not sys.argv[2].isdigit():
        print("chalicelib.simulation runs as the processes run_simulation starts (Omnicast's API, sending and "
              "models processes, the simulated shop and its mail server); run `omnicast demo` (or `make demo`) "
              "instead", file=sys.stderr)
        raise SystemExit(2)
    if sys.argv[1] in ("api", "sender", "shop"):  # the trade's; the shop's mail server inherits the shop's
        import os

        os.nice(simulation.HELPER_NICENESS)
    channel = Connection(int(sys.argv[2]))
    roles[sys.argv[1]](channel.recv(), channel)
