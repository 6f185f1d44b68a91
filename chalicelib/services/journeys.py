"""The journey engine: enters customers into journeys and walks them through the steps.

Exactly-once by construction:
- entering is a conditional write keyed on (profile, journey, entity[#run]), so a
  duplicate event cannot start a journey twice;
- every wait is a timer, and a timer fires once (``take`` is conditional); a
  ``wait_for`` races its event against its timeout by both trying to take the same timer;
- each send is a task whose ledger key (profile, journey, step, entity#run) is claimed
  once by the send policy.

Customers in flight stay on the version they entered: states record it and the
registry keeps every version.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chalicelib.clock import Clock, iso, parse_iso
from chalicelib.journey_model import (
    CATALOG_EVENTS,
    BranchStep,
    ExitStep,
    Journey,
    SendStep,
    SplitStep,
    UpdateProfileStep,
    WaitForStep,
    WaitStep,
)
from chalicelib.ports import EventStore, JourneyState, JourneyStore, Profile, ProfileStore, Queue, StoredEvent, Timer
from chalicelib.services.identity import IdentityResolver
from chalicelib.services.journey_library import BUILT_IN_JOURNEYS
from chalicelib.services.rules import Facts, evaluate, needs_events

log = logging.getLogger("omnicast.journeys")
SEND_QUEUE = "send"
ACTIVE = ("active", "waiting", "waiting_event")
MAX_STEPS_PER_RUN = 100  # a branch loop must not spin forever


class _AlreadyEntered(Exception):
    """The run a new entry would start is stored already (a duplicate trigger, a retry)."""


def lookup(payload: dict[str, Any], path: str | None) -> Any:
    if not path:
        return None
    node: Any = payload
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def event_name(event: StoredEvent) -> str:
    """The name journeys know an event by: "identify", or a track call's event name."""
    return "identify" if event.type == "identify" else (event.event or event.type)


def entities(value: Any) -> list[str]:
    """The entities a property names: each member of a list, or the one value (none if empty)."""
    return list(dict.fromkeys(str(v) for v in (value if isinstance(value, list) else [value]) if v not in (None, "")))


def matches_entity(payload: dict[str, Any], path: str | None, entity: str) -> bool:
    """Does the event name this journey's entity? (A list property matches any member.)"""
    if not path:
        return True
    value = lookup(payload, path)
    if isinstance(value, list):
        return entity in (str(v) for v in value)
    return value is not None and str(value) == entity


def split_variant(profile_id: str, journey: str, step: str, weights: dict[str, float]) -> str:
    """Deterministic: the same customer always lands in the same variant of a split."""
    digest = hashlib.sha256(f"{profile_id}|{journey}|{step}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * sum(weights.values())
    for name, weight in weights.items():
        point -= weight
        if point < 0:
            return name
    return next(reversed(weights))


def local_time(profile: Profile, default_tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(str(profile.traits.get("timezone") or default_tz))
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(default_tz)


class JourneyRegistry:
    """Every version of every journey; the current, enabled ones trigger."""

    def __init__(self, journeys: list[Journey] | None = None) -> None:
        self.versions: dict[str, dict[str, Journey]] = {}
        self.current: dict[str, str] = {}
        self.paused: set[str] = set()
        self._awaited: tuple[int, frozenset[str]] | None = None
        for j in BUILT_IN_JOURNEYS if journeys is None else journeys:
            self.add(j)

    def add(self, journey: Journey) -> None:
        self.versions.setdefault(journey.name, {})[journey.version] = journey
        self.current[journey.name] = journey.version

    def awaited_events(self) -> frozenset[str]:
        """Event names that can end or wake a run in flight (``exit_on`` and ``wait_for``,
        every version): any other event cannot touch a customer's journey states."""
        count = sum(len(v) for v in self.versions.values())  # versions are only ever added
        if self._awaited is None or self._awaited[0] != count:
            names = set()
            for versions in self.versions.values():
                for journey in versions.values():
                    names |= {rule.event for rule in journey.exit_on}
                    names |= {step.event for step in journey.steps if isinstance(step, WaitForStep)}
            self._awaited = (count, frozenset(names))
        return self._awaited[1]

    def get(self, name: str, version: str | None = None) -> Journey | None:
        versions = self.versions.get(name, {})
        return versions.get(version or self.current.get(name, ""))

    def remove(self, name: str) -> None:
        """Stop triggering; versions stay so that customers in flight can finish."""
        self.current.pop(name, None)

    def active(self) -> list[Journey]:
        out = []
        for name, version in self.current.items():
            journey = self.versions[name][version]
            if journey.enabled and name not in self.paused:
                out.append(journey)
        return out


class JourneyEngine:
    def __init__(
        self,
        store: JourneyStore,
        queue: Queue,
        clock: Clock,
        profiles: ProfileStore | None = None,
        events: EventStore | None = None,
        registry: JourneyRegistry | None = None,
        default_timezone: str = "UTC",
        scores: Any = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.clock = clock
        self.profiles = profiles
        self.events = events
        self.registry = registry or JourneyRegistry()
        self.default_timezone = default_timezone
        self.scores = scores  # callable(profile_id) -> dict[str, float], once models exist
        self.bandit: Any = None  # BanditSplits: variants of `mode: bandit` splits, when the runtime has it

    def schedule_broadcasts(self) -> int:
        """A timer for each scheduled broadcast still ahead (conditional: scheduling twice is harmless)."""
        n = 0
        for journey in self.registry.active():
            at = journey.trigger.at
            if journey.trigger.broadcast and at is not None and at > self.clock.now():
                n += self.store.schedule(
                    Timer(
                        timer_id=f"broadcast|{journey.name}|{journey.version}|{iso(at)}",
                        due_at=at,
                        payload={
                            "kind": "journey_broadcast",
                            "journey": journey.name,
                            "segment": journey.trigger.segment,
                        },
                    )
                )
        return n

    # ------------------------------------------------------------------ facts
    def facts(self, profile: Profile, rule: Any) -> Facts:
        events = []
        if rule is not None and needs_events(rule) and self.events is not None:
            events = self.events.for_profile(profile.profile_id, limit=1000)
        score = self.scores
        return Facts(profile, events, (lambda: score(profile.profile_id)) if score else None, self.clock.now())

    # ------------------------------------------------------------------ events
    def on_event(self, event: StoredEvent, profile: Profile) -> list[str]:
        """Exits, wait_for matches and triggers for one new event. Returns journeys entered."""
        name = event_name(event)
        self._exits_and_waits(name, event, profile)
        entered = []
        for journey in self.registry.active():
            if journey.trigger.event != name:
                audience = journey.trigger.audience
                if audience is not None and audience.did == name:
                    self._join_audience(journey, event, profile)
                continue
            if journey.trigger.condition is not None and not evaluate(
                journey.trigger.condition, self.facts(profile, journey.trigger.condition)
            ):
                continue
            entity = "-"
            if journey.trigger.entity:
                value = lookup(event.payload, journey.trigger.entity)
                if value in (None, ""):
                    continue
                entity = str(value)
            data = {"trigger_message_id": event.message_id, "trigger_source": event.source}
            if self.enter(journey, profile, entity, data):
                entered.append(journey.name)
        if event.type == "identify":
            self._schedule_date_triggers(profile)
        return entered

    def on_segment(self, profile: Profile, segment: str, entered: bool) -> list[str]:
        if not entered:
            return []
        out = []
        for journey in self.registry.active():
            if journey.trigger.segment_entered == segment:
                if journey.trigger.condition is None or evaluate(
                    journey.trigger.condition, self.facts(profile, journey.trigger.condition)
                ):
                    if self.enter(journey, profile, "-", {"segment": segment}):
                        out.append(journey.name)
        return out

    def _exits_and_waits(self, name: str, event: StoredEvent, profile: Profile) -> None:
        if name not in self.registry.awaited_events():
            return  # most events (page views) end and wake nothing: no read of the live states
        for state in self.store.for_profile(profile.profile_id, statuses=ACTIVE):
            journey = self.registry.get(state.journey, state.version)
            if journey is None:
                continue
            base_entity = state.entity.split("#", 1)[0]
            for rule in journey.exit_on:
                if rule.event == name and matches_entity(event.payload, rule.entity, base_entity):
                    state.status = "exited"
                    state.data = {
                        **state.data,
                        "exit_reason": f"{name} ({event.message_id})",
                        "exited_at": iso(self.clock.now()),
                    }
                    self.store.put(state)
                    break
            else:
                wait = state.data.get("wait_for")
                if state.status == "waiting_event" and wait and wait["event"] == name:
                    if matches_entity(event.payload, wait.get("entity"), base_entity):
                        self._event_arrived(journey, state, event)

    def _event_arrived(self, journey: Journey, state: JourneyState, event: StoredEvent) -> None:
        wait = state.data["wait_for"]
        if self.store.take(wait["timer_id"]):  # we beat the timeout: the event path runs
            step = journey.steps[journey.index(wait["step"])]
            assert isinstance(step, WaitForStep)
            state.status = "active"
            state.data = {
                **state.data,
                "wait_for": None,
                "matched_event": event.message_id,
                "matched_properties": event.payload.get("properties") or {},
            }
            self._goto(journey, state, journey.index(step.id), step.on_event)

    # ------------------------------------------------------------------ audiences
    @staticmethod
    def _audience_key(journey: str, entity: str) -> str:
        return f"audience|{journey}|{entity}"

    def _join_audience(self, journey: Journey, event: StoredEvent, profile: Profile) -> None:
        """The customer did what a catalog-triggered journey's audience did (viewed this
        product): one row per (journey, entity, customer), its time the latest such event. The
        journey starts only if the catalog event comes (the price drops) within the window: no
        run, wait or timer per view."""
        audience = journey.trigger.audience
        assert audience is not None
        value = lookup(event.payload, audience.entity or journey.trigger.entity)
        for entity in entities(value):
            self.store.put(
                JourneyState(
                    profile_id=self._audience_key(journey.name, entity),
                    journey=profile.profile_id,
                    entity="-",
                    version=journey.version,
                    step="-",
                    status="active",
                    entered_at=self.clock.now(),
                )
            )

    def _exited_since(self, journey: Journey, profile_id: str, entity: str, since: datetime) -> str | None:
        """An ``exit_on`` event of the customer's since ``since`` (bought after viewing): its name."""
        if self.events is None or not journey.exit_on:
            return None
        for event in self.events.for_profile(profile_id, limit=1000, since=since):
            name = event_name(event)
            for rule in journey.exit_on:
                if rule.event == name and matches_entity(event.payload, rule.entity, entity):
                    return name
        return None

    def _start_for_audience(self, journey: Journey, event: StoredEvent) -> int:
        """A catalog event starts ``journey`` for its audience: each customer who did the
        audience's event on this entity within the window, has not done an ``exit_on`` event
        since, and meets the condition. Entering is conditional, so a repeated catalog
        event starts nothing twice."""
        audience = journey.trigger.audience
        assert audience is not None
        value = lookup(event.payload, journey.trigger.entity)
        since = self.clock.now() - timedelta(days=audience.within_days)
        started = 0
        for entity in entities(value):
            for member in self.store.for_profile(self._audience_key(journey.name, entity)):
                if member.entered_at < since:
                    continue
                profile = self._surviving(member.journey)
                if profile is None or self._exited_since(journey, profile.profile_id, entity, member.entered_at):
                    continue
                condition = journey.trigger.condition
                if condition is not None and not evaluate(condition, self.facts(profile, condition)):
                    continue
                data = {"trigger_message_id": event.message_id, "trigger_source": event.source,
                        "audience": f"{audience.did} at {iso(member.entered_at)}"}
                started += self.enter(journey, profile, entity, data)
        return started

    def on_catalog_event(self, event: StoredEvent) -> int:
        """Fan a catalog event out to the customers waiting for it and to the audiences of the
        journeys it starts. Returns how many runs continued or started."""
        woken = 0
        for journey in self.registry.active():
            if journey.trigger.event == event.event and journey.trigger.audience is not None:
                woken += self._start_for_audience(journey, event)
        props = event.payload.get("properties") or {}
        keys = {str(props.get("product_id"))} | {str(c) for c in props.get("categories") or []}
        for key in keys:
            for watcher in self.store.for_profile(f"watch|{event.event}|{key}"):
                if watcher.status != "active":
                    continue
                profile_id, journey_name, run_entity = watcher.journey.split("|", 2)
                state = self.store.get(profile_id, journey_name, run_entity)
                watcher.status = "done"
                self.store.put(watcher)
                if state is None or state.status != "waiting_event" or not state.data.get("wait_for"):
                    continue
                waiting = self.registry.get(state.journey, state.version)
                if waiting is not None and state.data["wait_for"]["event"] == event.event:
                    before = state.status
                    self._event_arrived(waiting, state, event)
                    woken += state.status != before
        return woken

    # ------------------------------------------------------------------ entering
    def enter(self, journey: Journey, profile: Profile, entity: str, data: dict[str, Any]) -> bool:
        reentry = journey.reentry
        key = "-" if reentry == "once" else entity
        if reentry in ("once", "once_per_entity"):
            run_key = key
        else:
            last = self.store.last_run(profile.profile_id, journey.name, key)
            if last is not None:
                if last.status in ACTIVE:
                    return False  # re-entry starts only after the previous run ended
                if isinstance(reentry, int) and self.clock.now() - last.entered_at < timedelta(days=reentry):
                    return False
                run_key = f"{key}#{int(last.entity.partition('#')[2] or 1) + 1}"
            else:
                run_key = key
        state = JourneyState(
            profile_id=profile.profile_id,
            journey=journey.name,
            entity=run_key,
            version=journey.version,
            step=journey.steps[0].id,
            status="active",
            entered_at=self.clock.now(),
            data=data,
        )
        if isinstance(journey.steps[0], WaitStep | WaitForStep):
            # nothing happens before the first step's wait is written: that write is the entry
            # (a conditional insert, so once), not an insert and then an update of the same run
            try:
                self._run(journey, state, 0, entering=True)
                return True
            except _AlreadyEntered:
                pass
        elif self.store.enter(state):
            self._run(journey, state, 0)
            return True
        existing = self.store.get(profile.profile_id, journey.name, run_key)
        # re-running after a crash: continue only if the run never got past its first step (a
        # wait written without its timer is written again; the timer is created once)
        if existing and existing.step == journey.steps[0].id and existing.status in ACTIVE:
            self._run(journey, existing, 0)
        return False

    def _schedule_date_triggers(self, profile: Profile) -> None:
        """Birthdays, appointments: a timer per (profile, journey, date) that enters once."""
        for journey in self.registry.active():
            trait = journey.trigger.date_trait
            value = profile.traits.get(trait) if trait else None
            if not value:
                continue
            due = self._date_due(journey, profile, str(value))
            if due is None:
                continue
            self.store.schedule(
                Timer(
                    timer_id=f"date|{profile.profile_id}|{journey.name}|{iso(due)}",
                    due_at=due,
                    payload={
                        "kind": "journey_date",
                        "profile_id": profile.profile_id,
                        "journey": journey.name,
                        "entity": f"{trait}:{due.date().isoformat()}",
                    },
                )
            )

    def _date_due(self, journey: Journey, profile: Profile, value: str) -> datetime | None:
        trigger = journey.trigger
        tz = local_time(profile, self.default_timezone)
        try:
            when = parse_iso(value) if "T" in value else datetime.fromisoformat(value).replace(tzinfo=tz)
        except ValueError:
            return None
        now = self.clock.now()
        if trigger.annual:
            local_now = now.astimezone(tz)
            for year in (local_now.year, local_now.year + 1):
                try:
                    candidate = when.astimezone(tz).replace(year=year)
                except ValueError:  # 29 February
                    candidate = when.astimezone(tz).replace(year=year, day=28)
                due = self._at_local(candidate + timedelta(hours=trigger.offset_hours), trigger.at_local, tz)
                if due > now:
                    return due
            return None
        due = self._at_local(when + timedelta(hours=trigger.offset_hours), trigger.at_local, tz)
        return due if due > now else None

    @staticmethod
    def _at_local(when: datetime, at_local: str | None, tz: ZoneInfo) -> datetime:
        if not at_local:
            return when
        hour, minute = (int(x) for x in at_local.split(":"))
        return when.astimezone(tz).replace(hour=hour, minute=minute, second=0, microsecond=0)

    # ------------------------------------------------------------------ stepping
    def _goto(self, journey: Journey, state: JourneyState, index: int, target: str) -> None:
        if target == "next":
            self._run(journey, state, index + 1)
        elif target == "end":
            self._run(journey, state, len(journey.steps))
        elif target == "exit":
            state.status = "exited"
            state.data = {**state.data, "exit_reason": f"step {journey.steps[index].id}"}
            self.store.put(state)
        else:
            self._run(journey, state, journey.index(target))

    def _profile(self, profile_id: str) -> Profile | None:
        return self.profiles.get(profile_id) if self.profiles else None

    def _surviving(self, profile_id: str) -> Profile | None:
        """The profile, or the one it was merged into since (a visitor who viewed, then signed
        in): the send, its budget and its consent are the surviving customer's."""
        if self.profiles is None:
            return None
        read: dict[str, Profile | None] = {}
        survivor = IdentityResolver(self.profiles, self.clock).canonical(profile_id, read)
        return read.get(survivor) or self._profile(survivor)

    def _write_wait(self, state: JourneyState, entering: bool) -> None:
        """A run's state as it starts to wait; on entry, the run's first write, made once."""
        if not entering:
            self.store.put(state)
        elif not self.store.enter(state):
            raise _AlreadyEntered

    def _run(self, journey: Journey, state: JourneyState, index: int, *, entering: bool = False) -> None:
        """Steps from ``index`` on. ``entering``: the run is new and its first step waits, so
        its state is not stored yet (``_write_wait`` inserts it)."""
        for _ in range(MAX_STEPS_PER_RUN):
            if index >= len(journey.steps):
                state.status = "completed"
                state.data = {**state.data, "completed_at": iso(self.clock.now())}
                self.store.put(state)
                return
            step = journey.steps[index]
            state.step = step.id
            match step:
                case SendStep():
                    # a step visited again (a loop back to a wait_for) is a new message: number it
                    visits = {**state.data.get("visits", {})}
                    visits[step.id] = visits.get(step.id, 0) + 1
                    state.data = {**state.data, "visits": visits}
                    n = visits[step.id]
                    self.queue.send(
                        SEND_QUEUE,
                        {
                            "profile_id": state.profile_id,
                            "journey": journey.name,
                            "version": state.version,
                            "step": step.id,
                            "entity": state.entity if n == 1 else f"{state.entity}~{n}",
                            "channel": step.channel,
                            "fallback_channel": step.fallback_channel,
                            "template": step.template,
                            "purpose": step.purpose,
                            "priority": step.priority,
                            **({"holdout_percent": journey.holdout_percent} if journey.holdout_percent else {}),
                            "context": {
                                k: state.data[k]
                                for k in ("trigger_message_id", "trigger_source", "matched_properties", "variant")
                                if k in state.data
                            },
                        },
                    )
                    if step.then != "next":
                        self._goto(journey, state, index, step.then)
                        return
                    index += 1
                case WaitStep():
                    self._wait(journey, state, step, entering)
                    return
                case WaitForStep():
                    timer_id = f"timeout|{state.profile_id}|{journey.name}|{state.entity}|{step.id}"
                    state.status = "waiting_event"
                    state.data = {
                        **state.data,
                        "wait_for": {"event": step.event, "entity": step.entity, "step": step.id, "timer_id": timer_id},
                    }
                    self._write_wait(state, entering)
                    if step.event in CATALOG_EVENTS:
                        # catalog events belong to no customer: index who waits, by product or category
                        self.store.put(
                            JourneyState(
                                profile_id=f"watch|{step.event}|{state.entity.split('#', 1)[0]}",
                                journey=f"{state.profile_id}|{journey.name}|{state.entity}",
                                entity=step.id,
                                version=state.version,
                                step=step.id,
                                status="active",
                                entered_at=self.clock.now(),
                            )
                        )
                    self.store.schedule(
                        Timer(
                            timer_id,
                            self.clock.now() + timedelta(hours=step.timeout_hours),
                            {
                                "kind": "journey_timeout",
                                "profile_id": state.profile_id,
                                "journey": journey.name,
                                "entity": state.entity,
                                "step": step.id,
                            },
                        )
                    )
                    return
                case BranchStep():
                    profile = self._profile(state.profile_id)
                    ok = profile is not None and evaluate(step.if_, self.facts(profile, step.if_))
                    state.data = {**state.data, f"branch_{step.id}": "then" if ok else "else"}
                    target = step.then if ok else step.else_
                    if target != "next":
                        self._goto(journey, state, index, target)
                        return
                    index += 1
                case SplitStep():
                    variant, why = None, "fixed weights"
                    if step.mode == "bandit" and self.bandit is not None:
                        try:
                            variant, why = self.bandit.choose(journey.name, step, state.profile_id)
                        except Exception:
                            log.exception("bandit split %s.%s failed; fixed weights decide", journey.name, step.id)
                    if variant not in step.variants:
                        variant = split_variant(state.profile_id, journey.name, step.id, step.variants)
                    state.data = {**state.data, "variant": variant, f"split_{step.id}": variant,
                                  f"split_{step.id}_why": why}
                    target = step.goto.get(variant, "next")
                    if target != "next":
                        self._goto(journey, state, index, target)
                        return
                    index += 1
                case UpdateProfileStep():
                    self._update_profile(state.profile_id, step.set)
                    index += 1
                case ExitStep():
                    self._goto(journey, state, index, "exit")
                    return
        log.error("journey %s looped more than %d steps for one customer; stopped", journey.key, MAX_STEPS_PER_RUN)
        state.status = "exited"
        state.data = {**state.data, "exit_reason": "too many steps in one run (a loop?)"}
        self.store.put(state)

    def wait_until(self, step: WaitStep, profile: Profile | None, now: datetime) -> datetime:
        """When a wait that starts at ``now`` ends (a local time is the next one in the customer's zone)."""
        if not step.until_local:
            return now + timedelta(hours=(step.hours or 0) + 24 * (step.days or 0))
        tz = local_time(profile, self.default_timezone) if profile else ZoneInfo(self.default_timezone)
        due = self._at_local(now, step.until_local, tz)
        return due if due > now else self._at_local(now + timedelta(days=1), step.until_local, tz)

    def _wait(self, journey: Journey, state: JourneyState, step: WaitStep, entering: bool = False) -> None:
        # the customer's time zone matters only to a wait until a local time (one read less)
        profile = self._profile(state.profile_id) if step.until_local else None
        due = self.wait_until(step, profile, self.clock.now())
        state.status = "waiting"
        self._write_wait(state, entering)
        self.store.schedule(
            Timer(
                timer_id=f"resume|{state.profile_id}|{journey.name}|{state.entity}|{step.id}",
                due_at=due,
                payload={
                    "kind": "journey_resume",
                    "profile_id": state.profile_id,
                    "journey": journey.name,
                    "entity": state.entity,
                    "after": step.id,
                },
            )
        )

    def _update_profile(self, profile_id: str, values: dict[str, Any]) -> None:
        if self.profiles is None:
            return
        for _ in range(10):
            profile = self.profiles.get(profile_id)
            if profile is None:
                return
            expected = profile.version
            for key, value in values.items():
                profile.traits[key] = iso(self.clock.now()) if value == "{{now}}" else value
            if self.profiles.save(profile, expected):
                return

    # ------------------------------------------------------------------ timers
    def resume(self, payload: dict[str, Any]) -> None:
        """A timer fired (once): a wait ended, a wait_for timed out, or a date came."""
        kind = payload.get("kind", "journey_resume")
        if kind == "journey_date":
            journey = self.registry.get(payload["journey"])
            profile = self._profile(payload["profile_id"])
            if journey is not None and profile is not None and journey in self.registry.active():
                self.enter(journey, profile, payload["entity"], {"date": payload["entity"]})
                if journey.trigger.annual:
                    self._schedule_date_triggers(profile)
            return
        state = self.store.get(payload["profile_id"], payload["journey"], payload["entity"])
        expected = "waiting" if kind == "journey_resume" else "waiting_event"
        if state is None or state.status != expected:
            return  # exited or completed meanwhile
        journey = self.registry.get(state.journey, state.version)
        if journey is None:
            log.warning("journey %s version %s no longer defined", state.journey, state.version)
            state.status = "exited"
            self.store.put(state)
            return
        state.status = "active"
        if kind == "journey_timeout":
            step = journey.steps[journey.index(payload["step"])]
            assert isinstance(step, WaitForStep)
            state.data = {**state.data, "wait_for": None, f"timeout_{step.id}": True}
            self._goto(journey, state, journey.index(step.id), step.on_timeout)
            return
        ids = [s.id for s in journey.steps]
        index = ids.index(payload["after"]) + 1 if payload["after"] in ids else len(ids)
        self._run(journey, state, index)
