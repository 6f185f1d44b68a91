"""Journeys: which customers get which messages, in which order.

A journey is data (a pydantic model, loadable from JSON): a trigger and a list of
steps. Entering is a conditional write keyed on (profile, journey, entity), so a
duplicate event cannot start a journey twice; each step's send is keyed in the send
ledger, so a redelivered step cannot send twice. Waits are timers in the journey store,
which fire once.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.clock import Clock, iso
from chalicelib.ports import JourneyState, JourneyStore, Profile, Queue, StoredEvent, Timer

log = logging.getLogger("omnicast.journeys")
SEND_QUEUE = "send"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Trigger(Strict):
    on: str = Field(description="'identify' or a track event name such as 'Order Completed'")
    requires_traits: list[str] = Field(default_factory=list)
    entity_property: str | None = None  # e.g. "cart_id": one journey per cart


class SendStep(Strict):
    kind: Literal["send"] = "send"
    id: str
    channel: str
    template: str
    purpose: Literal["marketing", "transactional"] = "marketing"


class WaitStep(Strict):
    kind: Literal["wait"] = "wait"
    id: str
    hours: float = Field(gt=0)


Step = Annotated[SendStep | WaitStep, Field(discriminator="kind")]


class Journey(Strict):
    name: str
    version: str = "1"
    description: str = ""
    trigger: Trigger
    steps: list[Step] = Field(min_length=1)
    enabled: bool = True


WELCOME = Journey(
    name="welcome",
    version="1",
    description="Welcome series: a welcome email on the first identify with an email, tips two days later.",
    trigger=Trigger(on="identify", requires_traits=["email"]),
    steps=[
        SendStep(id="welcome_email", channel="email", template="welcome"),
        WaitStep(id="wait_2_days", hours=48),
        SendStep(id="tips_email", channel="email", template="welcome_tips"),
    ],
)

BUILT_IN_JOURNEYS: dict[str, Journey] = {WELCOME.name: WELCOME}


class JourneyEngine:
    def __init__(
        self,
        store: JourneyStore,
        queue: Queue,
        clock: Clock,
        journeys: dict[str, Journey] | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.clock = clock
        self.journeys = dict(BUILT_IN_JOURNEYS if journeys is None else journeys)

    # ------------------------------------------------------------------ triggers
    def on_event(self, event: StoredEvent, profile: Profile) -> list[str]:
        """Enter every journey this event triggers; returns the journeys entered."""
        name = "identify" if event.type == "identify" else event.event
        entered = []
        for journey in self.journeys.values():
            if not journey.enabled or journey.trigger.on != name:
                continue
            if any(not profile.traits.get(t) for t in journey.trigger.requires_traits):
                continue
            entity = "-"
            if journey.trigger.entity_property:
                value = (event.payload.get("properties") or {}).get(journey.trigger.entity_property)
                if value is None:
                    continue
                entity = str(value)
            state = JourneyState(
                profile_id=profile.profile_id,
                journey=journey.name,
                entity=entity,
                version=journey.version,
                step=journey.steps[0].id,
                status="active",
                entered_at=self.clock.now(),
                data={"trigger_message_id": event.message_id},
            )
            if self.store.enter(state):
                entered.append(journey.name)
                self._run(journey, state, 0)
            else:
                # re-running after a crash: continue only if the journey never got past entry
                existing = self.store.get(profile.profile_id, journey.name, entity)
                if existing and existing.status == "active" and existing.step == journey.steps[0].id:
                    self._run(journey, existing, 0)
        return entered

    # ------------------------------------------------------------------ stepping
    def _run(self, journey: Journey, state: JourneyState, index: int) -> None:
        while index < len(journey.steps):
            step = journey.steps[index]
            state.step = step.id
            if isinstance(step, SendStep):
                self.queue.send(
                    SEND_QUEUE,
                    {
                        "profile_id": state.profile_id,
                        "journey": journey.name,
                        "version": state.version,
                        "step": step.id,
                        "entity": state.entity,
                        "channel": step.channel,
                        "template": step.template,
                        "purpose": step.purpose,
                    },
                )
                index += 1
                continue
            due = self.clock.now() + timedelta(hours=step.hours)
            state.status = "waiting"
            self.store.put(state)
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
            return
        state.status = "completed"
        state.data = {**state.data, "completed_at": iso(self.clock.now())}
        self.store.put(state)

    def resume(self, payload: dict[str, Any]) -> None:
        """A wait ended: continue the journey after the step named in the timer."""
        state = self.store.get(payload["profile_id"], payload["journey"], payload["entity"])
        if state is None or state.status != "waiting":
            return
        journey = self.journeys.get(state.journey)
        if journey is None or journey.version != state.version:
            # customers in flight stay on the version they entered; a removed version ends here
            log.warning("journey %s version %s no longer defined", state.journey, state.version)
            state.status = "exited"
            self.store.put(state)
            return
        ids = [s.id for s in journey.steps]
        index = ids.index(payload["after"]) + 1 if payload["after"] in ids else len(ids)
        state.status = "active"
        self._run(journey, state, index)
