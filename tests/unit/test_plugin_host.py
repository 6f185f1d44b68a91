"""The plugin host: discovery by entry point, allow/block lists, configuration, every hook.

The third-party plugin here is a real distribution on ``sys.path`` (a module plus a
``.dist-info`` folder with ``entry_points.txt``), found by importlib.metadata exactly as
an installed one is. Every hook in hookspecs has a ``test_hook_<name>`` below and a row
in the README (the meta-tests at the bottom check both).
"""

from __future__ import annotations

import ast
import sys
import textwrap
from pathlib import Path

import pytest

from chalicelib.config import PluginSelection, load_settings
from chalicelib.errors import ConfigError, PluginError
from chalicelib.plugin_api import ChannelContext
from chalicelib.plugin_host import PluginHost, hook_names

ROOT = Path(__file__).resolve().parents[2]

THIRD_PARTY = '''
from pydantic import SecretStr
from chalicelib.plugin_api import (
    Channel, EventSource, Model, PluginSettings, SendResult, hookimpl,
)

CALLS = []


class RecorderSettings(PluginSettings):
    token: SecretStr = SecretStr("")
    greeting: str = "hi"


class Recorder(Channel):
    name = "recorder"
    channel = "email"
    Settings = RecorderSettings

    def send(self, message):
        CALLS.append(("send", message.to))
        return SendResult(ok=True, provider_message_id="rec-" + message.message_id)


class Churn(Model):
    name = "tp_churn"
    kind = "churn"


class Shop(EventSource):
    name = "tp_shop"


@hookimpl
def register_channels(register):
    register(Recorder)


@hookimpl
def register_models(register):
    register(Churn)


@hookimpl
def register_sources(register):
    register(Shop)


@hookimpl
def event_received(event, profile):
    CALLS.append(("event_received", event.message_id, profile.profile_id))


@hookimpl
def before_send(message):
    CALLS.append(("before_send", message.message_id))


@hookimpl
def after_send(message, result):
    CALLS.append(("after_send", message.message_id, result.ok))
'''


def install_distribution(root: Path, dist: str, module: str, source: str, entry_name: str) -> None:
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[omnicast]\n{entry_name} = {module}\n")


@pytest.fixture
def third_party(tmp_path, monkeypatch):
    """Installs 'omnicast-thirdparty' (entry point 'thirdparty') and a broken plugin."""
    install_distribution(tmp_path, "omnicast_thirdparty", "omnicast_thirdparty", THIRD_PARTY, "thirdparty")
    install_distribution(tmp_path, "omnicast_broken", "omnicast_broken", "raise ImportError('no lib')", "broken")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield sys.modules.get("omnicast_thirdparty")
    for name in ("omnicast_thirdparty", "omnicast_broken"):
        sys.modules.pop(name, None)


def calls():
    return sys.modules["omnicast_thirdparty"].CALLS


def test_entry_point_plugins_load_with_version_and_hooks(third_party):
    host = PluginHost().load()
    info = host.describe()
    plugin = next(p for p in info["plugins"] if p["name"] == "thirdparty")
    assert plugin["distribution"] == "omnicast_thirdparty" and plugin["version"] == "1.2.3"
    assert set(plugin["hooks"]) == set(hook_names())
    assert info["skipped"]["broken"].startswith("failed to import: ImportError")


def test_block_list_and_allow_list(third_party):
    blocked = PluginHost(PluginSelection(block=["thirdparty"])).load()
    assert "recorder" not in blocked.registry.channels
    assert blocked.skipped["thirdparty"] == "blocked by plugins.block"
    allowed = PluginHost(PluginSelection(allow=["thirdparty"])).load()
    assert [p.name for p in allowed.loaded] == ["thirdparty"]
    assert allowed.skipped.get("smtp") in (None, "not in plugins.allow")


def test_channel_choice_is_configuration(third_party):
    host = PluginHost(PluginSelection(allow=["thirdparty"])).load()
    settings = load_settings({}, overrides={"channels": {"email": "recorder"},
                                           "plugin_settings": {"recorder": {"token": "s3cr3t-value"}}})
    channel = host.make_channel("email", settings, ChannelContext(clock=None, blobs=None))  # type: ignore[arg-type]
    assert channel.settings.token.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(channel)
    with pytest.raises(ConfigError, match="no channel plugin named 'nope'"):
        host.channel_class("email", {"email": "nope"})
    with pytest.raises(ConfigError, match="serves 'email', not 'sms'"):
        host.channel_class("sms", {"sms": "recorder"})
    bad = load_settings({}, overrides={"channels": {"email": "recorder"},
                                       "plugin_settings": {"recorder": {"greting": "typo"}}})
    with pytest.raises(ConfigError, match=r"plugin_settings.recorder.greting: unknown setting"):
        host.make_channel("email", bad, ChannelContext(clock=None, blobs=None))  # type: ignore[arg-type]


def test_duplicate_names_are_an_error(third_party, tmp_path):
    source = THIRD_PARTY.replace("CALLS = []", "CALLS = []  # copy")
    other = tmp_path / "other"
    other.mkdir()
    install_distribution(other, "omnicast_copycat", "omnicast_copycat", source, "copycat")
    sys.path.insert(0, str(other))
    try:
        with pytest.raises(PluginError, match="channel name 'recorder' registered twice"):
            PluginHost(PluginSelection(allow=["thirdparty", "copycat"])).load()
    finally:
        sys.path.remove(str(other))
        sys.modules.pop("omnicast_copycat", None)


# ----------------------------------------------------------------------------- one test per hook
def test_hook_register_channels(third_party):
    host = PluginHost(PluginSelection(allow=["thirdparty"])).load()
    assert host.registry.channels["recorder"].channel == "email"


def test_hook_register_models(third_party):
    host = PluginHost(PluginSelection(allow=["thirdparty"])).load()
    assert host.registry.models["tp_churn"].kind == "churn"


def test_hook_register_sources(third_party):
    host = PluginHost(PluginSelection(allow=["thirdparty"])).load()
    assert "tp_shop" in host.registry.sources


@pytest.fixture
def recorder_runtime(third_party, make_runtime):
    host = PluginHost(PluginSelection(allow=["thirdparty"])).load()
    runtime = make_runtime(channels={"email": "recorder"})
    runtime.host = host
    runtime.processor.host = host
    runtime.sender.host = host
    key = runtime.credentials.create_key("write", "t")
    return runtime, key


def _identify(runtime, key, message_id):
    body = f'{{"userId": "u1", "messageId": "{message_id}", "traits": {{"email": "a@example.com"}}}}'
    runtime.ingest.accept("identify", body.encode(), {"Authorization": "Bearer " + key})
    runtime.drain()


def test_hook_event_received(recorder_runtime):
    runtime, key = recorder_runtime
    _identify(runtime, key, "e1")
    _identify(runtime, key, "e1")  # a duplicate does not fire again
    fired = [c for c in calls() if c[0] == "event_received"]
    assert len(fired) == 1 and fired[0][1] == "e1"


def test_hook_before_send(recorder_runtime):
    runtime, key = recorder_runtime
    _identify(runtime, key, "e2")
    order = [c[0] for c in calls() if c[0] in ("before_send", "send", "after_send")]
    assert order == ["before_send", "send", "after_send"]


def test_hook_after_send(recorder_runtime):
    runtime, key = recorder_runtime
    _identify(runtime, key, "e3")
    after = [c for c in calls() if c[0] == "after_send"]
    assert len(after) == 1 and after[0][2] is True


def test_a_failing_lifecycle_hook_does_not_stop_the_message(recorder_runtime, caplog):
    runtime, key = recorder_runtime
    module = sys.modules["omnicast_thirdparty"]
    impl = runtime.host.pm.hook.before_send.get_hookimpls()[0]
    original = impl.function
    impl.function = lambda message: (_ for _ in ()).throw(RuntimeError("plugin bug"))
    try:
        _identify(runtime, key, "e4")
    finally:
        impl.function = original
    assert ("send", "a@example.com") in module.CALLS
    assert "failed in before_send" in caplog.text


# ----------------------------------------------------------------------------- meta-tests
def test_every_hook_has_a_test_here():
    names = {n.name for n in ast.parse(Path(__file__).read_text()).body if isinstance(n, ast.FunctionDef)}
    missing = [h for h in hook_names() if f"test_hook_{h}" not in names]
    assert not missing, f"hooks without a test_hook_<name>: {missing}"


def test_every_hook_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    missing = [h for h in hook_names() if f"| `{h}` |" not in readme]
    assert not missing, f"hooks missing from the README's Hooks table: {missing}"


def test_every_hook_is_typed_and_documented_in_the_hookspec_module():
    from chalicelib import hookspecs

    for name in hook_names():
        fn = getattr(hookspecs, name)
        assert fn.__doc__ and "Fires" in fn.__doc__, f"{name}: docstring must say when it fires"
        assert "return" in fn.__annotations__, f"{name}: return type missing"
        assert all(a in fn.__annotations__ for a in fn.__code__.co_varnames[: fn.__code__.co_argcount])

