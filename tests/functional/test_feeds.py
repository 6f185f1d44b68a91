"""Retargeting feeds and erasure through the real interfaces: the Segment API, the admin API,
the daily schedule, the CLI, and the blob store both as a local folder and as S3 (moto)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import timedelta

import boto3
import pytest
from chalice.test import Client
from moto import mock_aws

from chalicelib.adapters.local import local_stores
from chalicelib.plugin_api import CatalogItem
from chalicelib.runtime import set_runtime
from tests.functional.test_cli_and_serve import run as cli

VIP = {"name": "vip", "rule": {"trait": "tier", "op": "=", "value": "gold"}}


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def admin(api, method, path, body=None, key=None):
    headers = {"Authorization": f"Bearer {key or api.admin_key}", "Content-Type": "application/json"}
    call = getattr(api.client.http, method)
    return call(path, headers=headers, body=json.dumps(body) if body is not None else None) if method != "get" \
        else call(path, headers=headers)


def identify(api, user, email, phone=None, tier="gold", **traits):
    traits = {"email": email, "tier": tier, **({"phone": phone} if phone else {}), **traits}
    r = api.post("/v1/identify", {"userId": user, "messageId": f"id-{user}-{h(email)[:8]}", "traits": traits})
    assert r.status_code == 200, r.body


def table(blobs, key):
    data = blobs.get(key)
    assert data is not None, key
    return list(csv.reader(io.StringIO(data.decode())))


def test_audiences_publish_delta_and_erasure_through_the_api(api, clock):
    assert admin(api, "put", "/admin/segments/vip", VIP).status_code == 200
    identify(api, "u1", "Ann@Example.com", "+33 6 12 34 56 78", first_name="Ann", address={"country": "FR"})
    identify(api, "u2", "bob@example.com")
    identify(api, "u3", "cat@example.com", tier="silver")
    api.runtime.drain()

    r = admin(api, "post", "/admin/feeds/publish", {"segments": ["vip"], "products": False})
    assert r.status_code == 200, r.body
    first = json.loads(r.body)["audiences"][0]
    assert first["segment"] == "vip" and first["members"] == 2
    google = first["formats"]["google_customer_match"]
    assert (google["rows"], google["added"], google["removed"]) == (2, 2, 0)
    blobs = api.runtime.stores.blobs
    full = table(blobs, google["files"]["full"])
    ann = next(row for row in full if row[0] == h("ann@example.com"))
    assert ann == [h("ann@example.com"), h("+33612345678"), h("ann"), "", "fr", ""]
    latest = json.loads(blobs.get("feeds/audiences/vip/google_customer_match/latest.json"))
    assert latest["files"] == google["files"] and latest["rows"] == 2

    # a day later: a new VIP, and Bob asks to be forgotten
    clock.advance(timedelta(days=1))
    identify(api, "u4", "dan@example.com")
    api.runtime.drain()
    bob = api.runtime.stores.profiles.resolve("email", "bob@example.com")
    r = admin(api, "delete", f"/admin/profiles/{bob}")
    assert r.status_code == 200, r.body
    erased = json.loads(r.body)
    assert erased["erased"] is True and erased["already_erased"] is False and erased["identifiers_unlinked"] == 2
    again = json.loads(admin(api, "delete", f"/admin/profiles/{bob}").body)
    assert again["already_erased"] is True and again["identifiers_unlinked"] == 0
    profile = json.loads(admin(api, "get", f"/admin/profiles/{bob}").body)
    assert profile["identifiers"] == {} and profile["traits"]["consent"]["email"] == "erased"
    assert "bob@example.com" not in json.dumps(profile)

    second = json.loads(admin(api, "post", "/admin/feeds/publish", {"segments": ["vip"], "products": False}).body)
    for name, out in second["audiences"][0]["formats"].items():
        assert (out["rows"], out["added"], out["removed"]) == (2, 1, 1), name
        assert [r[0] for r in table(blobs, out["files"]["add"])[1:]] == [h("dan@example.com")]
        assert [r[0] for r in table(blobs, out["files"]["remove"])[1:]] == [h("bob@example.com")]
        assert h("bob@example.com") not in {r[0] for r in table(blobs, out["files"]["full"])}

    # Bob comes back: his e-mail starts an empty profile, nothing of the old one returns
    identify(api, "u2-new", "bob@example.com", tier="bronze")
    api.runtime.drain()
    fresh = api.runtime.stores.profiles.get(api.runtime.stores.profiles.resolve("email", "bob@example.com"))
    assert fresh.traits["tier"] == "bronze" and fresh.identifiers["user_id"] == "u2-new"
    assert api.runtime.stores.profiles.resolve("user_id", "u2") is None


def test_publication_errors_name_the_field(api):
    cases = [
        ({"segments": ["no_such_segment"]}, 404, "segments"),
        ({"segments": "vip"}, 400, "segments"),
        ({"formats": ["tiktok"]}, 400, "formats"),
        ({"products": "yes"}, 400, "products"),
        ({"segmnets": ["vip"]}, 400, "segmnets"),
    ]
    for body, status, field in cases:
        r = admin(api, "post", "/admin/feeds/publish", body)
        assert r.status_code == status, (body, r.body)
        assert json.loads(r.body)["field"] == field
    r = api.client.http.post("/admin/feeds/publish", headers={"Content-Type": "application/json"}, body="{}")
    assert r.status_code == 401
    r = admin(api, "delete", "/admin/profiles/p_nobody")
    assert r.status_code == 404 and json.loads(r.body)["field"] == "profile_id"


def test_product_feeds_follow_stock_and_the_daily_schedule_publishes_everything(api, clock):

    catalog = api.runtime.catalog
    for variant, stock in (("v1", 4), ("v2", 0)):
        catalog.apply("shopify", CatalogItem(product_id="p1", variant_id=variant, title="Linen shirt", price=49.9,
                                             currency="EUR", stock=stock, categories=("Shirts",),
                                             url="https://shop.example/p1", image_url="https://shop.example/p1.jpg",
                                             status="active"), clock.now())
    identify(api, "u1", "ann@example.com")
    api.post("/v1/track", {"userId": "u1", "event": "Product Viewed", "messageId": "v1",
                           "properties": {"product_id": "p1"}})
    api.runtime.drain()

    result = api.client.lambda_.invoke("feeds_publish", api.client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={}, resources=[])).payload
    names = {a["segment"] for a in result["audiences"]}
    assert {"subscribers", "customers", "vip", "lapsed_customers"} <= names
    assert result["products"]["google_merchant"]["items"] == 2
    assert result["products"]["google_merchant"]["out_of_stock"] == 1
    assert result["customer_products"]["rows"] == 1
    blobs = api.runtime.stores.blobs
    rows = [line.split("\t") for line in blobs.get("feeds/products/google_merchant/latest.tsv").decode().splitlines()]
    header, items = rows[0], {r[0]: dict(zip(rows[0], r, strict=True)) for r in rows[1:]}
    assert header[:4] == ["id", "item_group_id", "title", "description"]
    assert items["p1_v1"]["availability"] == "in_stock" and items["p1_v2"]["availability"] == "out_of_stock"
    assert items["p1_v1"]["price"] == "49.90 EUR" and items["p1_v1"]["item_group_id"] == "p1"

    # back in stock: the next publication says so
    clock.advance(timedelta(days=1))
    catalog.apply("shopify", CatalogItem(product_id="p1", variant_id="v2", stock=7), clock.now())
    r = admin(api, "post", "/admin/feeds/publish", {"segments": [], "products": True})
    assert r.status_code == 200, r.body
    assert json.loads(r.body)["audiences"] == []  # an empty list publishes no audience, only the products
    meta = list(csv.DictReader(io.StringIO(blobs.get("feeds/products/meta_catalog/latest.csv").decode())))
    assert {m["id"]: m["availability"] for m in meta} == {"p1_v1": "in stock", "p1_v2": "in stock"}
    viewed = list(csv.DictReader(io.StringIO(blobs.get(
        json.loads(blobs.get("feeds/products/customer_products/latest.json"))["files"]["full"]).decode())))
    assert [(v["email_sha256"], v["product_id"], v["viewed"]) for v in viewed] == [(h("ann@example.com"), "p1", "1")]


@pytest.fixture
def aws_runtime(rec_runtime, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    from chalicelib.adapters.aws import AwsClients, aws_stores, create_resources
    from chalicelib.config import AwsSettings

    settings = AwsSettings(table="feeds", bucket="feeds-bucket", queue_prefix="feeds-", ssm_prefix="/feeds/")
    with mock_aws():
        clients = AwsClients(settings)
        create_resources(settings, ("ingest", "send"), clients)
        yield rec_runtime(stores=aws_stores(settings, clients))


def test_publication_to_s3_and_erasure_on_dynamodb(aws_runtime, clock):
    import app as app_module

    rt = aws_runtime
    set_runtime(rt)
    admin_key = rt.credentials.create_key("admin", "ops")
    write_key = rt.credentials.create_key("write", "site")
    from tests.conftest import Api

    api = Api(Client(app_module.app), rt, write_key, admin_key)
    assert admin(api, "put", "/admin/segments/vip", VIP).status_code == 200
    identify(api, "u1", "ann@example.com")
    identify(api, "u2", "bob@example.com", "+1 650 555 1212")
    rt.drain()
    first = json.loads(admin(api, "post", "/admin/feeds/publish", {"segments": ["vip"]}).body)
    assert first["audiences"][0]["formats"]["meta_custom_audience"]["rows"] == 2

    clock.advance(timedelta(days=1))
    bob = rt.stores.profiles.resolve("email", "bob@example.com")
    assert json.loads(admin(api, "delete", f"/admin/profiles/{bob}").body)["identifiers_unlinked"] == 3
    assert rt.stores.profiles.resolve("phone", "+16505551212") is None
    kept = rt.stores.events.for_profile(bob)
    assert kept and "bob@example.com" not in json.dumps([e.payload for e in kept])  # rewritten in DynamoDB
    second = json.loads(admin(api, "post", "/admin/feeds/publish", {"segments": ["vip"]}).body)
    meta = second["audiences"][0]["formats"]["meta_custom_audience"]
    assert (meta["rows"], meta["added"], meta["removed"]) == (1, 0, 1)

    s3 = boto3.client("s3", region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="feeds-bucket", Prefix="feeds/")["Contents"]]
    assert "feeds/audiences/vip/meta_custom_audience/latest.json" in keys
    assert "feeds/products/google_merchant/latest.tsv" in keys
    assert f"feeds/audiences/vip/meta_custom_audience/{meta['timestamp']}-remove.csv" in keys
    body = s3.get_object(Bucket="feeds-bucket", Key=meta["files"]["remove"])["Body"].read().decode()
    removed = list(csv.DictReader(io.StringIO(body)))
    assert [(r["EMAIL"], r["PHONE"]) for r in removed] == [(h("bob@example.com"), h("16505551212"))]
    manifest = json.loads(s3.get_object(Bucket="feeds-bucket",
                                        Key="feeds/audiences/vip/meta_custom_audience/latest.json")["Body"].read())
    assert manifest["files"]["remove"] == meta["files"]["remove"] and manifest["previous"] is not None
    set_runtime(None)


def test_cli_publishes_and_erases(make_runtime, tmp_path):
    data = tmp_path / "cli"
    rt = make_runtime(stores=local_stores(data), data_dir=str(data), plugins={"allow": []})
    rt.segments.save(VIP)
    rt.ingest.accept("identify", json.dumps({"userId": "u1", "messageId": "m1",
                                             "traits": {"email": "ann@example.com", "tier": "gold"}}).encode(),
                     {"authorization": _basic(rt.credentials.create_key("write", "cli"))})
    rt.work("ingest")
    pid = rt.stores.profiles.resolve("email", "ann@example.com")

    done = cli("feeds", "publish", "--segment", "vip", "--no-products", "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["audiences"][0]["formats"]["google_customer_match"]["rows"] == 1 and "products" not in out
    assert (data / "blobs" / out["audiences"][0]["formats"]["google_customer_match"]["files"]["full"]).is_file()

    bad = cli("feeds", "publish", "--segment", "nope", "--data-dir", str(data))
    assert bad.returncode == 2 and "segments: no segment 'nope'" in bad.stderr

    erased = cli("erase", pid, "--data-dir", str(data))
    assert erased.returncode == 0, erased.stderr
    assert json.loads(erased.stdout)["identifiers_unlinked"] == 2
    assert json.loads(cli("erase", pid, "--data-dir", str(data)).stdout)["already_erased"] is True
    assert cli("erase", "p_nobody", "--data-dir", str(data)).returncode == 2


def _basic(key: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()
