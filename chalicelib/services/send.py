"""The send policy and delivery: every message passes here, in this order.

1. consent by channel and purpose, and suppression (a fallback channel is tried when the
   first is not allowed);
2. the exactly-once send ledger: a conditional claim keyed on profile + journey + step
   + entity (with the run), so two workers or a redelivered task cannot both send;
3. the contact-pressure budget across channels (marketing only; transactional
   messages bypass it): over budget the message is deferred to when the window frees
   up, higher priority first, never dropped;
4. quiet hours in the recipient's own time zone (marketing only): deferred to the
   morning, never dropped;
5. render (Liquid sandbox) → ``before_send`` → channel plugin → ``after_send``.

Every decision is written to the ledger with its reason; the profile's ledger entries
are its decision log. Deferrals and retries are timers that fire once and move the
entry out of ``deferred`` / ``retry_wait`` with a conditional transition, so exactly one
worker continues it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from liquid.exceptions import LiquidError

from chalicelib.addresses import ADDRESS_TRAIT, address_text
from chalicelib.batches import Unit, run_in_one_commit
from chalicelib.clock import Clock
from chalicelib.config import Settings
from chalicelib.plugin_api import Channel, OutboundMessage, SendResult
from chalicelib.plugin_host import PluginHost
from chalicelib.ports import EventStore, JourneyStore, LedgerEntry, Profile, ProfileStore, SendLedger, Timer
from chalicelib.services.credentials import Credentials
from chalicelib.services.templates import TemplateRenderer

log = logging.getLogger("omnicast.send")

@dataclass
class _Delivery:
    """A message past the policy and rendered, waiting for its channel's answer."""

    task: dict[str, Any]
    profile: Profile
    key: str
    attempt: int
    channel: Channel
    message: OutboundMessage


class Sending:
    """Sends started by ``SendService.start_many``: ``finish()`` waits for the wave still
    with its channels (if any: ``answers``, a future of them), records it and returns each
    one's outcome (tasks, then timers) as ``handle_many`` does."""

    def __init__(self, service: SendService, out: list[str | Exception], timers: int,
                 held: list[_Delivery] | None = None, index: dict[int, int] | None = None,
                 at: datetime | None = None, answers: Any = None
                 ) -> None:
        self.service, self.out, self.timers = service, out, timers
        self.held, self.index, self.at, self.answers = held or [], index or {}, at, answers

    @property
    def in_flight(self) -> int:
        """How many deliveries are still with their channels."""
        return len(self.held) if self.answers is not None else 0

    def finish(self) -> list[str | Exception]:
        if self.answers is not None:
            answers, self.answers = self.answers.result(), None
            self.service._record(self.held, self.index, answers, self.out, self.at)  # type: ignore[arg-type]
        return self.out[self.timers:] + self.out[:self.timers]


def address_of(profile: Profile, channel: str) -> str | None:
    if channel == "webhook":
        return profile.profile_id
    return address_text(profile.traits.get(ADDRESS_TRAIT.get(channel, channel))) or None


def ledger_key(task: dict[str, Any]) -> str:
    return f"{task['profile_id']}|{task['journey']}|{task['step']}|{task['entity']}"


def message_id(key: str) -> str:
    return "m_" + hashlib.sha256(key.encode()).hexdigest()[:24]


def in_holdout(profile_id: str, percent: float, salt: str = "") -> bool:
    """Deterministic: the same customers stay in the control group. The global group has no
    salt; a journey's own holdout is salted with its name, so the groups are independent."""
    if percent <= 0:
        return False
    digest = hashlib.sha256(f"holdout|{salt}{'|' if salt else ''}{profile_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 * 100 < percent


def consent_problem(profile: Profile, channel: str, purpose: str) -> str | None:
    """Why this profile may not get this message on this channel, or None."""
    if address_of(profile, channel) is None:
        return f"no {ADDRESS_TRAIT.get(channel, channel)} on the profile"
    consent = profile.traits.get("consent", {})
    if isinstance(consent, dict):
        state = consent.get(channel)
        if state == "suppressed":
            return f"{channel} address suppressed (bounce or complaint)"
        if state == "erased":
            return f"customer erased (GDPR): no {channel} consent on record"
        if channel == "sms" and state == "opted_out":
            # carriers (CTIA) allow no further message after STOP, transactional included
            return "opted out of SMS by STOP"
        if purpose == "marketing" and state in ("unsubscribed", "opted_out"):
            return f"unsubscribed from {channel} marketing"
        if purpose == "marketing" and channel == "sms" and state != "subscribed":
            return "no SMS marketing opt-in"  # SMS marketing needs an explicit opt-in
    return None


class ProviderThrottle:
    """A token bucket per channel plugin, on the injected clock: over the provider's rate a
    message is deferred by the wait (never slept on, never dropped)."""

    def __init__(self) -> None:
        self.buckets: dict[str, tuple[float, datetime]] = {}

    def wait(self, name: str, rate: float | None, now: datetime) -> float:
        """Seconds to wait before the next send on ``name``; 0 takes a token now."""
        if not rate:
            return 0.0
        burst = max(1.0, rate)
        tokens, last = self.buckets.get(name, (burst, now))
        tokens = min(burst, tokens + (now - last).total_seconds() * rate)
        if tokens >= 1:
            self.buckets[name] = (tokens - 1, now)
            return 0.0
        self.buckets[name] = (tokens, now)
        return (1 - tokens) / rate


class SendService:
    def __init__(
        self,
        *,
        settings: Settings,
        clock: Clock,
        profiles: ProfileStore,
        ledger: SendLedger,
        journeys: JourneyStore,
        host: PluginHost,
        credentials: Credentials,
        channel_factory: Any,
        events: EventStore | None = None,
        renderer: TemplateRenderer | None = None,
        transaction: Callable[[], AbstractContextManager[Any]] | None = None,
    ) -> None:
        self.settings = settings
        self.policy = settings.send_policy
        self.clock = clock
        self.profiles = profiles
        self.ledger = ledger
        self.journeys = journeys
        self.events = events
        self.host = host
        self.credentials = credentials
        self.channel_for = channel_factory  # callable(kind) -> Channel
        self.renderer = renderer or TemplateRenderer()
        self.throttle = ProviderThrottle()
        self.transaction = transaction or nullcontext  # the stores' unit of work, where they have one
        self._local = threading.local()  # the deliveries a handle_many on this thread is collecting
        self.tracking: Any = None  # link and open tracking, when the runtime has it
        self.inbound: Any = None  # applies feedback a send returned (a dead push token), when the runtime has it
        # journey -> the model scores it decides on, with this customer's values and explanations
        self.scores_used: Any = None
        # deliveries handed to another process (the simulator's sender): groups of (channel,
        # positions, messages) -> a future of their answers, as ``transmit`` gives them
        self.elsewhere: Callable[[list[tuple[Channel, list[int], list[OutboundMessage]]]], Any] | None = None

    # ------------------------------------------------------------------ entry points
    def choose_channel(self, profile: Profile | None, task: dict[str, Any]) -> tuple[str, str | None, str]:
        """(channel, problem, note): the first channel the customer may be reached on."""
        if profile is None:
            return task["channel"], "profile not found", ""
        problem = consent_problem(profile, task["channel"], task["purpose"])
        fallback = task.get("fallback_channel")
        if problem and fallback:
            second = consent_problem(profile, fallback, task["purpose"])
            if second is None:
                return fallback, None, f" (fallback: {task['channel']}: {problem})"
            problem = f"{problem}; fallback {fallback}: {second}"
        return task["channel"], problem, ""

    def _scores_detail(self, task: dict[str, Any]) -> dict[str, Any]:
        """The model scores behind this message (a journey triggered by a score segment or
        branching on a score), with the customer's values and their explanations, so the
        decision log can say why the model thought so."""
        if self.scores_used is None:
            return {}
        try:
            used = self.scores_used(task["journey"], task["profile_id"])
        except Exception:
            log.exception("reading the scores behind %s failed", task["journey"])
            return {}
        return {"scores": used} if used else {}

    def handle(self, task: dict[str, Any]) -> str:
        """Process one send task from the queue. Returns the ledger status it left."""
        key = ledger_key(task)
        now = self.clock.now()
        profile = self.profiles.get(task["profile_id"])
        channel, problem, note = self.choose_channel(profile, task)
        if (
            not problem
            and task["purpose"] == "marketing"
            and in_holdout(task["profile_id"], self.policy.holdout_percent)
        ):
            problem = f"global holdout ({self.policy.holdout_percent:g}% control group gets no marketing)"
        journey_holdout = float(task.get("holdout_percent") or 0)
        if (
            not problem
            and task["purpose"] == "marketing"
            and in_holdout(task["profile_id"], journey_holdout, salt=task["journey"])
        ):
            problem = f"journey holdout ({journey_holdout:g}% of {task['journey']}'s audience is its control group)"
        if not problem:
            # a missing or misconfigured channel fails here, before the claim, so the task
            # stays on the queue (and reaches the dead-letter queue) instead of being lost
            self.channel_for(channel)
        entry = LedgerEntry(
            key=key,
            profile_id=task["profile_id"],
            journey=task["journey"],
            step=task["step"],
            channel=channel,
            status="skipped" if problem else "sending",
            reason=f"skipped: {problem}" if problem else f"passed consent{note}",
            created_at=now,
            updated_at=now,
            detail={
                "template": task["template"],
                "purpose": task["purpose"],
                "version": task["version"],
                "entity": task["entity"],
                "priority": task.get("priority", 5),
                **({"variant": task["context"]["variant"]} if task.get("context", {}).get("variant") else {}),
                **self._scores_detail(task),
            },
        )
        if not self.ledger.claim(entry):
            log.info("duplicate send task %s ignored: already in the ledger", message_id(key))
            return "duplicate"
        if problem or profile is None:
            return "skipped"
        return self._policy_then_deliver({**task, "channel": channel, "note": note}, profile, key, attempt=1)

    def handle_timer(self, payload: dict[str, Any]) -> str:
        """A deferred or retried send is due: take it over (once) and go through the policy again."""
        task = payload["task"]
        key = ledger_key(task)
        now = self.clock.now()
        if not self.ledger.transition(key, from_status=payload["from_status"], to_status="sending", at=now):
            return "duplicate"
        profile = self.profiles.get(task["profile_id"])
        problem = "profile not found" if profile is None else consent_problem(profile, task["channel"], task["purpose"])
        if problem or profile is None:
            self.ledger.update(key, status="skipped", reason=f"skipped: {problem}", at=now)
            return "skipped"
        return self._policy_then_deliver(task, profile, key, attempt=int(payload.get("attempt", 1)))

    # ------------------------------------------------------------------ policy
    def _defer(self, task: dict[str, Any], key: str, until: datetime, reason: str, attempt: int) -> str:
        # higher priority fires a little earlier when many wait for the same moment
        due = until + timedelta(seconds=9 - int(task.get("priority", 5)))
        self.ledger.update(
            key,
            status="deferred",
            reason=f"deferred: {reason}",
            at=self.clock.now(),
            detail={"deferred_until": due.isoformat()},
        )
        self.journeys.schedule(
            Timer(
                f"send|{key}|deferred|{due.isoformat()}",
                due,
                {"kind": "send", "task": task, "from_status": "deferred", "attempt": attempt},
            )
        )
        return "deferred"

    def budget_until(self, profile: Profile, now: datetime) -> tuple[datetime, str] | None:
        """When the marketing budget has room again, if it is spent now."""
        sent = sorted(
            e.updated_at
            for e in self.ledger.for_profile(profile.profile_id, sent_after=now - timedelta(days=7))
            if e.detail.get("purpose") == "marketing"
        )
        day = [t for t in sent if t > now - timedelta(days=1)]
        if self.policy.max_marketing_per_day and len(day) >= self.policy.max_marketing_per_day:
            frees = day[len(day) - self.policy.max_marketing_per_day] + timedelta(days=1)
            return frees, f"contact budget ({self.policy.max_marketing_per_day} marketing messages a day)"
        if self.policy.max_marketing_per_week and len(sent) >= self.policy.max_marketing_per_week:
            frees = sent[len(sent) - self.policy.max_marketing_per_week] + timedelta(days=7)
            return frees, f"contact budget ({self.policy.max_marketing_per_week} marketing messages a week)"
        return None

    def quiet_until(self, profile: Profile, now: datetime) -> tuple[datetime, str] | None:
        """The end of the recipient's quiet hours, if it is night where they are."""
        tz_name = str(profile.traits.get("timezone") or self.policy.default_timezone)
        try:
            tz = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError):
            tz, tz_name = ZoneInfo(self.policy.default_timezone), self.policy.default_timezone
        start, end = self.policy.quiet_start_hour, self.policy.quiet_end_hour
        address = profile.traits.get("address")
        country = address.get("country") if isinstance(address, dict) else None
        if isinstance(country, str) and country.upper() in self.policy.country_quiet_hours:
            start, end = self.policy.country_quiet_hours[country.upper()]
        local = now.astimezone(tz)
        hour = local.hour
        quiet = (start <= hour or hour < end) if start > end else (start <= hour < end)
        if not quiet:
            return None
        resume = local.replace(hour=end, minute=0, second=0, microsecond=0)
        if resume <= local:
            resume += timedelta(days=1)
        return resume.astimezone(now.tzinfo), f"quiet hours until {resume:%H:%M} {tz_name}"

    def _policy_then_deliver(self, task: dict[str, Any], profile: Profile, key: str, attempt: int) -> str:
        now = self.clock.now()
        if task["purpose"] == "marketing":
            for check in (self.budget_until, self.quiet_until):
                hit = check(profile, now)
                if hit:
                    return self._defer(task, key, hit[0], hit[1], attempt)
        return self._deliver(task, profile, key, attempt)

    # ------------------------------------------------------------------ delivery
    def context(self, task: dict[str, Any], profile: Profile) -> dict[str, Any]:
        ctx = task.get("context") or {}
        event: dict[str, Any] = dict(ctx.get("matched_properties") or {})
        if not event and ctx.get("trigger_message_id") and self.events is not None:
            trigger = self.events.get(ctx.get("trigger_source", "segment"), ctx["trigger_message_id"])
            if trigger is not None:
                event = dict(trigger.payload.get("properties") or {})
        token = self.credentials.sign("unsubscribe", {"p": profile.profile_id, "c": task["channel"]})
        shop = self.settings.shop
        return {
            "profile": {k: v for k, v in profile.traits.items() if k != "consent" and not k.startswith("_")},
            "shop": {"name": shop.name, "url": shop.url, "currency": shop.currency},
            "event": event,
            "products": event.get("products") or [],
            "unsubscribe_url": f"{self.settings.public_url}/v1/unsubscribe?token={token}",
        }

    def _apply_send_feedback(self, plugin: str, result: SendResult, profile_id: str) -> None:
        """What the send itself revealed (a push service's 410 Gone, a disabled SNS endpoint), applied
        once like inbound feedback; a failure here never changes the send's own outcome."""
        for fb in result.feedback:
            if self.inbound is None:
                log.warning("%s reported %s but no inbound service is wired", plugin, fb.kind)
                return
            try:
                outcome = self.inbound.apply(plugin, fb, profile_id=profile_id)
                log.info("send feedback from %s: %s -> %s", plugin, fb.kind, outcome)
            except Exception:
                log.exception("send feedback from %s (%s) not applied", plugin, fb.kind)

    def _deliver(self, task: dict[str, Any], profile: Profile, key: str, attempt: int) -> str:
        now = self.clock.now()
        channel: Channel = self.channel_for(task["channel"])
        rate = self.policy.provider_rate_per_second.get(channel.name, channel.rate_per_second)
        wait = self.throttle.wait(channel.name, rate, now)
        if wait > 0:
            until = now + timedelta(seconds=wait)
            return self._defer(task, key, until, f"provider throttle ({rate:g}/s on {channel.name})", attempt)
        mid = message_id(key)
        context = self.context(task, profile)
        try:
            subject, text, html = self.renderer.render(task["template"], context)
        except (LiquidError, KeyError) as exc:
            self.ledger.update(key, status="failed", reason=f"failed: template error: {exc}", at=now)
            return "failed"
        if self.tracking is not None:
            meta = {"message_id": mid, "profile_id": profile.profile_id, "key": key, "channel": task["channel"],
                    "journey": task["journey"], "step": task["step"]}
            if task["channel"] == "email":
                text, html = self.tracking.rewrite(text, html, meta)
            elif task["channel"] in ("sms", "push", "messenger"):
                text = self.tracking.shorten(text, meta)
        headers = {}
        if task["channel"] == "email":
            headers = {
                "List-Unsubscribe": f"<{context['unsubscribe_url']}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            }
        message = OutboundMessage(
            message_id=mid,
            channel=task["channel"],
            to=address_of(profile, task["channel"]) or "",
            subject=subject,
            text=text,
            html=html if task["channel"] == "email" else None,
            headers=headers,
            metadata={"journey": task["journey"], "step": task["step"], "profile_id": profile.profile_id,
                      "purpose": task["purpose"]},
        )
        delivery = _Delivery(task, profile, key, attempt, channel, message)
        held = getattr(self._local, "held", None)
        if held is not None:  # handle_many: sent with the others of its wave, then finished
            held.append(delivery)
            return "held"
        self.host.before_send(message)
        try:
            result = channel.send(message)
        except Exception as exc:
            log.exception("channel %s raised", channel.name)
            result = SendResult.failed(f"{type(exc).__name__} in channel plugin", retryable=True)
        return self._finish(delivery, result)

    def _finish(self, delivery: _Delivery, result: SendResult, at: datetime | None = None) -> str:
        """Record what the channel answered (at ``at``, or now): sent, a retry timer, or failed."""
        task, profile, key, attempt, channel, message = (
            delivery.task, delivery.profile, delivery.key, delivery.attempt, delivery.channel, delivery.message)
        mid = message.message_id
        self.host.after_send(message, result)
        self._apply_send_feedback(channel.name, result, profile.profile_id)
        now = at or self.clock.now()
        detail = {"attempt": attempt, "plugin": channel.name, "cost": result.cost_estimate, "message_id": mid}
        if result.ok:
            detail["sent_at"] = now.isoformat()
            reason = f"sent: {task['journey']} step {task['step']} via {channel.name}{task.get('note', '')}"
            self.ledger.update(
                key, status="sent", reason=reason, at=now, provider_message_id=result.provider_message_id, detail=detail
            )
            return "sent"
        if result.retryable and attempt < self.policy.max_attempts:
            delay = result.retry_after_seconds or 60 * 2 ** (attempt - 1)
            due = now + timedelta(seconds=delay)
            self.ledger.update(key, status="retry_wait", reason=f"retrying: {result.error}", at=now, detail=detail)
            self.journeys.schedule(
                Timer(
                    f"send|{key}|retry|{attempt + 1}",
                    due,
                    {"kind": "send", "task": task, "from_status": "retry_wait", "attempt": attempt + 1},
                )
            )
            return "retry_wait"
        self.ledger.update(key, status="failed", reason=f"failed: {result.error}", at=now, detail=detail)
        return "failed"

    def handle_many(self, tasks: list[dict[str, Any]],
                    timers: list[dict[str, Any]] | tuple[()] = ()) -> list[str | Exception]:
        """Several send tasks (a queue batch) and due deferred or retried sends (``timers``,
        already taken): the same outcome as ``handle`` / ``handle_timer`` on each in turn, but
        the deliveries of different customers go to their channel in one ``send_batch`` (which
        a channel may spread over connections). A customer's sends run in waves, one per wave,
        so the contact budget of the second sees the first (a deferred send before a new one).
        Returns each one's status (tasks, then timers), or the exception that stopped it (that
        one is left to be retried)."""
        return self.start_many(tasks, timers).finish()

    def start_many(self, tasks: list[dict[str, Any]], timers: list[dict[str, Any]] | tuple[()] = (), *,
                   background: Any = None) -> Sending:
        """``handle_many``, but with ``background`` (an executor) the last wave is handed to
        its channels there (or to ``elsewhere``, where set) and recorded when ``finish()`` is
        called on what this returns: the caller goes on meanwhile. Every decision about the
        wave (consent, ledger claim, budget, quiet hours, render) is taken here, at this time;
        the record keeps it."""
        # a customer's deferred send has waited longest: it goes before their new ones
        entries: list[tuple[dict[str, Any], Any, Callable[[dict[str, Any]], str]]] = [
            (p, p["task"].get("profile_id"), self.handle_timer) for p in timers]
        entries += [(t, t.get("profile_id"), self.handle) for t in tasks]
        out: list[str | Exception] = ["" for _ in entries]
        # a customer with several sends here has them in waves, one each; those with one join
        # the last wave (the one a background delivery takes while the caller goes on)
        owners = Counter(owner for _, owner, _ in entries)
        alone = [i for i, (_, owner, _) in enumerate(entries) if owners[owner] == 1]
        pending = [i for i, (_, owner, _) in enumerate(entries) if owners[owner] > 1]
        while pending or alone:
            wave: list[int] = []
            later: list[int] = []
            seen: set[Any] = set()
            for i in pending:
                owner = entries[i][1]
                (later if owner in seen else wave).append(i)
                seen.add(owner)
            if not later:
                wave, alone = sorted(wave + alone), []
            held, index = self._prepare(entries, wave, out)
            groups = self._hand_over(held)
            at = self.clock.now()
            if not later and background is not None and groups:
                future = self.elsewhere(groups) if self.elsewhere else background.submit(self.transmit, groups)
                return Sending(self, out, len(timers), held, index, at, future)
            answers = self.elsewhere(groups).result() if self.elsewhere and groups else self.transmit(groups)
            self._record(held, index, answers, out, at)
            pending = later
        return Sending(self, out, len(timers))

    def _prepare(self, entries: list[tuple[dict[str, Any], Any, Callable[[dict[str, Any]], str]]],
                 wave: list[int], out: list[str | Exception]) -> tuple[list[_Delivery], dict[int, int]]:
        """Run a wave's policy and render: the deliveries it holds for the channels, and for
        each its task's position."""
        # the wave's bookkeeping commits once (where the stores have transactions); a send that
        # fails leaves nothing behind and is tried again whole (run_in_one_commit)
        held: list[_Delivery] = []
        index: dict[int, int] = {}  # position in held -> task
        started = 0  # where the send being prepared began in held

        def units() -> Iterator[Unit]:
            held.clear()
            index.clear()
            for i in wave:
                yield partial(prepare, i), partial(failed, i)

        def prepare(i: int) -> None:
            nonlocal started
            started = before = len(held)
            item, _, run = entries[i]
            out[i] = run(item)
            if len(held) > before:
                index[before] = i

        def failed(i: int, exc: Exception) -> None:  # handed back: this task stays on the queue
            out[i] = exc
            del held[started:]  # what it held, rolled back with its savepoint

        # per thread: the send worker and the timer thread may each be delivering a batch
        self._local.held = held
        try:
            run_in_one_commit(self.transaction, units)
        finally:
            self._local.held = None
        return held, index

    def _hand_over(self, held: list[_Delivery]) -> list[tuple[Channel, list[int], list[OutboundMessage]]]:
        """The held deliveries by channel (their positions and messages), ``before_send`` run."""
        by_channel: dict[int, list[int]] = {}
        for n, delivery in enumerate(held):
            by_channel.setdefault(id(delivery.channel), []).append(n)
        groups = []
        for positions in by_channel.values():
            messages = [held[n].message for n in positions]
            for message in messages:
                self.host.before_send(message)
            groups.append((held[positions[0]].channel, positions, messages))
        return groups

    @staticmethod
    def transmit(groups: list[tuple[Channel, list[int], list[OutboundMessage]]]
                 ) -> list[tuple[list[int], list[SendResult]]]:
        """Each channel's messages in one ``send_batch`` (no transaction is open meanwhile)."""
        answers: list[tuple[list[int], list[SendResult]]] = []
        for channel, positions, messages in groups:
            try:
                results = channel.send_batch(messages)
                if len(results) != len(messages):
                    raise RuntimeError(f"send_batch gave {len(results)} results for {len(messages)} messages")
            except Exception as exc:
                log.exception("channel %s raised", channel.name)
                results = [SendResult.failed(f"{type(exc).__name__} in channel plugin", retryable=True)] * len(
                    messages)
            answers.append((positions, results))
        return answers

    def _record(self, held: list[_Delivery], index: dict[int, int],
                answers: list[tuple[list[int], list[SendResult]]], out: list[str | Exception], at: datetime) -> None:
        """What the channels answered, in the ledger as of ``at`` (when the wave was prepared)."""
        def units() -> Iterator[Unit]:
            for positions, results in answers:
                for n, result in zip(positions, results, strict=True):
                    yield partial(finish, n, result), partial(failed, n)

        def finish(n: int, result: SendResult) -> None:
            out[index[n]] = self._finish(held[n], result, at)

        def failed(n: int, exc: Exception) -> None:  # as above
            out[index[n]] = exc

        run_in_one_commit(self.transaction, units)
