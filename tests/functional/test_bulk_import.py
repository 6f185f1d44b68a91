"""Bulk import from CSV / JSON Lines, local or S3: valid rows kept, each rejected row named."""

from __future__ import annotations

import json

import boto3
from moto import mock_aws

from chalicelib.services.bulk_import import BulkImporter, open_source, read_rows

CUSTOMERS = """user_id,email,first_name,phone,country,accepts_marketing,created_at
c1,Ann@Example.com,Ann,06 12 34 56 78,FR,true,2025-01-02T10:00:00Z
,,NoId,,,,
c3,cee@example.com,Cee,,,maybe,
c4,dee@example.com,Dee,,,false,2025-02-02T10:00:00+01:00
"""


def importer(rt):
    return BulkImporter(rt.processor, rt.catalog, rt.clock.now)


def run(rt, kind, source, fmt):
    stream, _ = open_source(source)
    with stream:
        return importer(rt).run(kind, read_rows(stream, fmt))


def test_customers_csv(make_runtime, tmp_path):
    rt = make_runtime()
    path = tmp_path / "customers.csv"
    path.write_text(CUSTOMERS)
    report = run(rt, "customers", str(path), "csv")
    assert (report.rows, report.imported) == (4, 2)
    assert [(r.row, r.field) for r in report.rejected] == [(3, "user_id"), (4, "accepts_marketing")]
    ann = rt.stores.profiles.get(rt.stores.profiles.resolve("user_id", "c1"))
    assert ann.traits["email"] == "ann@example.com" and ann.traits["phone"] == "+33612345678"
    # importing never starts journeys: no welcome e-mail for last year's customers
    assert rt.stores.queue.depth("send") == 0
    again = run(rt, "customers", str(path), "csv")
    assert again.imported == 2 and rt.stores.events.count("import") == 2  # same rows, same events


def test_orders_jsonl_count_once_per_order(make_runtime, tmp_path):
    rt = make_runtime()
    path = tmp_path / "orders.jsonl"
    rows = [
        {"order_id": "o1", "user_id": "c1", "total": 40.5, "currency": "eur", "created_at": "2025-03-01T10:00:00Z",
         "products": [{"product_id": "p1", "quantity": 2, "price": 20.25}]},
        {"order_id": "o2", "email": "b@example.com", "total": -3, "created_at": "2025-03-01T10:00:00Z"},
        {"order_id": "o3", "user_id": "c1", "total": 10, "created_at": "2025-03-02T10:00:00Z"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    report = run(rt, "orders", str(path), "jsonl")
    assert report.imported == 2
    assert [(r.row, r.field) for r in report.rejected] == [(2, "total"), (4, None)]
    profile = rt.stores.profiles.get(rt.stores.profiles.resolve("user_id", "c1"))
    assert profile.traits["orders_count"] == 2 and profile.traits["total_spent"] == 50.5


def test_products_from_s3_feed_the_catalog(make_runtime):
    rt = make_runtime()
    body = "product_id,variant_id,title,price,stock,categories\np1,v1,Tee,20,0,Tops|Sale\np2,,Mug,abc,3,\n"
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="imports")
        s3.put_object(Bucket="imports", Key="products.csv", Body=body.encode())
        stream, size = open_source("s3://imports/products.csv", s3)
        with stream:
            report = importer(rt).run("products", read_rows(stream, "csv"))
    assert size == len(body)
    assert report.imported == 1 and report.rejected[0].field == "price"
    product = rt.stores.catalog.get("p1", "v1")
    assert product.categories == ["Tops", "Sale"] and product.stock == 0


def test_cli_import_prints_the_rejected_rows(tmp_path):
    from tests.functional.test_cli_and_serve import run as cli

    path = tmp_path / "customers.csv"
    path.write_text(CUSTOMERS)
    report = tmp_path / "rejected.csv"
    out = cli("import", "customers", str(path), "--data-dir", str(tmp_path / "d"), "--report", str(report))
    assert out.returncode == 1  # some rows were rejected
    assert "4 rows, 2 imported, 2 rejected" in out.stdout
    assert "row 4: accepts_marketing" in out.stdout
    assert report.read_text().splitlines()[1].startswith("3,user_id,")
    missing = cli("import", "customers", str(tmp_path / "nope.csv"), "--data-dir", str(tmp_path / "d"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
