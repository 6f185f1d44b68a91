"""Retargeting feeds and erasure on the embedded stores (SQLite in memory, a scratch blob folder).

Hash vectors: Meta publishes normalised inputs with their expected SHA-256 in the Conversions
API's customer information parameters (the same normalisation Custom Audiences use); those
are asserted literally. Google publishes the rules but no vectors, so the Google tests state
the normalised string and hash it with hashlib here.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.adapters.local import local_stores
from chalicelib.clock import ManualClock
from chalicelib.errors import BadRequest, NotFound
from chalicelib.ports import Product, Profile, StoredEvent
from chalicelib.services.erasure import ErasureService
from chalicelib.services.feeds import (
    AUDIENCE_FORMATS,
    GOOGLE_MERCHANT,
    META_CATALOG,
    Contact,
    FeedService,
    contact_of,
    meta_name,
    meta_zip,
    price_text,
)
from chalicelib.services.identity import normalise_phone
from chalicelib.services.segments import SegmentService

GOOGLE = AUDIENCE_FORMATS["google_customer_match"]
META = AUDIENCE_FORMATS["meta_custom_audience"]


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- normalisation and hashing
def test_meta_documented_vectors():
    c = Contact("p1", email="john_smith@gmail.com", phone=normalise_phone("(650)555-1212", "US") or "",
                first_name="Mary", last_name="Valéry", country="us", zip="94016-1234")
    row = dict(zip(META.header, META.row(c), strict=True))
    assert row["EMAIL"] == "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
    assert row["PHONE"] == "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"  # 16505551212
    assert row["FN"] == "6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec"  # mary
    assert row["LN"] == "08e1996b5dd49e62a4b4c010d44e4345592a863bb9f8e3976219bac29417149c"  # valéry
    assert row["COUNTRY"] == h("us") and row["ZIP"] == h("94016")  # US: the first five digits


def test_meta_names_and_zips_lose_punctuation_and_spaces():
    assert meta_name("  Mary-Jane O'Brien ") == "maryjaneobrien"
    assert meta_name("정") == "정"
    assert meta_zip("SW1A 1AA", "gb") == "sw1a1aa"
    assert meta_zip(" 94016-1234 ", "us") == "94016"


def test_google_customer_match_rows_hash_contacts_and_keep_country_and_zip_plain():
    profile = Profile("p1", traits={"email": "  Test.User+Promo@Gmail.com ", "phone": "06 12 34 56 78",
                                    "first_name": " Zoë ", "last_name": "de  la Cruz",
                                    "address": {"country": "FR", "postal_code": " 75011 "}})
    c = contact_of(profile)
    assert (c.email, c.phone, c.country) == ("test.user+promo@gmail.com", "+33612345678", "fr")
    row = dict(zip(GOOGLE.header, GOOGLE.row(c), strict=True))
    # Google: trim + lowercase (dots and +tags are no longer removed), E.164 with the +
    assert row["Email"] == h("test.user+promo@gmail.com")
    assert row["Phone"] == h("+33612345678")
    assert row["First Name"] == h("zoë") and row["Last Name"] == h("de la cruz")
    assert (row["Country"], row["Zip"]) == ("fr", "75011")  # Google: "don't hash Country and Zip"
    meta = dict(zip(META.header, META.row(c), strict=True))
    assert meta["PHONE"] == h("33612345678") and meta["LN"] == h("delacruz")


def test_country_comes_from_the_phone_when_the_profile_has_none():
    c = contact_of(Profile("p1", identifiers={"phone": "+4915112345678"}))
    assert c.country == "de"


def test_nothing_to_match_on_gives_no_row():
    nobody = Contact("p1", first_name="Ann")  # a first name alone matches nobody
    assert GOOGLE.row(nobody) is None and META.row(nobody) is None
    address_only = Contact("p2", first_name="Ann", last_name="Lee", country="us", zip="10011")
    assert GOOGLE.row(address_only) is not None and META.row(address_only) is not None


# --------------------------------------------------------------------------- fixtures on real stores
@pytest.fixture
def clock():
    return ManualClock(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))


@pytest.fixture
def stores():
    return local_stores(None)


@pytest.fixture
def segments(stores, clock):
    service = SegmentService(stores.profiles, stores.events, stores.blobs, clock)
    service.save({"name": "vip_fr", "rule": {"trait": "vip", "op": "=", "value": True}})
    return service


@pytest.fixture
def feeds(stores, segments, clock):
    return FeedService(profiles=stores.profiles, events=stores.events, blobs=stores.blobs, catalog=stores.catalog,
                       segments=segments, clock=clock, shop_name="Maison Test", currency="EUR")


def customer(stores, pid, email, phone=None, **traits):
    p = Profile(pid, traits={"email": email, **({"phone": phone} if phone else {}), **traits},
                identifiers={"email": email, **({"phone": phone} if phone else {})})
    assert stores.profiles.save(p, 0)
    for kind, value in p.identifiers.items():
        assert stores.profiles.link(kind, value, pid)
    return p


def rows(stores, key):
    data = stores.blobs.get(key)
    assert data is not None, key
    return list(csv.reader(io.StringIO(data.decode())))


# --------------------------------------------------------------------------- audiences
def test_full_and_delta_across_two_publications(stores, feeds, clock):
    customer(stores, "p_ann", "ann@example.com", "+33612345678", vip=True, first_name="Ann")
    customer(stores, "p_bob", "bob@example.com", vip=True)
    customer(stores, "p_cat", "cat@example.com", vip=False)
    first = feeds.publish_audience("vip_fr")
    g1 = first["formats"]["google_customer_match"]
    assert (first["members"], g1["rows"], g1["added"], g1["removed"]) == (2, 2, 2, 0)
    full = rows(stores, g1["files"]["full"])
    assert full[0] == ["Email", "Phone", "First Name", "Last Name", "Country", "Zip"]
    assert sorted(r[0] for r in full[1:]) == sorted([h("ann@example.com"), h("bob@example.com")])
    assert g1["files"]["full"].startswith("feeds/audiences/vip_fr/google_customer_match/20260302T100000Z-")

    clock.advance(timedelta(days=1))
    customer(stores, "p_dan", "dan@example.com", vip=True)  # joins
    erasure = ErasureService(stores.profiles, stores.events, stores.journeys, clock)
    erasure.erase("p_bob")  # forgotten
    second = feeds.publish_audience("vip_fr")
    for name, fmt in AUDIENCE_FORMATS.items():
        out = second["formats"][name]
        assert (out["rows"], out["added"], out["removed"]) == (2, 1, 1), name
        email = fmt.header[0]
        add = [dict(zip(fmt.header, r, strict=True)) for r in rows(stores, out["files"]["add"])[1:]]
        remove = [dict(zip(fmt.header, r, strict=True)) for r in rows(stores, out["files"]["remove"])[1:]]
        assert [r[email] for r in add] == [h("dan@example.com")]
        assert [r[email] for r in remove] == [h("bob@example.com")]
        full = rows(stores, out["files"]["full"])[1:]
        assert h("bob@example.com") not in {r[0] for r in full}
    manifest = json.loads(stores.blobs.get("feeds/audiences/vip_fr/meta_custom_audience/latest.json"))
    assert manifest["timestamp"] == "20260303T100000Z" and manifest["previous"] == "20260302T100000Z"
    assert manifest["hashed_columns"] == ["EMAIL", "PHONE", "FN", "LN", "COUNTRY", "ZIP"]
    payload = json.loads(stores.blobs.get(manifest["files"]["remove_json"]))["payload"]
    assert payload["schema"][0] == "EMAIL" and payload["data"][0][0] == h("bob@example.com")

    # a third publication with nothing changed: empty deltas, same full file content
    clock.advance(timedelta(days=1))
    third = feeds.publish_audience("vip_fr", ["google_customer_match"])["formats"]["google_customer_match"]
    assert (third["rows"], third["added"], third["removed"]) == (2, 0, 0)


def test_same_second_publications_do_not_overwrite_each_other(stores, feeds):
    customer(stores, "p_ann", "ann@example.com", vip=True)
    a = feeds.publish_audience("vip_fr", ["meta_custom_audience"])["formats"]["meta_custom_audience"]
    customer(stores, "p_bob", "bob@example.com", vip=True)
    b = feeds.publish_audience("vip_fr", ["meta_custom_audience"])["formats"]["meta_custom_audience"]
    assert a["timestamp"] != b["timestamp"] and b["added"] == 1
    assert len(rows(stores, a["files"]["add"])) == 2  # the first delta survives


def test_old_publications_are_pruned(stores, feeds, clock):
    feeds.keep = 2
    customer(stores, "p_ann", "ann@example.com", vip=True)
    for _ in range(4):
        feeds.publish_audience("vip_fr", ["google_customer_match"])
        clock.advance(timedelta(days=1))
    keys = stores.blobs.list("feeds/audiences/vip_fr/google_customer_match/")
    stamps = sorted({k.rsplit("/", 1)[1].split("-")[0] for k in keys if not k.endswith("latest.json")})
    assert stamps == ["20260304T100000Z", "20260305T100000Z"]


def test_excluded_customers_are_counted(stores, feeds):
    customer(stores, "p_ann", "ann@example.com", vip=True, consent={"ads": "denied"})
    stores.profiles.save(Profile("p_anon", traits={"vip": True, "first_name": "Zed"}), 0)
    out = feeds.publish_audience("vip_fr", ["google_customer_match"])["formats"]["google_customer_match"]
    assert out["rows"] == 0 and out["skipped"] == {"no consent to ads": 1, "nothing to match on": 1}


def test_bad_requests_name_the_field(feeds):
    with pytest.raises(NotFound) as missing:
        feeds.publish(segments=["nope"])
    assert missing.value.field == "segments" and "nope" in missing.value.message
    for body, field in [({"segments": "vip_fr"}, "segments"), ({"formats": ["tiktok"]}, "formats"),
                        ({"products": "yes"}, "products"), ({"segment": ["vip_fr"]}, "segment"), ([], "body")]:
        with pytest.raises(BadRequest) as bad:
            feeds.parse_request(body)
        assert bad.value.field == field


# --------------------------------------------------------------------------- product feeds
def put(stores, pid, vid, stock, **kw):
    base = {"title": f"Tee {pid}", "price": 12.0, "currency": "EUR", "url": f"https://shop.example/p/{pid}",
            "image_url": f"https://shop.example/i/{pid}.jpg", "categories": ["Apparel", "Tops"]}
    stores.catalog.put(Product(product_id=pid, variant_id=vid, stock=stock, **{**base, **kw}))


def test_product_feeds_follow_stock_and_the_specs(stores, feeds):
    put(stores, "p1", "v1", 3)
    put(stores, "p1", "v2", 0)
    put(stores, "p2", "-", None, price=19.999, currency="usd", title="Mug\twith\nbreaks")  # untracked stock
    put(stores, "p3", "-", 5, image_url=None)  # Google and Meta both require an image
    put(stores, "p4", "-", 5, status="draft")
    stores.catalog.put(Product(product_id="_inventory_item", variant_id="inv1", title="p1|v1", status="index"))
    out = feeds.publish_products()
    g = out["google_merchant"]
    assert (g["items"], g["in_stock"], g["out_of_stock"], g["skipped"]) == (3, 2, 1, {"no image_link": 1})
    lines = stores.blobs.get("feeds/products/google_merchant/latest.tsv").decode().splitlines()
    table = [dict(zip(GOOGLE_MERCHANT.header, line.split("\t"), strict=True)) for line in lines[1:]]
    assert lines[0].split("\t") == list(GOOGLE_MERCHANT.header)
    by_id = {r["id"]: r for r in table}
    assert set(by_id) == {"p1_v1", "p1_v2", "p2"}
    assert by_id["p1_v1"]["availability"] == "in_stock" and by_id["p1_v2"]["availability"] == "out_of_stock"
    assert by_id["p1_v1"]["price"] == "12.00 EUR" and by_id["p1_v1"]["item_group_id"] == "p1"
    assert by_id["p2"]["price"] == "20.00 USD" and by_id["p2"]["item_group_id"] == ""
    assert by_id["p2"]["availability"] == "in_stock" and by_id["p2"]["title"] == "Mug with breaks"
    assert by_id["p1_v1"]["brand"] == "Maison Test" and by_id["p1_v1"]["product_type"] == "Apparel > Tops"
    assert by_id["p1_v1"]["condition"] == "new" and by_id["p1_v1"]["image_link"] == "https://shop.example/i/p1.jpg"

    meta = list(csv.DictReader(io.StringIO(stores.blobs.get("feeds/products/meta_catalog/latest.csv").decode())))
    assert {r["id"]: r["availability"] for r in meta} == {"p1_v1": "in stock", "p1_v2": "out of stock",
                                                          "p2": "in stock"}
    assert list(meta[0]) == list(META_CATALOG.header)
    assert all(k in meta[0] for k in ("id", "title", "description", "availability", "condition", "price", "link",
                                      "image_link", "brand"))


def test_price_text_rounds_half_up():
    assert price_text(12, "eur") == "12.00 EUR" and price_text(0.125, "EUR") == "0.13 EUR"


def test_customer_products_from_views_and_carts(stores, feeds, clock):
    customer(stores, "p_ann", "ann@example.com", "+33612345678")
    events = [
        ("e1", "Product Viewed", {"product_id": "p1"}, 2),
        ("e2", "Product Viewed", {"product_id": "p1"}, 1),
        ("e3", "Product Added", {"product_id": "p2"}, 1),
        ("e4", "Checkout Started", {"products": [{"product_id": "p2"}, {"product_id": "p3"}]}, 1),
        ("e5", "Product Viewed", {"product_id": "old"}, 40),  # outside the 30-day window
    ]
    for mid, name, props, days_ago in events:
        at = clock.now() - timedelta(days=days_ago)
        stores.events.append(StoredEvent(mid, "track", "p_ann", at, at, name, "segment",
                                         {"type": "track", "event": name, "properties": props}, processed=True))
        stores.events.mark_processed("segment", mid, "p_ann")
    out = feeds.publish_customer_products()
    assert (out["rows"], out["customers"]) == (3, 1)
    table = list(csv.DictReader(io.StringIO(stores.blobs.get(out["files"]["full"]).decode())))
    by_product = {r["product_id"]: r for r in table}
    assert set(by_product) == {"p1", "p2", "p3"}
    assert (by_product["p1"]["viewed"], by_product["p1"]["carted"]) == ("2", "0")
    assert (by_product["p2"]["viewed"], by_product["p2"]["carted"]) == ("0", "2")
    assert by_product["p1"]["email_sha256"] == h("ann@example.com")
    assert by_product["p1"]["phone_e164_sha256"] == h("+33612345678")
    assert by_product["p1"]["phone_digits_sha256"] == h("33612345678")
    assert by_product["p1"]["last_viewed_at"].startswith("2026-03-01")


# --------------------------------------------------------------------------- erasure
def test_erasure_unlinks_redacts_and_is_idempotent(stores, clock):
    customer(stores, "p_ann", "ann@example.com", "+33612345678", first_name="Ann", vip=True)
    identify = {"type": "identify", "userId": "u-ann", "messageId": "i1",
                "traits": {"email": "ann@example.com", "first_name": "Ann", "address": {"city": "Paris"}}}
    stores.events.append(StoredEvent("i1", "identify", None, clock.now(), clock.now(), None, "segment", identify))
    stores.events.mark_processed("segment", "i1", "p_ann")
    assert stores.profiles.link("user_id", "u-ann", "p_ann")
    order = {"type": "track", "event": "Order Completed", "messageId": "o1",
             "context": {"ip": "192.0.2.1"},
             "properties": {"order_id": "o1", "total": 30.0, "email": "ann@example.com",
                            "products": [{"product_id": "p1", "price": 30.0, "name": "Tee", "email": "x"}]}}
    stores.events.append(StoredEvent("o1", "track", None, clock.now(), clock.now(), "Order Completed", "segment",
                                     order))
    stores.events.mark_processed("segment", "o1", "p_ann")
    # a merged-away profile of the same customer also holds personal data
    stores.profiles.save(Profile("p_old", traits={"first_name": "Ann", "_identity": {"merged_into": "p_ann"}},
                                 identifiers={"anonymous_id": "a1"}), 0)
    stores.profiles.link("anonymous_id", "a1", "p_old")
    ann = stores.profiles.get("p_ann")
    ann.traits["_identity"] = {"merged_from": ["p_old"]}
    assert stores.profiles.save(ann, ann.version)

    service = ErasureService(stores.profiles, stores.events, stores.journeys, clock)
    result = service.erase("p_old")  # erasing a merged-away id erases the customer
    assert result["profiles"] == ["p_ann", "p_old"] and result["already_erased"] is False
    assert result["identifiers_unlinked"] == 4 and result["events_redacted"] == 2
    for kind, value in [("email", "ann@example.com"), ("phone", "+33612345678"), ("user_id", "u-ann"),
                        ("anonymous_id", "a1")]:
        assert stores.profiles.resolve(kind, value) is None
    after = stores.profiles.get("p_ann")
    assert after.identifiers == {}
    assert after.traits["consent"] == {"email": "erased", "sms": "erased", "push": "erased",
                                       "messenger": "erased", "ads": "erased"}
    assert not [k for k in after.traits if not k.startswith("_") and k != "consent"]
    assert "ann@example.com" not in json.dumps(after.traits) and "Ann" not in json.dumps(after.traits)
    assert stores.profiles.get("p_old").traits.get("first_name") is None
    from chalicelib.services.send import consent_problem

    assert consent_problem(after, "email", "transactional") and consent_problem(after, "sms", "transactional")
    kept = stores.events.get("segment", "o1").payload
    assert kept["properties"] == {"order_id": "o1", "total": 30.0, "products": [{"product_id": "p1", "price": 30.0}]}
    assert "context" not in kept and "traits" not in stores.events.get("segment", "i1").payload

    again = service.erase("p_ann")
    assert again["already_erased"] is True and again["identifiers_unlinked"] == 0 and again["events_redacted"] == 0
    assert stores.events.count("erasure") == 1


def test_erasing_an_unknown_profile_is_a_404_naming_the_field(stores, clock):
    service = ErasureService(stores.profiles, stores.events, stores.journeys, clock)
    with pytest.raises(NotFound) as missing:
        service.erase("p_nobody")
    assert missing.value.field == "profile_id"
    with pytest.raises(BadRequest):
        service.erase(" ")
