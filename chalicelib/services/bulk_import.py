"""Bulk import of customers, orders and products from CSV or JSON Lines.

The source is a local file or an S3 object (``s3://bucket/key``). Each valid row goes
through the same path as a live event (identity, profile, catalog) except journeys:
importing last year's customers must not send them a welcome e-mail. Every rejected row
is reported with its row number, field and reason; the valid rows are kept. A row's
messageId is a hash of its content, so importing the same file twice changes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from chalicelib.clock import iso
from chalicelib.errors import BadRequest
from chalicelib.events import parse_call, to_payload
from chalicelib.plugin_api import CatalogItem
from chalicelib.services.catalog import CatalogService
from chalicelib.services.ingest import EventProcessor

Kind = Literal["customers", "orders", "products"]


class Row(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_missing(cls, value: Any) -> Any:
        return None if value == "" else value


class CustomerRow(Row):
    user_id: str | None = Field(default=None, validation_alias="user_id")
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    country: str | None = None
    timezone: str | None = None
    accepts_marketing: bool | None = None
    created_at: datetime | None = None


class OrderRow(Row):
    order_id: str
    user_id: str | None = None
    email: str | None = None
    total: float = Field(ge=0)
    currency: str = Field(default="USD", min_length=3, max_length=3)
    created_at: datetime
    products: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("products", mode="before")
    @classmethod
    def _products_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value)
        return value or []


class ProductRow(Row):
    product_id: str
    variant_id: str | None = None
    title: str | None = None
    price: float | None = Field(default=None, ge=0)
    currency: str | None = None
    stock: int | None = None
    categories: str | list[str] | None = None
    url: str | None = None
    image_url: str | None = None
    status: str | None = None


MODELS: dict[str, type[Row]] = {"customers": CustomerRow, "orders": OrderRow, "products": ProductRow}


@dataclass
class Rejected:
    row: int
    field: str | None
    reason: str


@dataclass
class ImportReport:
    kind: str
    rows: int = 0
    imported: int = 0
    rejected: list[Rejected] = field(default_factory=list)


def open_source(source: str, s3_client: Any = None) -> tuple[io.TextIOBase, int | None]:
    """A text stream over a local path or ``s3://bucket/key``, and its size when known."""
    if source.startswith("s3://"):
        bucket, _, key = source[5:].partition("/")
        if not bucket or not key:
            raise BadRequest(f"{source!r} is not s3://bucket/key", field="source")
        if s3_client is None:
            import boto3

            s3_client = boto3.client("s3")
        obj = s3_client.get_object(Bucket=bucket, Key=key)
        return io.TextIOWrapper(obj["Body"], encoding="utf-8-sig"), int(obj.get("ContentLength") or 0) or None
    path = Path(source)
    if not path.is_file():
        raise BadRequest(f"no such file: {source}", field="source")
    return open(path, encoding="utf-8-sig", newline=""), path.stat().st_size


def read_rows(stream: io.TextIOBase, fmt: str) -> Iterator[tuple[int, Any]]:
    """(row number, raw row) pairs; row numbers count from 1 as a spreadsheet shows them."""
    if fmt == "csv":
        reader = csv.DictReader(stream)
        for i, row in enumerate(reader, start=2):  # row 1 is the header
            yield i, row
    elif fmt == "jsonl":
        for i, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                yield i, json.loads(line)
            except json.JSONDecodeError as exc:
                yield i, exc
    else:
        raise BadRequest("format must be csv or jsonl", field="format")


def _message_id(kind: str, row: BaseModel) -> str:
    digest = hashlib.sha256(f"{kind}|{row.model_dump_json()}".encode()).hexdigest()[:32]
    return f"import-{kind}-{digest}"


class BulkImporter:
    def __init__(self, processor: EventProcessor, catalog: CatalogService | None, now: Callable[[], datetime]):
        self.processor = processor
        self.catalog = catalog
        self.now = now

    def run(
        self, kind: str, rows: Iterator[tuple[int, Any]], progress: Callable[[int], None] | None = None
    ) -> ImportReport:
        if kind not in MODELS:
            raise BadRequest("kind must be customers, orders or products", field="kind")
        report = ImportReport(kind)
        for number, raw in rows:
            report.rows += 1
            if progress:
                progress(number)
            if isinstance(raw, Exception):
                report.rejected.append(Rejected(number, None, f"not valid JSON: {raw}"))
                continue
            if not isinstance(raw, dict):
                report.rejected.append(Rejected(number, None, "a row must be an object"))
                continue
            try:
                row = MODELS[kind].model_validate(raw)
                self._apply(kind, row)
            except ValidationError as exc:
                err = exc.errors()[0]
                report.rejected.append(Rejected(number, ".".join(str(p) for p in err["loc"]) or None, err["msg"]))
                continue
            except BadRequest as exc:
                report.rejected.append(Rejected(number, exc.field, exc.message))
                continue
            report.imported += 1
        return report

    def _event(self, body: dict[str, Any]) -> None:
        now = self.now()
        call = parse_call(body["type"], body, now).calls[0]
        self.processor.handle(
            {"source": "import", "received_at": iso(now), "event": to_payload(call), "trigger_journeys": False}
        )

    def _apply(self, kind: str, row: BaseModel) -> None:
        if isinstance(row, CustomerRow):
            if not (row.user_id or row.email):
                raise BadRequest("a customer needs user_id or email", field="user_id")
            traits = row.model_dump(exclude_none=True, exclude={"user_id", "created_at"}, mode="json")
            if row.country:
                traits["address"] = {"country": traits.pop("country")}
            if row.created_at:
                traits["created_at"] = iso(row.created_at)
            body: dict[str, Any] = {"type": "identify", "messageId": _message_id(kind, row), "traits": traits}
            body["userId" if row.user_id else "anonymousId"] = row.user_id or f"email:{row.email}"
            if row.created_at:
                body["timestamp"] = iso(row.created_at)
            self._event(body)
        elif isinstance(row, OrderRow):
            if not (row.user_id or row.email):
                raise BadRequest("an order needs user_id or email", field="user_id")
            body = {
                "type": "track",
                "event": "Order Completed",
                "messageId": _message_id(kind, row),
                "timestamp": iso(row.created_at),
                "properties": {
                    "order_id": row.order_id,
                    "total": row.total,
                    "revenue": row.total,
                    "currency": row.currency.upper(),
                    "products": row.products,
                },
            }
            if row.user_id:
                body["userId"] = row.user_id
            else:
                body["anonymousId"] = f"email:{row.email}"
            if row.email:
                body["context"] = {"traits": {"email": row.email}}
            self._event(body)
        elif isinstance(row, ProductRow):
            if self.catalog is None:
                raise BadRequest("this runtime has no catalog store", field="kind")
            cats = row.categories.split("|") if isinstance(row.categories, str) else row.categories
            self.catalog.apply(
                "import",
                CatalogItem(
                    product_id=row.product_id,
                    variant_id=row.variant_id,
                    title=row.title,
                    price=row.price,
                    currency=row.currency,
                    stock=row.stock,
                    categories=tuple(cats) if cats else None,
                    url=row.url,
                    image_url=row.image_url,
                    status=row.status,
                ),
                self.now(),
            )
