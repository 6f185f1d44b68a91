"""BigCommerce source: Standard Webhooks verification on the shared fixtures, and the store API
fetch against a loopback server that answers as BigCommerce's API documentation says."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from omnicast_source_bigcommerce import BigCommerce, BigCommerceSettings, StoreApiError, StoreApiRetryable

from chalicelib.events import parse_call
from chalicelib.plugin_api import SignatureError, WebhookRequest, standard_webhooks_signature

FIXTURES = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "webhooks"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"shared fixtures not found at {FIXTURES}")
FILES = sorted(p.name for p in FIXTURES.glob("bigcommerce__*.json")) if FIXTURES.is_dir() else []
VECTOR_TIME = datetime.fromtimestamp(1700000000, UTC)
TOKEN = "bc-access-token-secret"

ORDER = {"id": 250, "customer_id": 32, "status_id": 11, "status": "Awaiting Fulfillment", "cart_id": "cart-9",
         "date_created": "Tue, 25 Jun 2019 16:15:35 +0000", "date_modified": "Tue, 25 Jun 2019 16:15:36 +0000",
         "subtotal_ex_tax": "200.0000", "total_tax": "25.0000", "total_inc_tax": "225.0000",
         "shipping_cost_inc_tax": "0.0000", "discount_amount": "0.0000", "currency_code": "USD",
         "billing_address": {"first_name": "Jane", "email": "Jane@Example.com", "country_iso2": "US"}}
ORDER_PRODUCTS = [{"id": 1, "order_id": 250, "product_id": 77, "variant_id": 101, "name": "Fog Linen Chambray Towel",
                   "sku": "SLCTBS", "quantity": 2, "price_inc_tax": "100.0000"}]
CART = {"data": {"id": "09346904-4175-44fd-be53-f7e598531b6c", "customer_id": 32, "email": "jane@example.com",
                 "currency": {"code": "USD"}, "cart_amount": 49.5,
                 "line_items": {"physical_items": [{"product_id": 77, "variant_id": 101, "name": "Towel",
                                                    "sku": "SLCTBS", "quantity": 1, "sale_price": 49.5,
                                                    "url": "https://store.example/towel/"}], "digital_items": []}}}
CUSTOMERS = {"data": [{"id": 32, "email": "jane@example.com", "first_name": "Jane", "last_name": "Doe",
                       "phone": "", "date_created": "2019-06-25T16:12:51Z", "date_modified": "2019-06-25T16:12:51Z"}],
             "meta": {"pagination": {"total": 1}}}


class StoreApi(BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, object, dict[str, str]]] = {}
    seen: list[tuple[str, str | None]] = []

    def do_GET(self):
        StoreApi.seen.append((self.path, self.headers.get("X-Auth-Token")))
        if self.headers.get("X-Auth-Token") != TOKEN:
            return self._send(401, {"status": 401, "title": "Unauthorized"})
        status, body, headers = StoreApi.routes.get(self.path, (404, {"status": 404, "title": "Not Found"}, {}))
        self._send(status, body, headers)

    def _send(self, status, body, headers=None):
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@pytest.fixture
def api():
    StoreApi.routes = {
        "/stores/abc123/v2/orders/250": (200, ORDER, {}),
        "/stores/abc123/v2/orders/250/products": (200, ORDER_PRODUCTS, {}),
        "/stores/abc123/v3/carts/09346904-4175-44fd-be53-f7e598531b6c": (200, CART, {}),
        "/stores/abc123/v3/customers?id:in=32": (200, CUSTOMERS, {}),
    }
    StoreApi.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), StoreApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def vectors():
    return json.loads((FIXTURES / "signature_vectors.json").read_text())


def secret():
    return vectors()["secrets"]["bigcommerce_client_secret"]


def request(body: bytes, at: datetime, msg_id="msg_1", stamp=None, sig=None):
    stamp = stamp if stamp is not None else int(at.timestamp())
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(stamp),
               "webhook-signature": sig or standard_webhooks_signature(secret(), msg_id, stamp, body)}
    return WebhookRequest(source="bigcommerce", headers=headers, body=body, received_at=at)


def src(api_url="http://127.0.0.1:9", token=TOKEN):
    return BigCommerce(BigCommerceSettings(store_hash="abc123", access_token=token, api_base_url=api_url,
                                           store_url="https://store.example"))


def test_known_answer_vector():
    kat = vectors()["kat"][next(k for k in vectors()["kat"] if k.startswith("bigcommerce"))]
    assert src().verify(request(b'{"id":1}', VECTOR_TIME, "msg_1", 1700000000, kat), [secret()]) is None
    with pytest.raises(SignatureError):
        src().verify(request(b'{"id":1}', VECTOR_TIME, "msg_2", 1700000000, kat), [secret()])


@pytest.mark.parametrize("name", FILES)
def test_fixtures_verify_with_a_pinned_clock_and_map(name, api):
    raw = (FIXTURES / name).read_bytes()
    v = vectors()["files"][name]
    req = request(raw, VECTOR_TIME, v["webhook-id"], int(v["webhook-timestamp"]), v["webhook-signature"])
    source = src(api)
    source.verify(req, ["old-secret", secret()])
    with pytest.raises(SignatureError, match="tolerance"):
        source.verify(request(raw, VECTOR_TIME + timedelta(days=1), v["webhook-id"], int(v["webhook-timestamp"]),
                              v["webhook-signature"]), [secret()])
    with pytest.raises(SignatureError, match="does not match"):
        source.verify(request(raw.replace(b"1025646", b"1025647"), VECTOR_TIME, v["webhook-id"],
                              int(v["webhook-timestamp"]), v["webhook-signature"]), [secret()])
    assert source.delivery(req).delivery_id == v["webhook-id"]
    out = source.to_output(req)
    assert out.events or out.catalog
    for event in out.events:
        parse_call(event["type"], event, VECTOR_TIME)


def test_order_fetch_uses_the_token_and_maps(api):
    raw = (FIXTURES / "bigcommerce__store_order_created__bigcommerce-docs.json").read_bytes()
    [order] = src(api).to_output(request(raw, VECTOR_TIME)).events
    assert ("/stores/abc123/v2/orders/250", TOKEN) in StoreApi.seen
    assert order["event"] == "Order Completed" and order["properties"]["total"] == 225.0
    assert order["properties"]["products"][0]["variant"] == "101"
    assert order["context"]["traits"]["email"] == "jane@example.com"
    assert order["timestamp"] == "2019-06-25T16:15:36+00:00"


def test_status_updates_and_abandoned_carts(api):
    raw = (FIXTURES / "bigcommerce__store_order_statusUpdated__bigcommerce-docs.json").read_bytes()
    body = json.loads(raw)
    body["data"]["status"]["new_status_id"] = 2
    [shipped] = src(api).to_output(request(json.dumps(body).encode(), VECTOR_TIME)).events
    assert shipped["event"] == "Order Fulfilled"
    raw = (FIXTURES / "bigcommerce__store_cart_abandoned__bigcommerce-docs.json").read_bytes()
    [cart] = src(api).to_output(request(raw, VECTOR_TIME)).events
    assert cart["event"] == "Checkout Started"
    assert cart["properties"]["checkout_url"].startswith("https://store.example/cart.php?action=load")


def test_inventory_needs_no_fetch():
    raw = (FIXTURES / "bigcommerce__store_product_inventory_updated__bigcommerce-docs.json").read_bytes()
    [item] = src().to_output(request(raw, VECTOR_TIME)).catalog
    assert (item.product_id, item.stock) == ("167", 100000000)


def test_api_errors(api):
    order = (FIXTURES / "bigcommerce__store_order_created__bigcommerce-docs.json").read_bytes()
    StoreApi.routes["/stores/abc123/v2/orders/250"] = (429, {"title": "Too many requests"}, {"Retry-After": "7"})
    with pytest.raises(StoreApiRetryable) as err:
        src(api).to_output(request(order, VECTOR_TIME))
    assert err.value.retry_after == 7
    StoreApi.routes["/stores/abc123/v2/orders/250"] = (500, {"title": "oops"}, {})
    with pytest.raises(StoreApiRetryable):
        src(api).to_output(request(order, VECTOR_TIME))
    with pytest.raises(StoreApiError) as err:
        src(api, token="wrong-token").to_output(request(order, VECTOR_TIME))
    assert "401" in str(err.value) and "wrong-token" not in str(err.value) and TOKEN not in str(err.value)
    del StoreApi.routes["/stores/abc123/v2/orders/250"]
    assert src(api).to_output(request(order, VECTOR_TIME)).events == []  # deleted meanwhile: nothing


def test_signature_rejections():
    body = b'{"scope": "store/order/created", "data": {"id": 1}}'
    now = VECTOR_TIME
    with pytest.raises(SignatureError, match="missing"):
        src().verify(WebhookRequest(source="bigcommerce", headers={}, body=body, received_at=now), [secret()])
    with pytest.raises(SignatureError, match="tolerance"):
        src().verify(request(body, now, stamp=int(now.timestamp()) - 400), [secret()])
    multi = "v1,AAAA " + standard_webhooks_signature(secret(), "msg_1", int(now.timestamp()), body)
    src().verify(request(body, now, sig=multi), [secret()])
    assert "bc-access-token-secret" not in repr(src().settings)
