"""Journey definitions: data (JSON or YAML), validated with errors that name line and field.

A journey::

    name: abandoned_cart
    version: "1"
    trigger: {event: Checkout Started, entity: properties.cart_id}
    reentry: once_per_entity
    exit_on:
      - {event: Order Completed, entity: properties.checkout_id}
    steps:
      - {id: wait_1h, type: wait, hours: 1}
      - {id: remind, type: send, channel: email, template: abandoned_cart, fallback_channel: sms}
      - {id: bought, type: wait_for, event: Order Completed, entity: properties.checkout_id,
         timeout_hours: 24, on_event: exit, on_timeout: next}
      - {id: vip, type: branch, if: {trait: orders_count, op: ">=", value: 3}, then: offer, else: end}
      - {id: offer, type: send, channel: email, template: cart_offer}

Step types: ``wait`` (hours / days, or ``until_local`` "HH:MM" in the customer's time
zone), ``wait_for`` (an event keyed on the journey's entity, with a timeout), ``branch``
(a rule), ``split`` (deterministic random by profile), ``send``, ``update_profile``,
``exit``. ``next``, ``exit`` and ``end`` are reserved step targets.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from chalicelib.errors import BadRequest
from chalicelib.services.rules import parse_rule

RESERVED = ("next", "exit", "end")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _rule(value: Any) -> Any:
    if value is None:
        return None
    try:
        return parse_rule(value, "rule")
    except BadRequest as exc:
        raise ValueError(exc.message) from exc  # pydantic adds where in the journey it is


# events of the catalog, not of a customer: a journey waits for them (wait_for) or they start it
# for an audience (a trigger's ``audience``)
CATALOG_EVENTS = ("Product Back In Stock", "Product Price Dropped", "Product Published")


class Audience(Strict):
    """Who a catalog event starts a journey for: the customers whose own event ``did`` named
    the same entity (this product) in the last ``within_days`` days."""

    did: str = Field(min_length=1)  # "Product Viewed"
    within_days: float = Field(gt=0, le=366)
    entity: str | None = None  # where the customer's event names it (the trigger's entity path by default)


class Trigger(Strict):
    event: str | None = None  # "identify" or a track event name
    segment_entered: str | None = None
    date_trait: str | None = None  # e.g. "birthday" or "appointment_at"
    broadcast: bool = False  # entered by POST /admin/journeys/{name}/broadcast, or at ``at``
    segment: str | None = None  # who a broadcast goes to
    at: datetime | None = None  # a scheduled broadcast: when it starts (UTC or with an offset)
    offset_hours: float = 0  # appointment minus 24 hours: -24
    annual: bool = False  # birthdays: every year on the month and day
    at_local: str | None = Field(default=None, pattern=r"^\d{2}:\d{2}$")
    entity: str | None = None  # a property path naming the entity: "properties.cart_id"
    condition: Any = None
    audience: Audience | None = None  # a catalog event's: who it goes to

    _check = field_validator("condition", mode="before")(classmethod(lambda cls, v: _rule(v)))

    @model_validator(mode="after")
    def _one_kind(self) -> Trigger:
        kinds = [k for k in ("event", "segment_entered", "date_trait", "broadcast") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError("a trigger needs exactly one of event, segment_entered, date_trait, broadcast")
        if self.at is not None and not self.broadcast:
            raise ValueError("at schedules a broadcast: use it with broadcast: true")
        if self.at is not None and self.at.tzinfo is None:
            raise ValueError("at needs a time zone (2026-12-24T08:00:00Z)")
        if self.audience is not None:
            if self.event not in CATALOG_EVENTS:
                raise ValueError(f"an audience goes with a catalog event ({', '.join(CATALOG_EVENTS)})")
            if not self.entity:
                raise ValueError("an audience needs the trigger's entity (properties.product_id)")
        return self


class ExitOn(Strict):
    event: str
    entity: str | None = None  # the property that must equal the journey's entity


class Step(Strict):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")


class WaitStep(Step):
    type: Literal["wait"]
    hours: float | None = Field(default=None, gt=0)
    days: float | None = Field(default=None, gt=0)
    until_local: str | None = Field(default=None, pattern=r"^\d{2}:\d{2}$")

    @model_validator(mode="after")
    def _one(self) -> WaitStep:
        if sum(x is not None for x in (self.hours, self.days, self.until_local)) != 1:
            raise ValueError("a wait needs exactly one of hours, days, until_local")
        return self


class WaitForStep(Step):
    type: Literal["wait_for"]
    event: str
    entity: str | None = None  # property path that must equal the journey's entity
    timeout_hours: float = Field(gt=0)
    on_event: str = "next"
    on_timeout: str = "next"


class BranchStep(Step):
    type: Literal["branch"]
    if_: Any = Field(alias="if")
    then: str = "next"
    else_: str = Field(default="next", alias="else")

    _check = field_validator("if_", mode="before")(classmethod(lambda cls, v: _rule(v)))


class SplitStep(Step):
    type: Literal["split"]
    variants: dict[str, float] = Field(min_length=2)  # variant -> weight
    goto: dict[str, str] = Field(default_factory=dict)  # variant -> step id (default: next)
    control: str | None = None  # the variant the others are compared with (default "control", else the first)
    horizon: int | None = Field(default=None, gt=0)  # units per variant before the result is read (fixed horizon)
    mode: Literal["fixed", "bandit"] = "fixed"  # bandit: the bandit model plugin shifts traffic to the winner

    @model_validator(mode="after")
    def _weights(self) -> SplitStep:
        if any(w <= 0 for w in self.variants.values()):
            raise ValueError("split weights must be positive")
        unknown = set(self.goto) - set(self.variants)
        if unknown:
            raise ValueError(f"goto names unknown variants: {sorted(unknown)}")
        if self.control is not None and self.control not in self.variants:
            raise ValueError(f"control {self.control!r} is not one of the variants")
        return self


class SendStep(Step):
    type: Literal["send"]
    channel: str
    template: str
    fallback_channel: str | None = None
    purpose: Literal["marketing", "transactional"] = "marketing"
    priority: int = Field(default=5, ge=0, le=9)  # higher goes first when the budget frees up
    then: str = "next"  # e.g. back to a wait_for, for journeys that repeat


class UpdateProfileStep(Step):
    type: Literal["update_profile"]
    set: dict[str, Any] = Field(min_length=1)


class ExitStep(Step):
    type: Literal["exit"]


AnyStep = Annotated[
    WaitStep | WaitForStep | BranchStep | SplitStep | SendStep | UpdateProfileStep | ExitStep,
    Field(discriminator="type"),
]


class Journey(Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_\-]+$")
    version: str = "1"
    description: str = ""
    enabled: bool = True
    trigger: Trigger
    reentry: Literal["once", "once_per_entity", "always"] | int = "once_per_entity"  # int: days
    exit_on: list[ExitOn] = Field(default_factory=list)
    holdout_percent: float = Field(0.0, ge=0, lt=100)  # this journey's own control group (marketing steps)
    steps: list[AnyStep] = Field(min_length=1)

    @model_validator(mode="after")
    def _targets(self) -> Journey:
        ids = [s.id for s in self.steps]
        dupes = {i for i in ids if ids.count(i) > 1}
        if dupes:
            raise ValueError(f"step ids must be unique: {sorted(dupes)}")
        known = set(ids) | set(RESERVED)
        for step in self.steps:
            targets = []
            if isinstance(step, WaitForStep):
                targets = [step.on_event, step.on_timeout]
            elif isinstance(step, BranchStep):
                targets = [step.then, step.else_]
            elif isinstance(step, SplitStep):
                targets = list(step.goto.values())
            elif isinstance(step, SendStep):
                targets = [step.then]
            for t in targets:
                if t not in known:
                    raise ValueError(f"step {step.id!r} goes to unknown step {t!r}")
        return self

    def index(self, step_id: str) -> int:
        return [s.id for s in self.steps].index(step_id)

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"


# --------------------------------------------------------------------------- loading
def _line_of(node: Any, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the YAML node at ``loc`` (or of its nearest parent)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == str(part)), None)
            if match is None:
                key = next((k for k, _ in node.value if k.value == str(part)), None)
                return key.start_mark.line + 1 if key is not None else line
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            continue  # discriminator tags in the path ("send") have no node of their own
        line = node.start_mark.line + 1
    return line


def load_journey(text: str | bytes | dict[str, Any], source: str = "journey") -> Journey:
    """Parse JSON or YAML into a Journey; errors say ``source:line: field: problem``."""
    node = None
    if isinstance(text, dict):
        data = text
    else:
        raw = text.decode() if isinstance(text, bytes) else text
        try:
            node = yaml.compose(raw, Loader=yaml.SafeLoader)
            data = yaml.safe_load(raw)  # JSON is YAML too, so one parser gives lines for both
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{source}:{mark.line + 1}" if mark else source
            raise BadRequest(f"{where}: not valid YAML/JSON: {getattr(exc, 'problem', exc)}", field="body") from exc
    if not isinstance(data, dict):
        raise BadRequest(f"{source}: a journey must be an object", field="body")
    try:
        return Journey.model_validate(data)
    except ValidationError as exc:
        problems, first_field = [], None
        # unknown fields first: a typo ("chanel") explains the "missing" error that follows it
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        for err in errors[:3]:
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in _STEP_TAGS))
            field = ".".join(str(p) for p in loc) or None
            first_field = first_field or field
            line = _line_of(node, loc) if node is not None else None
            msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
            where = f"{source}:{line}" if line else source
            problems.append(f"{where}: {field or 'journey'}: {msg}")
        raise BadRequest("; ".join(problems), field=first_field) from exc


_STEP_TAGS = {"wait", "wait_for", "branch", "split", "send", "update_profile", "exit"}


def dump_journey(journey: Journey) -> str:
    return json.dumps(journey.model_dump(mode="json", by_alias=True, exclude_none=True), indent=2)
