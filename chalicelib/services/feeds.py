"""Retargeting feeds: hashed customer audiences and product catalogs for the ad platforms.

Three kinds of file, all written to the blob store (a folder locally, S3 on AWS) under
``feeds/``, each publication beside a stable ``latest.json`` manifest:

- **Audiences** (``feeds/audiences/<segment>/<format>/<timestamp>-{full,add,remove}.csv``):
  a segment's members as Google Customer Match and Meta Custom Audience uploads. The
  identifiers are normalised as each platform documents, then SHA-256 hashed (lowercase
  hex). ``add`` and ``remove`` are the difference to the previous publication, whose full
  file the previous manifest names, so a customer who left the segment (or was erased)
  is listed under ``remove`` once.
- **Product feeds** (``feeds/products/<format>/<timestamp>.{tsv,csv}`` and a stable
  ``latest.{tsv,csv}`` a platform can fetch on its own schedule): the catalog as a Google
  Merchant Center feed and a Meta catalog feed, availability following stock.
- **Customer products** (``feeds/products/customer_products/<timestamp>.csv``): which
  products each customer viewed or put in a cart recently, keyed by the hashed
  identifiers, for product-based custom audiences.

Normalisation, per the platforms' current documentation:

============ ====================================== ======================================
field        Google Customer Match                  Meta Custom Audiences
============ ====================================== ======================================
e-mail       trim, lowercase; hashed (dots and      trim, lowercase; hashed
             ``+tags`` kept: Google no longer asks
             to remove them)
phone        E.164 with the leading ``+``; hashed   digits only with the country code, no
                                                    ``+``, no leading zeros; hashed
first / last trim, lowercase, inner spaces          lowercase letters only (no
name         collapsed; hashed                      punctuation, no spaces, UTF-8
                                                    accents kept); hashed
country      ISO 3166-1 alpha-2, lowercase;         ISO 3166-1 alpha-2, lowercase; hashed
             **not hashed** (Google: "don't hash
             Country and Zip")
zip          trimmed; **not hashed**                lowercase, no spaces or dashes; US:
                                                    the first 5 digits; hashed
============ ====================================== ======================================

Who is left out, and counted as skipped: customers with nothing to match on (no e-mail,
no phone and no complete name + country + zip), erased customers, profiles merged into
another (their data lives on the surviving profile), and customers whose ``consent.ads``
says no (``denied``, ``opted_out``, ``unsubscribed`` or ``erased``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from chalicelib.clock import Clock, iso
from chalicelib.errors import BadRequest, NotFound
from chalicelib.ports import BlobStore, CatalogStore, EventStore, Product, Profile, ProfileStore
from chalicelib.services.identity import normalise_email, normalise_phone

log = logging.getLogger("omnicast.feeds")
ROOT = "feeds"
NO_ADS_CONSENT = ("denied", "opted_out", "unsubscribed")
VIEWED_EVENTS = ("Product Viewed",)
CARTED_EVENTS = ("Product Added",)
# events that carry the whole cart as ``properties.products``
CART_EVENTS = ("Cart Viewed", "Cart Updated", "Checkout Started", "Checkout Updated")
INVENTORY_ROWS = "_inventory_item"  # catalog rows that only map inventory items (see services/catalog.py)


def sha256_hex(value: str) -> str:
    """Lowercase hex SHA-256 of the UTF-8 bytes, or "" for an empty value."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest() if value else ""


# --------------------------------------------------------------------------- normalisation
def google_name(value: Any) -> str:
    return " ".join(value.split()).lower() if isinstance(value, str) else ""


def meta_name(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    # letters only: "Mary-Jane O'Brien" -> "maryjaneobrien"; accents stay (UTF-8), as Meta asks
    return "".join(ch for ch in unicodedata.normalize("NFC", value.lower()) if ch.isalpha())


def country_code(value: Any) -> str:
    if isinstance(value, str) and len(value.strip()) == 2 and value.strip().isalpha():
        return value.strip().lower()
    return ""


def google_zip(value: Any) -> str:
    return " ".join(str(value).split()) if isinstance(value, str | int) and not isinstance(value, bool) else ""


def meta_zip(value: Any, country: str) -> str:
    text = google_zip(value).lower().replace(" ", "").replace("-", "")
    if country == "us":
        text = text[:5]
    return text


def meta_phone(e164: str) -> str:
    return e164.lstrip("+").lstrip("0")


@dataclass(frozen=True)
class Contact:
    """A customer's matchable identifiers, each already in its canonical form."""

    profile_id: str
    email: str = ""  # trimmed, lowercase
    phone: str = ""  # E.164
    first_name: Any = None
    last_name: Any = None
    country: str = ""  # ISO-2, lowercase
    zip: Any = None


def _trait(traits: dict[str, Any], *names: str) -> Any:
    found = traits.get("address")
    address: dict[str, Any] = found if isinstance(found, dict) else {}
    for name in names:
        for where in (traits, address):
            value = where.get(name)
            if value not in (None, ""):
                return value
    return None


def contact_of(profile: Profile) -> Contact:
    traits = profile.traits
    country = country_code(_trait(traits, "country_code", "country"))
    email = normalise_email(profile.identifiers.get("email") or traits.get("email")) or ""
    phone = profile.identifiers.get("phone") or normalise_phone(traits.get("phone"), country or None) or ""
    if not country and phone:
        import phonenumbers

        region = phonenumbers.region_code_for_number(phonenumbers.parse(phone))
        country = country_code(region)
    return Contact(
        profile_id=profile.profile_id,
        email=email,
        phone=phone,
        first_name=_trait(traits, "first_name", "firstName"),
        last_name=_trait(traits, "last_name", "lastName"),
        country=country,
        zip=_trait(traits, "postal_code", "postalCode", "zip", "zip_code"),
    )


def excluded(profile: Profile | None) -> str | None:
    """Why a profile stays out of every feed, or None."""
    if profile is None:
        return "profile not found"
    if (profile.traits.get("_identity") or {}).get("merged_into"):
        return "merged into another profile"
    if profile.traits.get("_erased") and not profile.identifiers:
        return "erased"
    consent = profile.traits.get("consent")
    if isinstance(consent, dict) and consent.get("ads") in NO_ADS_CONSENT:
        return "no consent to ads"
    return None


# --------------------------------------------------------------------------- audience formats
class AudienceFormat:
    """One destination's upload file: its header and one row per customer."""

    name = ""
    header: tuple[str, ...] = ()
    hashed: tuple[str, ...] = ()

    def row(self, c: Contact) -> tuple[str, ...] | None:
        """The customer's row, or None when it holds nothing the platform can match on."""
        raise NotImplementedError


class GoogleCustomerMatch(AudienceFormat):
    name = "google_customer_match"
    header = ("Email", "Phone", "First Name", "Last Name", "Country", "Zip")
    hashed = ("Email", "Phone", "First Name", "Last Name")

    def row(self, c: Contact) -> tuple[str, ...] | None:
        first, last, zip_ = google_name(c.first_name), google_name(c.last_name), google_zip(c.zip)
        address = bool(first and last and c.country and zip_)
        if not (c.email or c.phone or address):
            return None
        return (sha256_hex(c.email), sha256_hex(c.phone), sha256_hex(first), sha256_hex(last), c.country, zip_)


class MetaCustomAudience(AudienceFormat):
    name = "meta_custom_audience"
    header = ("EMAIL", "PHONE", "FN", "LN", "COUNTRY", "ZIP")
    hashed = header

    def row(self, c: Contact) -> tuple[str, ...] | None:
        first, last, zip_ = meta_name(c.first_name), meta_name(c.last_name), meta_zip(c.zip, c.country)
        phone = meta_phone(c.phone) if c.phone else ""
        if not (c.email or phone or (first and last and c.country and zip_)):
            return None
        return tuple(sha256_hex(v) for v in (c.email, phone, first, last, c.country, zip_))


AUDIENCE_FORMATS: dict[str, AudienceFormat] = {f.name: f for f in (GoogleCustomerMatch(), MetaCustomAudience())}


# --------------------------------------------------------------------------- product formats
def availability(product: Product) -> bool:
    """In stock unless the shop counts stock and has none (untracked stock sells)."""
    return product.stock is None or product.stock > 0


def price_text(price: float, currency: str) -> str:
    amount = Decimal(str(price)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return f"{amount} {currency.upper()}"


def item_id(product: Product) -> str:
    return product.product_id if product.variant_id in ("", "-") else f"{product.product_id}_{product.variant_id}"


def _clean(value: Any) -> str:
    # feeds are one item per line: no tabs or line breaks inside a value
    return " ".join(str(value).split()) if value is not None else ""


@dataclass(frozen=True)
class ProductFormat:
    name: str
    header: tuple[str, ...]
    extension: str  # tsv or csv
    in_stock: str
    out_of_stock: str


GOOGLE_MERCHANT = ProductFormat(
    "google_merchant",
    ("id", "item_group_id", "title", "description", "link", "image_link", "availability", "price", "brand",
     "condition", "product_type"),
    "tsv", "in_stock", "out_of_stock",
)
META_CATALOG = ProductFormat(
    "meta_catalog",
    ("id", "item_group_id", "title", "description", "availability", "condition", "price", "link", "image_link",
     "brand", "product_type"),
    "csv", "in stock", "out of stock",
)
PRODUCT_FORMATS = {f.name: f for f in (GOOGLE_MERCHANT, META_CATALOG)}
CUSTOMER_PRODUCTS_HEADER = (
    "email_sha256", "phone_e164_sha256", "phone_digits_sha256", "product_id", "viewed", "carted",
    "last_viewed_at", "last_carted_at",
)


def _csv(header: Iterable[str], rows: Iterable[Iterable[str]], delimiter: str = ",") -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def _read_rows(data: bytes | None) -> set[tuple[str, ...]]:
    if not data:
        return set()
    reader = csv.reader(io.StringIO(data.decode("utf-8")))
    next(reader, None)  # the header
    return {tuple(row) for row in reader}


# --------------------------------------------------------------------------- the service
class FeedService:
    def __init__(
        self,
        *,
        profiles: ProfileStore,
        events: EventStore,
        blobs: BlobStore,
        catalog: CatalogStore | None,
        segments: Any,  # SegmentService: get(name), members(name), segments
        clock: Clock,
        shop_name: str = "",
        currency: str = "EUR",
        lookback_days: int = 30,
        keep: int = 7,
    ) -> None:
        self.profiles = profiles
        self.events = events
        self.blobs = blobs
        self.catalog = catalog
        self.segments = segments
        self.clock = clock
        self.shop_name = shop_name
        self.currency = currency
        self.lookback = timedelta(days=lookback_days)
        self.keep = max(1, keep)  # publications kept per feed; older files are deleted

    # ------------------------------------------------------------------ requests
    def parse_request(self, body: Any) -> dict[str, Any]:
        """Validate a publication request (API or CLI); errors name the field."""
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object", field="body")
        unknown = sorted(set(body) - {"segments", "formats", "products"})
        if unknown:
            raise BadRequest(f"{unknown[0]}: unknown field; use segments, formats, products", field=unknown[0])
        segments = body.get("segments")
        if segments is not None:
            if not isinstance(segments, list) or not all(isinstance(s, str) and s for s in segments):
                raise BadRequest("segments must be a list of segment names", field="segments")
            for name in segments:
                if name not in self.segments.segments:
                    known = ", ".join(sorted(self.segments.segments))
                    raise NotFound(f"segments: no segment {name!r}; known: {known}", field="segments")
        formats = body.get("formats")
        if formats is not None:
            if not isinstance(formats, list) or not all(isinstance(f, str) for f in formats):
                raise BadRequest("formats must be a list of audience format names", field="formats")
            for name in formats:
                if name not in AUDIENCE_FORMATS:
                    raise BadRequest(
                        f"formats: unknown format {name!r}; use {', '.join(AUDIENCE_FORMATS)}", field="formats"
                    )
        products = body.get("products", True)
        if not isinstance(products, bool):
            raise BadRequest("products must be true or false", field="products")
        return {"segments": segments, "formats": formats, "products": products}

    def publish(
        self, segments: list[str] | None = None, formats: list[str] | None = None, products: bool = True
    ) -> dict[str, Any]:
        """Publish every audience (all segments unless named) and, unless told not to, the
        product feeds; returns what was written, counted."""
        checked = self.parse_request({"segments": segments, "formats": formats, "products": products})
        names = sorted(self.segments.segments) if checked["segments"] is None else checked["segments"]
        result: dict[str, Any] = {
            "audiences": [self.publish_audience(name, checked["formats"]) for name in names],
        }
        if products:
            result["products"] = self.publish_products()
            result["customer_products"] = self.publish_customer_products()
        return result

    # ------------------------------------------------------------------ audiences
    def _stamp(self, previous: dict[str, Any] | None) -> str:
        stamp = self.clock.now().strftime("%Y%m%dT%H%M%SZ")
        if previous and str(previous.get("timestamp", "")).split(".")[0] == stamp:
            # a second publication within the same second (a manual clock): keep both
            stamp = f"{stamp}.{int(previous.get('sequence', 1)) + 1}"
        return stamp

    def _manifest(self, key: str) -> dict[str, Any] | None:
        raw = self.blobs.get(key)
        return json.loads(raw) if raw else None

    def _prune(self, prefix: str, current: dict[str, Any]) -> None:
        """Delete publications older than the newest ``keep`` (hashed files are personal data
        too: an erased customer's hash must not stay in old files for ever)."""

        def stamp_of(name: str) -> str | None:
            if name.startswith("latest."):
                return None
            head = name.split("-", 1)[0]
            for ext in (".tsv", ".csv", ".json"):
                head = head.removesuffix(ext)
            return head

        keys = self.blobs.list(prefix)
        stamps = sorted({s for k in keys if (s := stamp_of(k[len(prefix):]))})
        old = set(stamps[: max(0, len(stamps) - self.keep)]) - {current["timestamp"]}
        for key in keys:
            if stamp_of(key[len(prefix):]) in old:
                self.blobs.delete(key)

    def publish_audience(self, segment: str, formats: list[str] | None = None) -> dict[str, Any]:
        """One segment as an upload file per destination format, with deltas."""
        self.segments.get(segment)  # NotFound naming the field for an unknown segment
        members = self.segments.members(segment)
        contacts: list[Contact] = []
        skipped: Counter[str] = Counter()
        for profile_id in members:
            profile = self.profiles.get(profile_id)
            why = excluded(profile)
            if why or profile is None:
                skipped[why or "profile not found"] += 1
                continue
            contacts.append(contact_of(profile))
        out: dict[str, Any] = {"segment": segment, "members": len(members), "formats": {}}
        for name in formats or list(AUDIENCE_FORMATS):
            fmt = AUDIENCE_FORMATS[name]
            out["formats"][name] = self._publish_format(segment, fmt, contacts, len(members), skipped)
        return out

    def _publish_format(
        self, segment: str, fmt: AudienceFormat, contacts: list[Contact], members: int, skipped: Counter[str]
    ) -> dict[str, Any]:
        prefix = f"{ROOT}/audiences/{segment}/{fmt.name}/"
        previous = self._manifest(prefix + "latest.json")
        before = _read_rows(self.blobs.get(previous["files"]["full"])) if previous else set()
        rows: set[tuple[str, ...]] = set()
        unmatched = 0
        for contact in contacts:
            row = fmt.row(contact)
            if row is None:
                unmatched += 1
            else:
                rows.add(row)
        added, removed = sorted(rows - before), sorted(before - rows)
        stamp = self._stamp(previous)
        files = {kind: f"{prefix}{stamp}-{kind}.csv" for kind in ("full", "add", "remove")}
        for kind, part in (("full", sorted(rows)), ("add", added), ("remove", removed)):
            self.blobs.put(files[kind], _csv(fmt.header, part), content_type="text/csv")
        if isinstance(fmt, MetaCustomAudience):
            # the Marketing API's multi-key payload for POST /{audience_id}/users (add) and DELETE (remove);
            # Meta takes at most 10,000 rows per request, so an uploader sends it in slices
            for kind, part in (("add", added), ("remove", removed)):
                files[f"{kind}_json"] = f"{prefix}{stamp}-{kind}.json"
                payload = {"payload": {"schema": list(fmt.header), "data": [list(r) for r in part]}}
                self.blobs.put(files[f"{kind}_json"], json.dumps(payload).encode(), content_type="application/json")
        counts = {
            "rows": len(rows),
            "added": len(added),
            "removed": len(removed),
            "skipped": {**dict(skipped), **({"nothing to match on": unmatched} if unmatched else {})},
        }
        manifest = {
            "segment": segment,
            "format": fmt.name,
            "timestamp": stamp,
            "sequence": int(stamp.split(".")[1]) if "." in stamp else 1,
            "published_at": iso(self.clock.now()),
            "members": members,
            **counts,
            "columns": list(fmt.header),
            "hashed_columns": list(fmt.hashed),
            "hash": "sha256, lowercase hex, of the normalised UTF-8 value; empty when unknown",
            "previous": previous["timestamp"] if previous else None,
            "files": files,
        }
        # the manifest goes last: it names the full file the next publication compares with
        self.blobs.put(prefix + "latest.json", json.dumps(manifest, indent=1).encode(), content_type="application/json")
        self._prune(prefix, manifest)
        return {**counts, "timestamp": stamp, "files": files}

    # ------------------------------------------------------------------ products
    def _products(self) -> list[Product]:
        if self.catalog is None:
            return []
        return [
            p for p in self.catalog.all(limit=1_000_000)
            if p.product_id != INVENTORY_ROWS and p.status == "active"
        ]

    def product_rows(self, fmt: ProductFormat) -> tuple[list[list[str]], Counter[str]]:
        """The feed's rows (one per sellable variant) and why the others were left out."""
        products = self._products()
        variants = Counter(p.product_id for p in products)
        rows: list[list[str]] = []
        skipped: Counter[str] = Counter()
        for p in products:
            missing = [name for name, value in (("title", p.title), ("price", p.price), ("link", p.url),
                                                ("image_link", p.image_url)) if value in (None, "")]
            if missing:
                skipped[f"no {missing[0]}"] += 1
                continue
            assert p.price is not None
            grouped = variants[p.product_id] > 1 or p.variant_id not in ("", "-")
            values = {
                "id": item_id(p),
                "item_group_id": p.product_id if grouped else "",
                "title": _clean(p.title)[:150],
                # the catalog keeps no description; both platforms require one, the title is the honest fallback
                "description": _clean(p.title)[:5000],
                "link": p.url or "",
                "image_link": p.image_url or "",
                "availability": fmt.in_stock if availability(p) else fmt.out_of_stock,
                "price": price_text(p.price, p.currency or self.currency),
                "brand": _clean(self.shop_name),
                "condition": "new",
                "product_type": " > ".join(_clean(c) for c in p.categories),
            }
            rows.append([values[column] for column in fmt.header])
        return rows, skipped

    def publish_products(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for fmt in PRODUCT_FORMATS.values():
            prefix = f"{ROOT}/products/{fmt.name}/"
            previous = self._manifest(prefix + "latest.json")
            rows, skipped = self.product_rows(fmt)
            data = _csv(fmt.header, rows, delimiter="\t" if fmt.extension == "tsv" else ",")
            stamp = self._stamp(previous)
            content_type = "text/tab-separated-values" if fmt.extension == "tsv" else "text/csv"
            files = {"full": f"{prefix}{stamp}.{fmt.extension}", "latest": f"{prefix}latest.{fmt.extension}"}
            self.blobs.put(files["full"], data, content_type=content_type)
            self.blobs.put(files["latest"], data, content_type=content_type)
            in_stock = sum(1 for r in rows if r[fmt.header.index("availability")] == fmt.in_stock)
            counts = {"items": len(rows), "in_stock": in_stock, "out_of_stock": len(rows) - in_stock,
                      "skipped": dict(skipped)}
            manifest = {"format": fmt.name, "timestamp": stamp,
                        "sequence": int(stamp.split(".")[1]) if "." in stamp else 1,
                        "published_at": iso(self.clock.now()), **counts, "columns": list(fmt.header), "files": files}
            self.blobs.put(prefix + "latest.json", json.dumps(manifest, indent=1).encode(),
                           content_type="application/json")
            self._prune(prefix, manifest)
            out[fmt.name] = {**counts, "timestamp": stamp, "files": files}
        return out

    # ------------------------------------------------------------------ customers x products
    def interests(self, profile_id: str, since: datetime) -> dict[str, dict[str, Any]]:
        """Products one customer viewed or carted since ``since``: counts and last times."""
        found: dict[str, dict[str, Any]] = {}

        def note(product_id: Any, kind: str, at: datetime) -> None:
            if product_id in (None, "") or isinstance(product_id, bool | dict | list):
                return
            entry = found.setdefault(str(product_id), {"viewed": 0, "carted": 0, "last_viewed_at": "",
                                                       "last_carted_at": ""})
            entry[kind] += 1
            entry[f"last_{kind}_at"] = max(entry[f"last_{kind}_at"], iso(at))

        for event in self.events.for_profile(profile_id, limit=100_000):
            if event.type != "track" or event.timestamp < since:
                continue
            props = event.payload.get("properties") or {}
            if event.event in VIEWED_EVENTS:
                note(props.get("product_id"), "viewed", event.timestamp)
            elif event.event in CARTED_EVENTS:
                note(props.get("product_id"), "carted", event.timestamp)
            elif event.event in CART_EVENTS:
                for item in props.get("products") or []:
                    if isinstance(item, dict):
                        note(item.get("product_id"), "carted", event.timestamp)
        return found

    def customer_product_rows(self) -> tuple[list[list[str]], Counter[str]]:
        since = self.clock.now() - self.lookback
        rows: list[list[str]] = []
        skipped: Counter[str] = Counter()
        cursor: str | None = None
        while True:
            page, cursor = self.profiles.scan(cursor, 1000)
            for profile in page:
                why = excluded(profile)
                contact = contact_of(profile) if why is None else None
                if contact is None or not (contact.email or contact.phone):
                    skipped[why or "no e-mail or phone"] += 1
                    continue
                keys = [sha256_hex(contact.email), sha256_hex(contact.phone),
                        sha256_hex(meta_phone(contact.phone) if contact.phone else "")]
                for product_id, seen in sorted(self.interests(profile.profile_id, since).items()):
                    rows.append([*keys, product_id, str(seen["viewed"]), str(seen["carted"]),
                                 seen["last_viewed_at"], seen["last_carted_at"]])
            if cursor is None:
                return rows, skipped

    def publish_customer_products(self) -> dict[str, Any]:
        prefix = f"{ROOT}/products/customer_products/"
        previous = self._manifest(prefix + "latest.json")
        rows, skipped = self.customer_product_rows()
        stamp = self._stamp(previous)
        files = {"full": f"{prefix}{stamp}.csv"}
        self.blobs.put(files["full"], _csv(CUSTOMER_PRODUCTS_HEADER, rows), content_type="text/csv")
        counts = {"rows": len(rows), "customers": len({r[0] + r[1] for r in rows}), "skipped": dict(skipped)}
        manifest = {"format": "customer_products", "timestamp": stamp,
                    "sequence": int(stamp.split(".")[1]) if "." in stamp else 1,
                    "published_at": iso(self.clock.now()), "lookback_days": self.lookback.days, **counts,
                    "columns": list(CUSTOMER_PRODUCTS_HEADER), "files": files}
        self.blobs.put(prefix + "latest.json", json.dumps(manifest, indent=1).encode(), content_type="application/json")
        self._prune(prefix, manifest)
        return {**counts, "timestamp": stamp, "files": files}
