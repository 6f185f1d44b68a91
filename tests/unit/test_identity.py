"""The identity graph: one profile per customer, safe merges, recorded reasons."""

from __future__ import annotations

import pytest

from chalicelib.services.identity import identifiers, normalise_email, normalise_phone


@pytest.fixture
def rt(make_runtime):
    return make_runtime(channels={"email": "smtp"})


def apply(rt, kind, **body):
    body.setdefault("messageId", f"m-{len(rt.stores.events.for_profile('x', 1))}-{id(body)}")
    calls = {"identify": "identify", "track": "track", "alias": "alias"}
    from chalicelib.clock import iso
    from chalicelib.events import parse_call, to_payload

    call = parse_call(calls[kind], body, rt.clock.now()).calls[0]
    rt.processor.handle({"source": "segment", "received_at": iso(rt.clock.now()), "event": to_payload(call)})
    ids = identifiers(to_payload(call))
    return rt.processor.identity.canonical(rt.stores.profiles.resolve(*ids[0]))


def test_normalisation():
    assert normalise_email("  Ann@Example.COM ") == "ann@example.com"
    assert normalise_email("not-an-email") is None
    assert normalise_phone("06 12 34 56 78", "FR") == "+33612345678"
    assert normalise_phone("+1 (415) 555-2671") == "+14155552671"
    assert normalise_phone("12345") is None


def test_external_ids_and_phone_from_context():
    ids = identifiers({
        "type": "identify", "userId": "42",
        "context": {"locale": "fr-FR", "externalIds": [{"id": 7001, "type": "shopify_customer_id",
                                                        "collection": "users"}]},
        "traits": {"email": "A@B.CO", "phone": "06 12 34 56 78"},
    })
    assert ids == [("user_id", "42"), ("shopify_customer_id", "7001"), ("email", "a@b.co"),
                   ("phone", "+33612345678")]


def test_anonymous_history_joins_the_known_profile(rt):
    anon_profile = apply(rt, "track", anonymousId="anon-1", event="Product Viewed", messageId="v1")
    known = apply(rt, "identify", userId="u1", anonymousId="anon-1", traits={"email": "a@x.com"}, messageId="i1")
    assert anon_profile == known
    # a second device: browsing anonymously, then logging in, merges into the same customer
    device_b = apply(rt, "track", anonymousId="anon-2", event="Product Viewed", messageId="v2")
    assert device_b != known
    after = apply(rt, "identify", userId="u1", anonymousId="anon-2", messageId="i2")
    assert after == known
    merged = rt.stores.profiles.get(device_b)
    assert merged.traits["_identity"]["merged_into"] == known
    survivor = rt.stores.profiles.get(known)
    assert device_b in survivor.traits["_identity"]["merged_from"]
    assert "anonymous visitor identified" in survivor.traits["_identity"]["log"][-1]["reason"]
    # later events from the merged device land on the survivor
    assert apply(rt, "track", anonymousId="anon-2", event="Cart Viewed", messageId="v3") == known


def test_two_user_ids_on_one_shared_email_never_merge(rt):
    mum = apply(rt, "identify", userId="mum", traits={"email": "family@example.com"}, messageId="a")
    kid = apply(rt, "identify", userId="kid", traits={"email": "family@example.com"}, messageId="b")
    assert mum != kid
    assert rt.stores.profiles.get(kid).identifiers["user_id"] == "kid"
    assert rt.stores.profiles.get(mum).identifiers["user_id"] == "mum"
    log = rt.stores.profiles.get(mum).traits["_identity"]["log"]
    assert any(e["action"] == "merge_refused" and "user_id" in e["reason"] for e in log)
    # the shared e-mail still resolves to its first owner
    assert rt.stores.profiles.resolve("email", "family@example.com") == mum


def test_platform_customer_id_joins_the_segment_profile_by_email(rt):
    web = apply(rt, "identify", userId="u7", traits={"email": "seven@example.com"}, messageId="w")
    shop = apply(rt, "track", anonymousId="shopify-checkout-1", event="Order Completed", messageId="s",
                 context={"externalIds": [{"id": "9007199254740993", "type": "shopify_customer_id",
                                           "collection": "users"}],
                          "traits": {"email": "Seven@Example.com"}},
                 properties={"order_id": "1001", "total": 30})
    assert shop == web
    profile = rt.stores.profiles.get(web)
    assert profile.identifiers["shopify_customer_id"] == "9007199254740993"
    assert profile.traits["orders_count"] == 1


def test_the_same_order_from_two_sources_counts_once(rt):
    apply(rt, "track", userId="u8", event="Order Completed", messageId="seg-1", properties={"order_id": "o1",
                                                                                             "total": 10})
    pid = apply(rt, "track", userId="u8", event="Order Completed", messageId="shop-1",
                properties={"order_id": "o1", "total": 10})
    assert rt.stores.profiles.get(pid).traits["orders_count"] == 1
    assert rt.stores.profiles.get(pid).traits["total_spent"] == 10
