"""The local HTTP server (Chalice's, with Omnicast's request handler)."""

from __future__ import annotations

import http.client
from email.utils import formatdate

from chalicelib import server as server_module
from chalicelib.server import LocalStack


def test_the_date_header_follows_the_clock_second_by_second(runtime, monkeypatch):
    stack = LocalStack(runtime, port=0, workers=False).start()
    now = [1_790_000_000.2]
    monkeypatch.setattr(server_module.time, "time", lambda: now[0])
    try:
        conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
        dates = []
        for at in (1_790_000_000.2, 1_790_000_000.9, 1_790_000_001.0, 1_790_000_063.5):
            now[0] = at
            conn.request("GET", "/health")
            response = conn.getresponse()
            response.read()
            dates.append(response.getheader("Date"))
        conn.close()
    finally:
        stack.stop()
    assert dates == [formatdate(t, usegmt=True) for t in (1_790_000_000, 1_790_000_000, 1_790_000_001, 1_790_000_063)]
