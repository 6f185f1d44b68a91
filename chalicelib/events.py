"""Canonical events: the Segment spec (identify, track, page, screen, group, alias, batch).

Our own event shapes are strict: an unknown top-level field is a 400 naming the field,
because a typo there (``userID``) would silently lose data. Free-form maps (``traits``,
``properties``, ``context``) accept anything. One module-level ``TypeAdapter`` parses
the discriminated union.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from chalicelib.errors import BadRequest

EVENT_TYPES = ("identify", "track", "page", "screen", "group", "alias")


class SegmentCall(BaseModel):
    """Fields every Segment call may carry."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    messageId: str = Field(default_factory=lambda: f"auto-{uuid.uuid4()}", min_length=1, max_length=200)
    userId: str | None = Field(default=None, max_length=200)
    anonymousId: str | None = Field(default=None, max_length=200)
    timestamp: datetime | None = None
    originalTimestamp: datetime | None = None
    sentAt: datetime | None = None
    receivedAt: datetime | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    integrations: dict[str, Any] = Field(default_factory=dict)
    writeKey: str | None = None
    version: int | str | None = None
    channel: str | None = None
    metadata: dict[str, Any] | None = Field(default=None, alias="_metadata")

    @field_validator("userId", "anonymousId", mode="before")
    @classmethod
    def _ids_as_text(cls, value: Any) -> Any:
        # Segment accepts numeric ids; keep them exact as text (no float round-trip)
        if isinstance(value, bool):
            raise ValueError("must be a string")
        if isinstance(value, int):
            return str(value)
        if value == "":
            return None
        return value

    @field_validator("timestamp", "originalTimestamp", "sentAt", "receivedAt")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("timestamp needs a time zone (ISO 8601 with Z or an offset)")
        return value

    @model_validator(mode="after")
    def _needs_an_id(self) -> SegmentCall:
        if not self.userId and not self.anonymousId:
            raise ValueError("userId or anonymousId is required")
        return self


class Identify(SegmentCall):
    type: Literal["identify"] = "identify"
    traits: dict[str, Any] = Field(default_factory=dict)


class Track(SegmentCall):
    type: Literal["track"] = "track"
    event: str = Field(min_length=1, max_length=200)
    properties: dict[str, Any] = Field(default_factory=dict)


class Page(SegmentCall):
    type: Literal["page"] = "page"
    name: str | None = None
    category: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)


class Screen(SegmentCall):
    type: Literal["screen"] = "screen"
    name: str | None = None
    category: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)


class Group(SegmentCall):
    type: Literal["group"] = "group"
    groupId: str = Field(min_length=1)
    traits: dict[str, Any] = Field(default_factory=dict)

    @field_validator("groupId", mode="before")
    @classmethod
    def _group_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class Alias(SegmentCall):
    type: Literal["alias"] = "alias"
    previousId: str = Field(min_length=1)

    @field_validator("previousId", mode="before")
    @classmethod
    def _prev_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


CanonicalEvent = Annotated[Identify | Track | Page | Screen | Group | Alias, Field(discriminator="type")]
EVENT = TypeAdapter(CanonicalEvent)


class Batch(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    batch: list[dict[str, Any]] = Field(min_length=1, max_length=2500)
    sentAt: datetime | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    integrations: dict[str, Any] = Field(default_factory=dict)
    writeKey: str | None = None
    metadata: dict[str, Any] | None = Field(default=None, alias="_metadata")


def _describe(exc: ValidationError, prefix: str = "") -> BadRequest:
    first = exc.errors()[0]
    loc = [str(p) for p in first["loc"]]
    # the discriminator tag appears in the path ("track.event"); the user thinks in fields
    if loc and loc[0] in EVENT_TYPES:
        loc = loc[1:]
    field = ".".join([p for p in [prefix, *loc] if p]) or None
    if first["type"] == "extra_forbidden":
        msg = f"unknown field {field!r}"
    elif first["type"] == "union_tag_invalid":
        msg = f"type must be one of {', '.join(EVENT_TYPES)}"
        field = ".".join([p for p in [prefix, "type"] if p])
    elif first["type"] == "union_tag_not_found":
        msg = "type is required"
        field = ".".join([p for p in [prefix, "type"] if p])
    else:
        text = first["msg"].removeprefix("Value error, ")
        msg = f"{field}: {text}" if field else text
    more = len(exc.errors()) - 1
    if more:
        msg += f" (and {more} more problem{'s' if more > 1 else ''})"
    return BadRequest(msg, field=field)


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}", field="body") from exc


@dataclass
class Parsed:
    """Valid events, and for a batch the items that were rejected (index, error)."""

    calls: list[SegmentCall]
    rejected: list[BadRequest]


def parse_call(kind: str, body: Any, received_at: datetime) -> Parsed:
    """Validate one ``/v1/<kind>`` body into canonical events (several for ``batch``).

    A single call that is invalid raises BadRequest. In a batch, the valid items are kept
    and each invalid one is reported, so one bad item never loses the others.
    """
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object", field="body")
    if kind in ("batch", "import"):
        try:
            batch = Batch.model_validate(body)
        except ValidationError as exc:
            raise _describe(exc) from exc
        calls, rejected = [], []
        for i, item in enumerate(batch.batch):
            if not isinstance(item, dict):
                rejected.append(BadRequest(f"batch.{i} must be an object", field=f"batch.{i}"))
                continue
            merged = {**item}
            if batch.sentAt and "sentAt" not in merged:
                merged["sentAt"] = batch.sentAt
            if batch.context and "context" not in merged:
                merged["context"] = batch.context
            try:
                calls.append(_one(merged, received_at, prefix=f"batch.{i}"))
            except BadRequest as exc:
                rejected.append(exc)
        return Parsed(calls, rejected)
    if kind not in EVENT_TYPES:
        raise BadRequest(f"unknown call {kind!r}", field="path")
    body = dict(body)
    if body.setdefault("type", kind) != kind:
        raise BadRequest(f"type {body['type']!r} does not match /v1/{kind}", field="type")
    return Parsed([_one(body, received_at)], [])


def _one(body: dict[str, Any], received_at: datetime, prefix: str = "") -> SegmentCall:
    try:
        call: SegmentCall = EVENT.validate_python(body)
    except ValidationError as exc:
        raise _describe(exc, prefix) from exc
    call.receivedAt = received_at
    # Segment's clock-skew correction: trust the sender's clock only relative to sentAt
    when = call.timestamp or call.originalTimestamp
    if when is not None and call.sentAt is not None:
        when = when + (received_at - call.sentAt)
    call.timestamp = when or received_at
    return call


def to_payload(call: SegmentCall) -> dict[str, Any]:
    """The canonical JSON form stored in the event log."""
    return call.model_dump(mode="json", by_alias=True, exclude_none=True)
