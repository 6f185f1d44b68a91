"""The official Segment and RudderStack Python clients, pointed at a running local stack,
deliver every call with no error and no retry."""

from __future__ import annotations

import pytest

from chalicelib.server import LocalStack


@pytest.fixture
def stack(runtime):
    stack = LocalStack(runtime, port=0).start()
    yield stack
    stack.stop()


def calls(client):
    client.identify("sdk-user", {"email": "sdk@example.com", "first_name": "Sid"}, anonymous_id="sdk-anon")
    client.track("sdk-user", "Product Viewed", {"product_id": "sku-1", "price": 12.5})
    client.page("sdk-user", "Shop", "Home", {"url": "https://shop.example/"})
    client.screen("sdk-user", "App", "Cart", {})
    client.group("sdk-user", "company-9", {"name": "Acme"})
    client.alias("sdk-anon-2", "sdk-user")
    client.flush()


def _check(runtime, errors):
    assert errors == []
    runtime.drain()
    stored = {e.type for e in runtime.stores.events.for_profile(
        runtime.stores.profiles.resolve("user_id", "sdk-user"), 100)}
    assert stored == {"identify", "track", "page", "screen", "group", "alias"}
    assert runtime.stores.events.count("segment") == 6


def test_segment_analytics_python(runtime, stack):
    from segment.analytics import Client

    key = runtime.credentials.create_key("write", "segment-sdk")
    errors = []
    client = Client(key, host=stack.url, sync_mode=True, max_retries=0,
                    on_error=lambda e, batch: errors.append((e, batch)))
    calls(client)
    _check(runtime, errors)


def test_rudderstack_python_sdk_with_gzip(runtime, stack):
    from rudderstack.analytics.client import Client

    key = runtime.credentials.create_key("write", "rudder-sdk")
    errors = []
    client = Client(key, host=stack.url, sync_mode=True, max_retries=0, gzip=True,
                    on_error=lambda e, batch: errors.append((e, batch)))
    calls(client)
    _check(runtime, errors)


def test_a_wrong_write_key_is_reported_to_the_client(runtime, stack):
    from segment.analytics import Client
    from segment.analytics.request import APIError

    client = Client("ocw_wrong-key-0123456789", host=stack.url, sync_mode=True, max_retries=0)
    with pytest.raises(APIError) as err:
        client.track("u", "X", {})
    assert err.value.status == 401 and err.value.message == "unknown write key"
    assert runtime.stores.queue.depth("ingest") == 0
