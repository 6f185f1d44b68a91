"""Authoring: create, update, pause and delete journeys and templates; dry runs; previews.

Definitions are stored as documents in the blob store (``config/journeys/<name>/<version>.json``,
``config/templates/<name>[.<locale>].json``, ``config/journeys/_state.json`` for paused and
deleted names), so both runtimes keep them the same way and every worker loads them.
A journey is saved only if it validates; a new definition needs a new version, and the
old versions stay loaded so that customers in flight finish on the version they entered.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from liquid.exceptions import LiquidError

from chalicelib.errors import BadRequest, NotFound
from chalicelib.journey_model import (
    BranchStep,
    ExitStep,
    Journey,
    SendStep,
    SplitStep,
    UpdateProfileStep,
    WaitForStep,
    WaitStep,
    dump_journey,
    load_journey,
)
from chalicelib.plugin_api import OutboundMessage
from chalicelib.ports import BlobStore, Profile
from chalicelib.services.journeys import JourneyEngine, JourneyRegistry, split_variant
from chalicelib.services.rules import evaluate
from chalicelib.services.send import SendService
from chalicelib.services.templates import Template

STATE = "config/journeys/_state.json"


def load_stored(registry: JourneyRegistry, blobs: BlobStore) -> None:
    """Add the stored journeys (every version) and the paused / deleted state to a registry."""
    stored: dict[str, list[Journey]] = {}
    for key in blobs.list("config/journeys/"):
        if key == STATE:
            continue
        raw = blobs.get(key)
        if raw:
            journey = load_journey(json.loads(raw), key)
            stored.setdefault(journey.name, []).append(journey)
    state = json.loads(blobs.get(STATE) or b"{}")
    for name, versions in stored.items():
        for journey in sorted(versions, key=lambda j: j.version):
            registry.versions.setdefault(name, {})[journey.version] = journey
        registry.current[name] = state.get("current", {}).get(name) or max(v.version for v in versions)
    registry.paused |= set(state.get("paused", []))
    for name in state.get("deleted", []):
        registry.remove(name)


def load_templates(send: SendService, blobs: BlobStore) -> None:
    for key in blobs.list("config/templates/"):
        raw = blobs.get(key)
        if raw:
            send.renderer.add(Template(**json.loads(raw)))


class Authoring:
    def __init__(self, engine: JourneyEngine, sender: SendService, blobs: BlobStore) -> None:
        self.engine = engine
        self.registry = engine.registry
        self.sender = sender
        self.blobs = blobs

    # ------------------------------------------------------------------ journeys
    def _state(self) -> dict[str, Any]:
        return json.loads(self.blobs.get(STATE) or b"{}")

    def _save_state(self, state: dict[str, Any]) -> None:
        self.blobs.put(STATE, json.dumps(state).encode(), content_type="application/json")

    def list_journeys(self) -> list[dict[str, Any]]:
        out = []
        for name, version in sorted(self.registry.current.items()):
            j = self.registry.versions[name][version]
            out.append(
                {
                    "name": name,
                    "version": version,
                    "description": j.description,
                    "enabled": j.enabled,
                    "paused": name in self.registry.paused,
                    "versions": sorted(self.registry.versions[name]),
                    "trigger": j.trigger.model_dump(mode="json", exclude_none=True, exclude_defaults=True),
                }
            )
        return out

    def get_journey(self, name: str) -> Journey:
        journey = self.registry.get(name)
        if journey is None:
            raise NotFound(f"no journey {name!r}", field="name")
        return journey

    def save_journey(self, text: str | bytes, name: str | None = None, source: str = "body") -> Journey:
        journey = load_journey(text, source)
        if name is not None and journey.name != name:
            raise BadRequest(f"the definition is named {journey.name!r}, not {name!r}", field="name")
        existing = self.registry.versions.get(journey.name, {}).get(journey.version)
        if existing is not None and existing != journey:
            raise BadRequest(
                f"journey {journey.name!r} version {journey.version!r} exists with other steps; give the change "
                "a new version (customers in flight stay on theirs)",
                field="version",
            )
        self.blobs.put(
            f"config/journeys/{journey.name}/{journey.version}.json",
            dump_journey(journey).encode(),
            content_type="application/json",
        )
        self.registry.add(journey)
        state = self._state()
        state.setdefault("current", {})[journey.name] = journey.version
        state["deleted"] = [n for n in state.get("deleted", []) if n != journey.name]
        self._save_state(state)
        self.engine.schedule_broadcasts()
        return journey

    def pause(self, name: str, paused: bool) -> None:
        self.get_journey(name)
        state = self._state()
        names = set(state.get("paused", []))
        names = names | {name} if paused else names - {name}
        state["paused"] = sorted(names)
        self._save_state(state)
        if paused:
            self.registry.paused.add(name)
        else:
            self.registry.paused.discard(name)

    def delete(self, name: str) -> None:
        self.get_journey(name)
        state = self._state()
        state["deleted"] = sorted(set(state.get("deleted", [])) | {name})
        self._save_state(state)
        self.registry.remove(name)

    # ------------------------------------------------------------------ dry run
    def dry_run(
        self, name: str, profile_id: str, start: datetime | None = None, entity: str = "-"
    ) -> list[dict[str, Any]]:
        """What the journey would do for one customer from now, without sending or writing."""
        journey = self.get_journey(name)
        profile = self.sender.profiles.get(profile_id)
        if profile is None:
            raise NotFound(f"no profile {profile_id!r}", field="profile_id")
        at = start or self.engine.clock.now()
        plan: list[dict[str, Any]] = []
        sent_at: list[datetime] = []
        index = 0
        for _ in range(100):
            if index >= len(journey.steps):
                plan.append({"at": at.isoformat(), "step": "-", "action": "complete"})
                break
            step = journey.steps[index]
            target = "next"
            match step:
                case SendStep():
                    plan.append(self._plan_send(journey, step, profile, entity, at, sent_at))
                    target = step.then
                case WaitStep():
                    due = self.engine.wait_until(step, profile, at)
                    plan.append({"at": at.isoformat(), "step": step.id, "action": "wait", "until": due.isoformat()})
                    at = due
                case WaitForStep():
                    plan.append(
                        {
                            "at": at.isoformat(),
                            "step": step.id,
                            "action": "wait_for",
                            "reason": f"waits up to {step.timeout_hours} h for {step.event}: if it comes, "
                            f"goes to {step.on_event}; this plan assumes it does not",
                        }
                    )
                    at += timedelta(hours=step.timeout_hours)
                    target = step.on_timeout
                case BranchStep():
                    ok = evaluate(step.if_, self.engine.facts(profile, step.if_))
                    target = step.then if ok else step.else_
                    plan.append(
                        {
                            "at": at.isoformat(),
                            "step": step.id,
                            "action": "branch",
                            "reason": f"condition {'holds' if ok else 'does not hold'}: goes to {target}",
                        }
                    )
                case SplitStep():
                    variant = split_variant(profile.profile_id, journey.name, step.id, step.variants)
                    target = step.goto.get(variant, "next")
                    plan.append({"at": at.isoformat(), "step": step.id, "action": "split", "variant": variant})
                case UpdateProfileStep():
                    plan.append({"at": at.isoformat(), "step": step.id, "action": "update_profile", "set": step.set})
                case ExitStep():
                    target = "exit"
            if target == "exit":
                plan.append({"at": at.isoformat(), "step": step.id, "action": "exit"})
                break
            if target == "end":
                index = len(journey.steps)
            elif target == "next":
                index += 1
            else:
                index = journey.index(target)
        return plan

    def _plan_send(
        self, journey: Journey, step: SendStep, profile: Profile, entity: str, at: datetime, sent_at: list[datetime]
    ) -> dict[str, Any]:
        task = {
            "profile_id": profile.profile_id,
            "journey": journey.name,
            "version": journey.version,
            "step": step.id,
            "entity": entity,
            "channel": step.channel,
            "fallback_channel": step.fallback_channel,
            "template": step.template,
            "purpose": step.purpose,
            "priority": step.priority,
        }
        channel, problem, note = self.sender.choose_channel(profile, task)
        item: dict[str, Any] = {
            "at": at.isoformat(),
            "step": step.id,
            "action": "send",
            "channel": channel,
            "template": step.template,
        }
        if problem:
            return {**item, "decision": "skipped", "reason": problem}
        when, reasons = at, []
        if step.purpose == "marketing":
            recent = [t for t in sent_at if t > when - timedelta(days=1)]
            if len(recent) >= self.sender.policy.max_marketing_per_day:
                when = recent[0] + timedelta(days=1)
                reasons.append("contact budget")
            quiet = self.sender.quiet_until(profile, when)
            if quiet:
                when = quiet[0]
                reasons.append(quiet[1])
            sent_at.append(when)
        try:
            subject, _, _ = self.sender.renderer.render(
                step.template, self.sender.context({**task, "channel": channel}, profile)
            )
        except (LiquidError, KeyError) as exc:
            return {**item, "decision": "fails", "reason": f"template error: {exc}"}
        decision = "deferred" if reasons else "sent"
        return {
            **item,
            "at": when.isoformat(),
            "decision": decision,
            "subject": subject,
            "reason": ("deferred: " + "; ".join(reasons)) if reasons else f"would send{note}",
        }

    # ------------------------------------------------------------------ broadcasts
    def broadcast(self, name: str, members: list[str]) -> int:
        journey = self.get_journey(name)
        if not journey.trigger.broadcast:
            raise BadRequest(f"journey {name!r} is not a broadcast (its trigger is not broadcast: true)", field="name")
        entered = 0
        for profile_id in members:
            profile = self.sender.profiles.get(profile_id)
            if profile is not None and self.engine.enter(journey, profile, "-", {"broadcast": name}):
                entered += 1
        return entered

    # ------------------------------------------------------------------ templates
    def save_template(self, name: str, data: Any) -> Template:
        if not isinstance(data, dict):
            raise BadRequest("a template is an object with subject, text and optionally html and locale", field="body")
        unknown = set(data) - {"subject", "text", "html", "locale"}
        if unknown:
            raise BadRequest(f"unknown field {sorted(unknown)[0]!r}", field=sorted(unknown)[0])
        for required in ("subject", "text"):
            if not isinstance(data.get(required), str) or not data[required]:
                raise BadRequest(f"{required} is required", field=required)
        template = Template(
            name=name, subject=data["subject"], text=data["text"], html=data.get("html"), locale=data.get("locale")
        )
        self.sender.renderer.add(template)  # refuses a syntax error here, not at send time
        self.blobs.put(
            f"config/templates/{template.key}.json",
            json.dumps(
                {
                    "name": name,
                    "subject": template.subject,
                    "text": template.text,
                    "html": template.html,
                    "locale": template.locale,
                }
            ).encode(),
            content_type="application/json",
        )
        return template

    def preview(self, name: str, profile_id: str, channel: str = "email") -> dict[str, Any]:
        profile = self.sender.profiles.get(profile_id)
        if profile is None:
            raise NotFound(f"no profile {profile_id!r}", field="profile_id")
        task = {"profile_id": profile_id, "channel": channel, "context": {}}
        try:
            subject, text, html = self.sender.renderer.render(name, self.sender.context(task, profile))
        except KeyError as exc:
            raise NotFound(f"no template {name!r}", field="name") from exc
        except LiquidError as exc:
            raise BadRequest(f"template {name!r} cannot render for this profile: {exc}", field="name") from exc
        return {"subject": subject, "text": text, "html": html}

    def test_send(self, name: str, profile_id: str, to: str, channel: str = "email") -> dict[str, Any]:
        """Send one rendered message as the named profile would get it, to a tester's address."""
        rendered = self.preview(name, profile_id, channel)
        message = OutboundMessage(
            message_id=f"test-{name}-{profile_id}-{int(self.engine.clock.now().timestamp())}",
            channel=channel,
            to=to,
            subject=f"[TEST] {rendered['subject']}",
            text=rendered["text"],
            html=rendered["html"] if channel == "email" else None,
            metadata={"test": "true"},
        )
        result = self.sender.channel_for(channel).send(message)
        return {"ok": result.ok, "provider_message_id": result.provider_message_id, "error": result.error}
