"""Shared fixtures: an injected clock, a real SMTP server, a runtime on SQLite, an HTTP client."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from chalice.test import Client

from chalicelib.adapters.local import local_stores
from chalicelib.clock import ManualClock
from chalicelib.config import load_settings
from chalicelib.runtime import Runtime, set_runtime

SHARED_FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "webhooks"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SmtpCatcher:
    """An aiosmtpd handler that keeps what it receives."""

    messages: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)
    port: int = 0
    arrived: threading.Condition = field(default_factory=threading.Condition)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = message_from_bytes(envelope.content, policy=policy.default)
        with self.arrived:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), msg))  # type: ignore[arg-type]
            self.arrived.notify_all()
        return "250 OK"

    def wait_for(self, count: int, timeout: float = 30.0) -> bool:
        """Block until ``count`` messages arrived (for servers running in another process)."""
        with self.arrived:
            return self.arrived.wait_for(lambda: len(self.messages) >= count, timeout=timeout)


@pytest.fixture
def smtp_server() -> Iterator[SmtpCatcher]:
    catcher = SmtpCatcher()
    controller = Controller(catcher, hostname="127.0.0.1", port=free_port())
    controller.start()
    catcher.port = controller.port
    try:
        yield catcher
    finally:
        controller.stop()


@pytest.fixture
def clock() -> ManualClock:
    # a Monday at 10:00 UTC: outside the default quiet hours
    return ManualClock(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))


@pytest.fixture
def make_runtime(tmp_path: Path, clock: ManualClock) -> Iterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def make(smtp: SmtpCatcher | None = None, stores: Any = None, **overrides: Any) -> Runtime:
        base: dict[str, Any] = {"data_dir": str(tmp_path / "data")}
        if smtp is not None:
            base["channels"] = {"email": "smtp"}
            base["plugin_settings"] = {"smtp": {"host": "127.0.0.1", "port": smtp.port}}
        base.update(overrides)
        settings = load_settings({}, overrides=base)
        runtime = Runtime(settings, stores=stores or local_stores(None), clock=clock)
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime.close()
    set_runtime(None)


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime], smtp_server: SmtpCatcher) -> Runtime:
    return make_runtime(smtp_server)


@dataclass
class Api:
    """chalice.test.Client with the runtime installed and a write key at hand."""

    client: Client
    runtime: Runtime
    write_key: str
    admin_key: str

    def auth(self, key: str | None = None) -> dict[str, str]:
        token = base64.b64encode(f"{key or self.write_key}:".encode()).decode()
        return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        raw = body if isinstance(body, str | bytes) else json.dumps(body)
        return self.client.http.post(path, headers=headers if headers is not None else self.auth(), body=raw)

    def admin_get(self, path: str) -> Any:
        return self.client.http.get(path, headers={"Authorization": f"Bearer {self.admin_key}"})


@pytest.fixture
def api(runtime: Runtime) -> Iterator[Api]:
    import app as app_module

    set_runtime(runtime)
    write_key = runtime.credentials.create_key("write", "test-site")
    admin_key = runtime.credentials.create_key("admin", "test-admin")
    with Client(app_module.app) as client:
        yield Api(client, runtime, write_key, admin_key)
    set_runtime(None)


# --------------------------------------------------------------------------- a recording channel set
class Outbox:
    """What the recording channels were asked to send, per channel kind."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.fail_next: list[Any] = []  # SendResults to return instead of success, in order

    def to(self, channel: str) -> list[Any]:
        return [m for m in self.sent if m.channel == channel]


def recording_plugin(outbox: Outbox) -> Any:
    import types

    from chalicelib.plugin_api import Channel, SendResult, hookimpl

    def make(kind: str) -> type[Channel]:
        class Recorder(Channel):
            name = f"rec_{kind}"
            channel = kind

            def send(self, message: Any) -> SendResult:
                if outbox.fail_next:
                    return outbox.fail_next.pop(0)
                outbox.sent.append(message)
                return SendResult(ok=True, provider_message_id=f"rec-{message.message_id}")

        return Recorder

    classes = [make(k) for k in ("email", "sms", "push", "messenger")]
    module = types.ModuleType("recording_channels")

    @hookimpl
    def register_channels(register: Any) -> None:
        for cls in classes:
            register(cls)

    module.register_channels = register_channels  # type: ignore[attr-defined]
    return module


@pytest.fixture
def outbox() -> Outbox:
    return Outbox()


@pytest.fixture
def rec_runtime(make_runtime: Callable[..., Runtime], outbox: Outbox) -> Callable[..., Runtime]:
    """A runtime whose channels record instead of delivering (for journey and policy logic)."""
    from chalicelib.plugin_host import PluginHost

    def make(**overrides: Any) -> Runtime:
        overrides.setdefault("channels", {k: f"rec_{k}" for k in ("email", "sms", "push", "messenger")})
        overrides.setdefault("plugins", {"allow": []})
        runtime = make_runtime(**overrides)
        host = PluginHost(runtime.settings.plugins).load(extra=[("recording", recording_plugin(outbox))])
        runtime.host = runtime.processor.host = runtime.sender.host = runtime.sources.host = host
        return runtime

    return make
