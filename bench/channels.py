"""Messages per second through render + channel, and provider calls per 1,000 messages.

For each channel: N messages rendered from the built-in ``abandoned_cart`` template (Liquid,
sandboxed, one customer each) and handed to the channel plugin with ``send_batch`` in
batches of the plugin's ``batch_size`` (SNS and SMS APIs take one recipient per call; the
SMTP plugin keeps one connection open between batches, and the server counts them). The
sandboxes write to a local folder, SMTP goes to a real local server (aiosmtpd), SES and
SNS to moto. Every AWS call is counted. The baseline, in the same run, is rendering
alone: the ratio says what the channel costs on top of the template.

    python -m bench channels        (BENCH_CHANNEL_MESSAGES, default 2000)
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

N = int(os.environ.get("BENCH_CHANNEL_MESSAGES", "2000"))


def contexts(n: int) -> list[dict[str, Any]]:
    return [{
        "profile": {"first_name": f"Ann{i}", "email": f"ann{i}@example.com", "locale": "en"},
        "shop": {"name": "Bench Shop", "url": "https://shop.example", "currency": "EUR"},
        "properties": {"checkout_url": f"https://shop.example/checkout/{i}",
                       "products": [{"name": "Organic tee", "price": 24, "quantity": 2}]},
        "products": [{"name": "Organic tee", "price": 24, "quantity": 2}],
        "unsubscribe_url": f"https://shop.example/u/{i}",
    } for i in range(n)]


def render_all(n: int) -> tuple[float, list[tuple[str, str, str | None]]]:
    from chalicelib.services.templates import TemplateRenderer

    renderer = TemplateRenderer()
    ctx = contexts(n)
    start = time.perf_counter()
    out = [renderer.render("abandoned_cart", c) for c in ctx]
    return time.perf_counter() - start, out


def run_channel(cls: Any, settings: dict[str, Any], to: str, n: int, blobs_dir: Path) -> tuple[float, int, int]:
    """Seconds for render + send of n messages, and (sent ok, batches)."""
    from chalicelib.adapters.local.blobs import FolderBlobStore
    from chalicelib.clock import ManualClock
    from chalicelib.plugin_api import ChannelContext, OutboundMessage
    from chalicelib.services.templates import TemplateRenderer

    channel = cls(cls.Settings(**settings), ChannelContext(ManualClock(datetime(2026, 3, 2, 10, tzinfo=UTC)),
                                                            FolderBlobStore(blobs_dir)))
    renderer = TemplateRenderer()
    ctx = contexts(n)
    ok = batches = 0
    start = time.perf_counter()
    for first in range(0, n, cls.batch_size):
        batch = []
        for i in range(first, min(first + cls.batch_size, n)):
            subject, text, html = renderer.render("abandoned_cart", ctx[i])
            batch.append(OutboundMessage(message_id=f"bench-{i}", channel=cls.channel, to=to, subject=subject,
                                         text=text if cls.channel == "email" else text[:300],
                                         html=html if cls.channel == "email" else None))
        ok += sum(r.ok for r in channel.send_batch(batch))
        batches += 1
    elapsed = time.perf_counter() - start
    channel.close()
    return elapsed, ok, batches


def main() -> None:
    import botocore.client
    from aiosmtpd.controller import Controller
    from moto import mock_aws

    from chalicelib.plugin_host import PluginHost
    from tests.conftest import SmtpCatcher, free_port

    registry = PluginHost().load().registry.channels
    calls: Counter[str] = Counter()
    original = botocore.client.BaseClient._make_api_call

    def counting(self: Any, operation: str, params: Any) -> Any:
        calls[f"{self.meta.service_model.service_name}.{operation}"] += 1
        return original(self, operation, params)

    t_render, _ = render_all(N)
    rows: list[tuple[str, float, int, int, dict[str, int]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, to in (("sandbox_sms", "+14155550100"), ("sandbox_push", "device-token-1")):
            t, ok, _ = run_channel(registry[name], {}, to, N, Path(tmp) / name)
            rows.append((name, t, ok, 0, {}))
        class CountingCatcher(SmtpCatcher):
            connections = 0

            async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                                  responses: list[str]) -> list[str]:
                self.connections += 1  # one EHLO per SMTP connection
                session.host_name = hostname
                return responses

        for connections in (1, 4):  # the server shares this process (and its GIL) with the sender
            catcher = CountingCatcher()
            smtp = Controller(catcher, hostname="127.0.0.1", port=free_port())
            smtp.start()
            try:
                t, ok, _ = run_channel(registry["smtp"], {"host": "127.0.0.1", "port": smtp.port,
                                                          "connections": connections},
                                       "ann@example.com", N, Path(tmp) / f"smtp{connections}")
                rows.append((f"smtp, connections={connections} (aiosmtpd on loopback)", t, len(catcher.messages), 0,
                             {"SMTP connections": catcher.connections}))
            finally:
                smtp.stop()
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            os.environ.setdefault(key, "bench")
        botocore.client.BaseClient._make_api_call = counting  # type: ignore[method-assign]
        try:
            with mock_aws():
                import boto3

                boto3.client("ses", region_name="us-east-1").verify_domain_identity(Domain="example.com")
                for name, settings, to in (("ses", {"from_address": "shop@example.com"}, "ann@example.com"),
                                           ("sns_sms", {}, "+14155550100")):
                    calls.clear()
                    t, ok, _ = run_channel(registry[name], settings, to, N, Path(tmp) / name)
                    rows.append((f"{name} (moto)", t, ok, sum(calls.values()), dict(calls)))
        finally:
            botocore.client.BaseClient._make_api_call = original  # type: ignore[method-assign]
    print(f"{N:,} messages per channel: render (built-in abandoned_cart template) + channel send_batch "
          f"in batches of the plugin's batch_size")
    print(f"  baseline, render only: {N / t_render:10,.0f} messages/s")
    for name, t, ok, ncalls, detail in rows:
        extra = ""
        if ncalls:
            extra = f"; {1000 * ncalls / N:,.0f} AWS calls per 1,000 messages (" + ", ".join(
                f"{k} {v * 1000 / N:,.0f}" for k, v in sorted(detail.items())) + ")"
        elif detail:
            extra = "; " + ", ".join(f"{k}: {v:,} for {N:,} messages" for k, v in detail.items())
        print(f"  {name:<28} {N / t:10,.0f} messages/s  (ratio to render only {t_render / t:.2f}); "
              f"{ok:,} delivered{extra}")


if __name__ == "__main__":
    main()
