"""The send policy and delivery: every message passes here, in this order.

consent → exactly-once ledger claim → quiet hours (deferred, never dropped, in the
recipient's time zone) → render → channel → ledger outcome. Each decision is written to
the send ledger with its reason, which is the customer's decision log.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from liquid.exceptions import LiquidError

from chalicelib.clock import Clock
from chalicelib.config import Settings
from chalicelib.plugin_api import Channel, OutboundMessage, SendResult
from chalicelib.plugin_host import PluginHost
from chalicelib.ports import JourneyStore, LedgerEntry, Profile, ProfileStore, SendLedger, Timer
from chalicelib.services.credentials import Credentials
from chalicelib.services.templates import TemplateRenderer

log = logging.getLogger("omnicast.send")
MAX_ATTEMPTS = 5

# channel kind -> the profile trait holding its address
ADDRESS_TRAIT = {"email": "email", "sms": "phone", "push": "push_token", "messenger": "chat_id"}


def ledger_key(task: dict[str, Any]) -> str:
    return f"{task['profile_id']}|{task['journey']}|{task['step']}|{task['entity']}"


def message_id(key: str) -> str:
    return "m_" + hashlib.sha256(key.encode()).hexdigest()[:24]


def consent_problem(profile: Profile, channel: str, purpose: str) -> str | None:
    """Why this profile may not get this message on this channel, or None."""
    trait = ADDRESS_TRAIT.get(channel, channel)
    if not profile.traits.get(trait):
        return f"no {trait} on the profile"
    consent = profile.traits.get("consent", {})
    if isinstance(consent, dict):
        state = consent.get(channel)
        if state == "suppressed":
            return f"{channel} address suppressed (bounce or complaint)"
        if purpose == "marketing" and state == "unsubscribed":
            return f"unsubscribed from {channel} marketing"
    return None


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
        renderer: TemplateRenderer | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.profiles = profiles
        self.ledger = ledger
        self.journeys = journeys
        self.host = host
        self.credentials = credentials
        self.channel_for = channel_factory  # callable(kind) -> Channel
        self.renderer = renderer or TemplateRenderer()

    # ------------------------------------------------------------------ entry points
    def handle(self, task: dict[str, Any]) -> str:
        """Process one send task from the queue. Returns the ledger status it left."""
        key = ledger_key(task)
        now = self.clock.now()
        profile = self.profiles.get(task["profile_id"])
        channel = task["channel"]
        problem = "profile not found" if profile is None else consent_problem(profile, channel, task["purpose"])
        entry = LedgerEntry(
            key=key,
            profile_id=task["profile_id"],
            journey=task["journey"],
            step=task["step"],
            channel=channel,
            status="skipped" if problem else "sending",
            reason=f"skipped: {problem}" if problem else "passed consent",
            created_at=now,
            updated_at=now,
            detail={
                "template": task["template"],
                "purpose": task["purpose"],
                "version": task["version"],
                "entity": task["entity"],
            },
        )
        if not problem:
            # a missing or misconfigured channel fails here, before the claim, so the task
            # stays on the queue (and reaches the dead-letter queue) instead of being lost
            self.channel_for(channel)
        if not self.ledger.claim(entry):
            log.info("duplicate send task %s ignored: already in the ledger", message_id(key))
            return "duplicate"
        if problem or profile is None:
            return "skipped"
        return self._deliver(task, profile, key, attempt=1)

    def handle_timer(self, payload: dict[str, Any]) -> str:
        """A deferred or retried send is due: take it over (once) and deliver."""
        task = payload["task"]
        key = ledger_key(task)
        now = self.clock.now()
        if not self.ledger.transition(key, from_status=payload["from_status"], to_status="sending", at=now):
            return "duplicate"
        profile = self.profiles.get(task["profile_id"])
        problem = "profile not found" if profile is None else consent_problem(profile, task["channel"], task["purpose"])
        if problem or profile is None:
            self.ledger.update(key, status="skipped", reason=f"skipped: {problem}", at=self.clock.now())
            return "skipped"
        return self._deliver(task, profile, key, attempt=int(payload.get("attempt", 1)))

    # ------------------------------------------------------------------ policy
    def _quiet_until(self, profile: Profile, now: datetime) -> tuple[datetime, str] | None:
        policy = self.settings.send_policy
        tz_name = str(profile.traits.get("timezone") or policy.default_timezone)
        try:
            tz = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError):
            tz, tz_name = ZoneInfo(policy.default_timezone), policy.default_timezone
        local = now.astimezone(tz)
        start, end = policy.quiet_start_hour, policy.quiet_end_hour
        hour = local.hour
        quiet = (start <= hour or hour < end) if start > end else (start <= hour < end)
        if not quiet:
            return None
        resume = local.replace(hour=end, minute=0, second=0, microsecond=0)
        if resume <= local:
            resume += timedelta(days=1)
        return resume.astimezone(now.tzinfo), f"{resume:%H:%M} {tz_name}"

    def _deliver(self, task: dict[str, Any], profile: Profile, key: str, attempt: int) -> str:
        now = self.clock.now()
        if task["purpose"] == "marketing":
            quiet = self._quiet_until(profile, now)
            if quiet:
                due, label = quiet
                self.ledger.update(
                    key,
                    status="deferred",
                    reason=f"deferred: quiet hours until {label}",
                    at=now,
                    detail={"deferred_until": due.isoformat()},
                )
                self.journeys.schedule(
                    Timer(
                        f"send|{key}|quiet|{attempt}",
                        due,
                        {"kind": "send", "task": task, "from_status": "deferred", "attempt": attempt},
                    )
                )
                return "deferred"
        channel: Channel = self.channel_for(task["channel"])
        mid = message_id(key)
        token = self.credentials.sign("unsubscribe", {"p": profile.profile_id, "c": task["channel"]})
        unsubscribe_url = f"{self.settings.public_url}/v1/unsubscribe?token={token}"
        context = {
            "profile": {k: v for k, v in profile.traits.items() if k != "consent" and not k.startswith("_")},
            "shop": {"name": "Omnicast Demo Shop", "url": self.settings.public_url},
            "unsubscribe_url": unsubscribe_url,
        }
        try:
            subject, text, html = self.renderer.render(task["template"], context)
        except (LiquidError, KeyError) as exc:
            self.ledger.update(key, status="failed", reason=f"failed: template error: {exc}", at=now)
            return "failed"
        headers = {}
        if task["channel"] == "email":
            headers = {
                "List-Unsubscribe": f"<{unsubscribe_url}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            }
        message = OutboundMessage(
            message_id=mid,
            channel=task["channel"],
            to=str(profile.traits[ADDRESS_TRAIT.get(task["channel"], task["channel"])]),
            subject=subject,
            text=text,
            html=html,
            headers=headers,
            metadata={"journey": task["journey"], "step": task["step"], "profile_id": profile.profile_id},
        )
        self.host.before_send(message)
        try:
            result = channel.send(message)
        except Exception as exc:
            log.exception("channel %s raised", channel.name)
            result = SendResult.failed(f"{type(exc).__name__} in channel plugin", retryable=True)
        self.host.after_send(message, result)
        now = self.clock.now()
        detail = {"attempt": attempt, "plugin": channel.name, "cost": result.cost_estimate, "message_id": mid}
        if result.ok:
            reason = f"sent: {task['journey']} step {task['step']} via {channel.name}"
            self.ledger.update(
                key, status="sent", reason=reason, at=now, provider_message_id=result.provider_message_id, detail=detail
            )
            return "sent"
        if result.retryable and attempt < MAX_ATTEMPTS:
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
