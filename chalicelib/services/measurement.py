"""Measurement: attribution, KPIs, holdout lift and experiments, from Omnicast's own records.

Everything is recomputed from two sources of truth, so an independent recount from the
raw events agrees by construction of the test, not by trust:

- the send ledger (one row per intended message: sent, or skipped with its reason, with
  the channel, template, variant and unit cost the channel estimated), and
- the event log: tracking hits (``Email Opened`` / ``Email Link Clicked``, machine hits
  flagged and ignored), provider feedback (``Email Bounced``, receipts), and orders
  (``Order Completed`` from any source, deduplicated by ``order_id``).

**Attribution.** A touch is a delivery, a human open or a human click. An order is
attributed to touches of the same customer that happened before it within the window of
their type (``measurement.windows_hours``; default click 5 days, open 1 day, delivery 1
day). *Last touch* (the default) gives the whole order to the strongest touch (click >
open > delivery), the latest one among equals (then the message key, so a tie
reads the same in every recount); *linear* splits it evenly over every touch
in its window; *first touch* gives it to the earliest. Each attributed order carries the
message, journey, step, channel, template and variant.

**Lift.** Marketing messages withheld by a holdout (the global control group or a
journey's own holdout) are the control: the customer would have got the message and did
not. A unit converts when the customer ordered within the attribution window after the
decision. The difference of conversion rates has a Newcombe (Wilson score) interval, the
revenue per unit a Welch interval; incremental conversions and revenue scale them by the
treated count. No minimum audience size: a small shop gets a wide interval.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from statistics import NormalDist
from typing import Any

from chalicelib.ports import EventStore, LedgerEntry, SendLedger, StoredEvent

TOUCH_RANK = ("click", "open", "delivery")
ORDER_EVENTS = frozenset({"Order Completed"})
BOUNCE_EVENTS = frozenset({"Email Bounced", "Message Bounced", "Message Failed"})
COMPLAINT_EVENTS = frozenset({"Email Complained", "Message Complained"})
HIT_EVENTS = frozenset({"Email Opened", "Email Link Clicked", "Message Link Clicked"})
SNAPSHOT_EVENTS = HIT_EVENTS | BOUNCE_EVENTS | ORDER_EVENTS  # all that snapshot() reads
GROUPS = ("journey", "step", "channel", "template", "variant", "segment", "day", "week", "month", "total")
MODELS = ("last_touch", "first_touch", "linear")
KPI_FIELDS = (
    "sent", "delivered", "bounced", "opened", "clicked", "ctr", "open_rate", "conversions", "conversion_rate",
    "revenue", "cost", "romi", "new_customers", "cac",
)


def all_events(events: EventStore, sources: Iterable[str], page_size: int = 1000,
               names: Collection[str] | None = None) -> Iterator[StoredEvent]:
    """Every event of ``sources`` (of those ``names``, if given), a page at a time: a snapshot
    reads only what it needs (opens, clicks, orders, bounces: ``SNAPSHOT_EVENTS``), never the
    whole log (page views are most of it: 2 GB held at once for a 10,000-customer quarter)."""
    for source in dict.fromkeys(sources):
        cursor = None
        while True:
            page = events.by_source(source, after=cursor, limit=page_size, events=names)
            yield from page
            if len(page) < page_size:
                break
            cursor = page[-1].message_id


# --------------------------------------------------------------------------- statistics
def wilson(x: int, n: int, z: float = 1.96) -> tuple[float, float, float]:
    """A proportion and its Wilson score interval (sound for small n and for 0 or n)."""
    if n == 0:
        return 0.0, 0.0, 1.0
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, max(0.0, centre - half), min(1.0, centre + half)


def rate_difference(x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """p1 - p2 with Newcombe's hybrid score interval (method 10)."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p1, l1, u1 = wilson(x1, n1, z)
    p2, l2, u2 = wilson(x2, n2, z)
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def mean_difference(a: list[float], b: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """mean(a) - mean(b) with a Welch interval (normal quantile; revenue per unit)."""
    if not a or not b:
        return 0.0, -math.inf, math.inf
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1) if len(a) > 1 else 0.0
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1) if len(b) > 1 else 0.0
    se = math.sqrt(va / len(a) + vb / len(b))
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    return ma - mb, ma - mb - z * se, ma - mb + z * se


def probability_to_beat(x1: int, n1: int, x0: int, n0: int, draws: int = 20000, seed: int = 7) -> float:
    """P(rate of the variant > rate of control) under uniform Beta(1, 1) priors (Monte Carlo,
    seeded so a report reads the same twice)."""
    rng = random.Random(seed)
    wins = sum(
        rng.betavariate(1 + x1, 1 + n1 - x1) > rng.betavariate(1 + x0, 1 + n0 - x0) for _ in range(draws)
    )
    return wins / draws


def per_arm_sample_size(base_rate: float, min_effect: float, confidence: float = 0.95, power: float = 0.8) -> int:
    """Units per arm for a two-sided test of an absolute difference ``min_effect``."""
    p1, p2 = base_rate, min(1.0, base_rate + min_effect)
    za, zb = NormalDist().inv_cdf(0.5 + confidence / 2), NormalDist().inv_cdf(power)
    pbar = (p1 + p2) / 2
    num = (za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2
    return math.ceil(num / (min_effect**2)) if min_effect > 0 else 0


# --------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Order:
    order_id: str
    profile_id: str
    at: datetime
    revenue: float
    new_customer: bool  # the customer's first order on record


@dataclass(frozen=True)
class Attribution:
    order_id: str
    profile_id: str
    at: datetime
    revenue: float  # the share of the order's revenue credited to this message
    weight: float
    touch: str  # click, open, delivery
    message_key: str
    message_id: str
    journey: str
    step: str
    channel: str
    template: str
    variant: str | None
    new_customer: bool


@dataclass
class Snapshot:
    """The ledger and the events, indexed once."""

    sent: list[LedgerEntry]
    withheld: list[LedgerEntry]  # skipped by a holdout
    by_key: dict[str, LedgerEntry]
    opens: dict[str, int] = field(default_factory=dict)  # ledger key -> human opens
    clicks: dict[str, int] = field(default_factory=dict)
    machine_hits: int = 0
    bounced: set[str] = field(default_factory=set)  # ledger keys
    touches: dict[str, list[tuple[datetime, str, str]]] = field(default_factory=dict)  # profile -> touches
    orders: list[Order] = field(default_factory=list)
    orders_by_profile: dict[str, list[Order]] = field(default_factory=dict)
    attributed: dict[str, list[Attribution]] = field(default_factory=dict)  # per model, computed once


def sent_at(entry: LedgerEntry) -> datetime:
    raw = entry.detail.get("sent_at")
    return datetime.fromisoformat(raw) if isinstance(raw, str) else entry.updated_at


def order_total(props: dict[str, Any]) -> float:
    total = props.get("total", props.get("revenue", 0))
    if isinstance(total, str):
        try:
            return float(total)
        except ValueError:
            return 0.0
    return float(total) if isinstance(total, int | float) and not isinstance(total, bool) else 0.0


def snapshot(entries: Iterable[LedgerEntry], events: Iterable[StoredEvent]) -> Snapshot:
    sent, withheld = [], []
    for e in entries:
        if e.status == "sent":
            sent.append(e)
        elif e.status == "skipped" and "holdout" in e.reason:
            withheld.append(e)
    by_key = {e.key: e for e in sent}
    by_provider = {e.provider_message_id: e.key for e in sent if e.provider_message_id}
    snap = Snapshot(sent=sent, withheld=withheld, by_key=by_key)
    for e in sent:
        snap.touches.setdefault(e.profile_id, []).append((sent_at(e), "delivery", e.key))
        if e.detail.get("delivery") == "failed":  # a provider's receipt said it never arrived
            snap.bounced.add(e.key)
    seen_orders: set[str] = set()
    raw_orders: list[tuple[datetime, str, str, float]] = []
    for ev in events:
        props = ev.payload.get("properties") or {}
        if ev.event in HIT_EVENTS:
            if props.get("machine"):
                snap.machine_hits += 1
                continue
            key = str(props.get("ledger_key"))
            kind = "open" if ev.event == "Email Opened" else "click"
            counter = snap.clicks if kind == "click" else snap.opens
            counter[key] = counter.get(key, 0) + 1
            if key in by_key:
                snap.touches.setdefault(by_key[key].profile_id, []).append((ev.timestamp, kind, key))
        elif ev.event in BOUNCE_EVENTS:
            pid = props.get("provider_message_id")
            if pid in by_provider:
                snap.bounced.add(by_provider[pid])
        elif ev.event in ORDER_EVENTS and ev.profile_id:
            order_id = str(props.get("order_id") or props.get("checkout_id") or ev.message_id)
            raw_orders.append((ev.timestamp, order_id, ev.profile_id, order_total(props)))
    raw_orders.sort()  # an order reported twice (created, then paid) counts once, at its first report
    first: set[str] = set()
    for at, order_id, profile_id, revenue in raw_orders:
        if order_id in seen_orders:
            continue
        seen_orders.add(order_id)
        order = Order(order_id, profile_id, at, revenue, new_customer=profile_id not in first)
        first.add(profile_id)
        snap.orders.append(order)
        snap.orders_by_profile.setdefault(profile_id, []).append(order)
    return snap


# --------------------------------------------------------------------------- service
class Measurement:
    def __init__(
        self,
        ledger: SendLedger,
        load_events: Callable[[], Iterable[StoredEvent]],
        windows_hours: dict[str, float],
        *,
        fixed_costs: float = 0.0,
        confidence: float = 0.95,
        segments_of: Callable[[], dict[str, list[str]]] | None = None,
    ) -> None:
        self.ledger = ledger
        self.load_events = load_events
        self.windows = {k: timedelta(hours=v) for k, v in windows_hours.items()}
        self.fixed_costs = fixed_costs
        self.confidence = confidence
        self.segments_of = segments_of

    def snapshot(self) -> Snapshot:
        return snapshot(self.ledger.all(10**9), self.load_events())

    # ------------------------------------------------------------------ attribution
    def attribute(self, model: str = "last_touch", snap: Snapshot | None = None) -> list[Attribution]:
        if model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}")
        snap = snap or self.snapshot()
        if model in snap.attributed:
            return snap.attributed[model]
        out: list[Attribution] = []
        for order in snap.orders:
            eligible = [
                (when, kind, key)
                for when, kind, key in snap.touches.get(order.profile_id, [])
                if timedelta(0) < order.at - when <= self.windows.get(kind, timedelta(0))
            ]
            if not eligible:
                continue
            if model == "last_touch":
                chosen = [min(eligible, key=lambda t: (TOUCH_RANK.index(t[1]), -t[0].timestamp(), t[2]))]
            elif model == "first_touch":
                chosen = [min(eligible, key=lambda t: (t[0], TOUCH_RANK.index(t[1]), t[2]))]
            else:
                chosen = eligible
            weight = 1 / len(chosen)
            for _when, kind, key in chosen:
                e = snap.by_key[key]
                out.append(
                    Attribution(
                        order_id=order.order_id, profile_id=order.profile_id, at=order.at,
                        revenue=order.revenue * weight, weight=weight, touch=kind, message_key=key,
                        message_id=str(e.detail.get("message_id", "")), journey=e.journey, step=e.step,
                        channel=e.channel, template=str(e.detail.get("template", "")),
                        variant=e.detail.get("variant"), new_customer=order.new_customer,
                    )
                )
        snap.attributed[model] = out
        return out

    # ------------------------------------------------------------------ KPIs
    def _names(self, entry: LedgerEntry, group: str, segments: dict[str, list[str]]) -> list[str]:
        when = sent_at(entry)
        if group == "journey":
            return [entry.journey]
        if group == "step":
            return [f"{entry.journey}.{entry.step}"]
        if group == "channel":
            return [entry.channel]
        if group == "template":
            return [str(entry.detail.get("template", ""))]
        if group == "variant":
            variant = entry.detail.get("variant")
            return [f"{entry.journey}:{variant}" if variant else f"{entry.journey}:(no split)"]
        if group == "segment":
            return segments.get(entry.profile_id) or ["(no segment)"]
        if group == "day":
            return [when.date().isoformat()]
        if group == "week":
            year, week, _ = when.isocalendar()
            return [f"{year}-W{week:02d}"]
        if group == "month":
            return [when.strftime("%Y-%m")]
        return ["total"]

    def kpis(
        self,
        group: str = "journey",
        model: str = "last_touch",
        since: datetime | None = None,
        until: datetime | None = None,
        snap: Snapshot | None = None,
    ) -> list[dict[str, Any]]:
        """One row per group value: the funnel, rates, money. Sorted by sends, descending."""
        if group not in GROUPS:
            raise ValueError(f"group must be one of {', '.join(GROUPS)}")
        snap = snap or self.snapshot()
        segments = self.segments_of() if group == "segment" and self.segments_of else {}

        def inside(when: datetime) -> bool:
            return (since is None or when >= since) and (until is None or when < until)

        rows: dict[str, dict[str, Any]] = {}

        def row(name: str) -> dict[str, Any]:
            return rows.setdefault(name, {group: name, **{k: 0 for k in KPI_FIELDS}, "revenue": 0.0, "cost": 0.0})

        total_sent = 0
        for e in snap.sent:
            if not inside(sent_at(e)):
                continue
            total_sent += 1
            for name in self._names(e, group, segments):
                r = row(name)
                r["sent"] += 1
                r["bounced"] += e.key in snap.bounced
                r["opened"] += snap.opens.get(e.key, 0) > 0
                r["clicked"] += snap.clicks.get(e.key, 0) > 0
                r["cost"] += float(e.detail.get("cost") or 0)
        for a in self.attribute(model, snap):
            e = snap.by_key[a.message_key]
            if not inside(sent_at(e)):
                continue
            for name in self._names(e, group, segments):
                r = row(name)
                r["conversions"] += a.weight
                r["revenue"] += a.revenue
                r["new_customers"] += a.weight if a.new_customer else 0
        for r in rows.values():
            # fixed costs are shared in proportion to the messages sent
            r["cost"] += self.fixed_costs * r["sent"] / total_sent if total_sent else 0.0
            r["delivered"] = r["sent"] - r["bounced"]
            r["open_rate"] = round(r["opened"] / r["delivered"], 4) if r["delivered"] else 0.0
            r["ctr"] = round(r["clicked"] / r["delivered"], 4) if r["delivered"] else 0.0
            r["conversions"] = round(r["conversions"], 4)
            r["new_customers"] = round(r["new_customers"], 4)
            r["conversion_rate"] = round(r["conversions"] / r["sent"], 4) if r["sent"] else 0.0
            r["revenue"] = round(r["revenue"], 2)
            r["cost"] = round(r["cost"], 4)
            r["romi"] = round((r["revenue"] - r["cost"]) / r["cost"], 2) if r["cost"] else None
            r["cac"] = round(r["cost"] / r["new_customers"], 2) if r["new_customers"] else None
        return sorted(rows.values(), key=lambda r: (-r["sent"], str(r[group])))

    def funnel(self, snap: Snapshot | None = None) -> dict[str, Any]:
        total = self.kpis("total", snap=snap or self.snapshot())
        base = total[0] if total else {k: 0 for k in KPI_FIELDS}
        keys = ("sent", "delivered", "opened", "clicked", "conversions", "revenue", "cost", "romi", "cac")
        return {k: base.get(k) for k in keys}

    # ------------------------------------------------------------------ lift
    def _outcome(self, snap: Snapshot, profile_id: str, start: datetime, window: timedelta) -> float | None:
        """Revenue ordered in (start, start + window]; None when nothing was ordered."""
        total, hit = 0.0, False
        for order in snap.orders_by_profile.get(profile_id, []):
            if start < order.at <= start + window:
                total, hit = total + order.revenue, True
        return total if hit else None

    def lift(
        self, journey: str | None = None, window_hours: float | None = None, snap: Snapshot | None = None
    ) -> dict[str, Any]:
        """Treated (sent) against control (withheld by a holdout), for one journey or all."""
        snap = snap or self.snapshot()
        window = timedelta(hours=window_hours) if window_hours else self.windows.get("click", timedelta(days=5))
        groups: dict[str, list[float | None]] = {"treated": [], "control": []}
        for name, entries in (("treated", snap.sent), ("control", snap.withheld)):
            for e in entries:
                if e.detail.get("purpose", "marketing") != "marketing" or (journey and e.journey != journey):
                    continue
                start = sent_at(e) if name == "treated" else e.created_at
                groups[name].append(self._outcome(snap, e.profile_id, start, window))
        t, c = groups["treated"], groups["control"]
        xt, xc = sum(v is not None for v in t), sum(v is not None for v in c)
        d, lo, hi = rate_difference(xt, len(t), xc, len(c), self.confidence)
        revenue_t = [v or 0.0 for v in t]
        revenue_c = [v or 0.0 for v in c]
        rd, rlo, rhi = mean_difference(revenue_t, revenue_c, self.confidence)
        rate_c = xc / len(c) if c else 0.0
        out = {
            "journey": journey or "(all marketing)",
            "window_hours": window.total_seconds() / 3600,
            "confidence": self.confidence,
            "treated": {"units": len(t), "conversions": xt, "rate": round(xt / len(t), 6) if t else 0.0,
                        "revenue": round(sum(revenue_t), 2)},
            "control": {"units": len(c), "conversions": xc, "rate": round(rate_c, 6),
                        "revenue": round(sum(revenue_c), 2)},
            "difference": {"value": round(d, 6), "low": round(lo, 6), "high": round(hi, 6)},
            "relative_lift": round(d / rate_c, 4) if rate_c else None,
            "incremental_conversions": {"value": round(d * len(t), 2), "low": round(lo * len(t), 2),
                                        "high": round(hi * len(t), 2)},
            "incremental_revenue": {
                "value": round(rd * len(t), 2),
                "low": round(rlo * len(t), 2) if math.isfinite(rlo) else None,
                "high": round(rhi * len(t), 2) if math.isfinite(rhi) else None,
            },
        }
        out["summary"] = lift_words(out)
        return out

    def lift_by_journey(self, snap: Snapshot | None = None) -> list[dict[str, Any]]:
        snap = snap or self.snapshot()
        journeys = sorted({e.journey for e in snap.withheld})
        return [self.lift(j, snap=snap) for j in journeys]

    # ------------------------------------------------------------------ experiments
    def experiment(
        self, journey: str, control: str | None = None, horizon: int | None = None, snap: Snapshot | None = None
    ) -> dict[str, Any]:
        """A/B/n: each variant's conversion against control (the variant named ``control``,
        else the first by name), a difference with its interval and P(beat control)."""
        snap = snap or self.snapshot()
        window = self.windows.get("click", timedelta(days=5))
        units: dict[str, dict[tuple[str, str], float | None]] = {}
        for e in snap.sent:
            variant = e.detail.get("variant")
            if e.journey != journey or not variant:
                continue
            unit = (e.profile_id, str(e.detail.get("entity", e.key)))
            arm = units.setdefault(str(variant), {})
            if unit not in arm:  # a unit counts once, from its first message after the split
                arm[unit] = self._outcome(snap, e.profile_id, sent_at(e), window)
        if not units:
            return {"journey": journey, "variants": [], "status": "no variant has been sent yet"}
        names = sorted(units)
        base = control if control in units else ("control" if "control" in units else names[0])
        x0 = sum(v is not None for v in units[base].values())
        n0 = len(units[base])
        rows = []
        for name in names:
            n = len(units[name])
            x = sum(v is not None for v in units[name].values())
            revenue = sum(v or 0.0 for v in units[name].values())
            row: dict[str, Any] = {"variant": name, "units": n, "conversions": x,
                                   "rate": round(x / n, 6) if n else 0.0, "revenue": round(revenue, 2),
                                   "control": name == base}
            if name != base:
                d, lo, hi = rate_difference(x, n, x0, n0, self.confidence)
                row.update(difference=round(d, 6), low=round(lo, 6), high=round(hi, 6),
                           probability_to_beat_control=round(probability_to_beat(x, n, x0, n0), 4))
            rows.append(row)
        smallest = min(r["units"] for r in rows)
        if horizon:
            status = (f"fixed horizon of {horizon} units per variant reached: read the result"
                      if smallest >= horizon else
                      f"fixed horizon of {horizon} units per variant: {smallest} so far, do not stop early")
        else:
            status = "no horizon declared: exploratory, decide the horizon before reading a winner"
        return {"journey": journey, "control": base, "confidence": self.confidence, "horizon": horizon,
                "status": status, "variants": rows}


def lift_words(lift: dict[str, Any]) -> str:
    d = lift["difference"]
    c, t = lift["control"], lift["treated"]
    if not c["units"] or not t["units"]:
        return "no holdout units yet: set send_policy.holdout_percent or a journey holdout to measure lift"
    pct = round(lift["confidence"] * 100)
    return (f"{d['value'] * 100:+.1f} pp conversion ({pct}% CI {d['low'] * 100:+.1f} to {d['high'] * 100:+.1f} pp): "
            f"{t['rate']:.1%} of {t['units']:,} treated vs {c['rate']:.1%} of {c['units']:,} in the holdout")


def as_rows(items: Iterable[Attribution]) -> list[dict[str, Any]]:
    return [{**asdict(a), "at": a.at.isoformat()} for a in items]
