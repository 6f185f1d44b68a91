"""The plugin host: loads plugins once, keeps the registries, and calls hooks typed.

Every plugin (built-in ones in ``plugins/`` too) is found through the ``omnicast``
entry-point group, so a third party ships one exactly as we do. Configuration decides:
``plugins.allow`` / ``plugins.block`` by entry-point name, and which registered plugin
serves each channel kind (``channels.email = "smtp"``). The rest of the core calls the
methods of :class:`PluginHost`, never ``pm.hook`` directly.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pluggy
from pydantic import ValidationError

from chalicelib import hookspecs
from chalicelib.config import PluginSelection, Settings
from chalicelib.errors import ConfigError, PluginError
from chalicelib.plugin_api import (
    PROJECT,
    Channel,
    ChannelContext,
    EventSource,
    Model,
    OutboundMessage,
    PluginSettings,
    SendResult,
)
from chalicelib.ports import Profile, StoredEvent

log = logging.getLogger("omnicast.plugins")
T = TypeVar("T", Channel, Model, EventSource)


@dataclass
class LoadedPlugin:
    name: str  # entry-point name
    module: str
    distribution: str | None
    version: str | None
    hooks: list[str]


@dataclass
class Registry:
    channels: dict[str, type[Channel]] = field(default_factory=dict)
    models: dict[str, type[Model]] = field(default_factory=dict)
    sources: dict[str, type[EventSource]] = field(default_factory=dict)
    owner: dict[str, str] = field(default_factory=dict)  # "channel:smtp" -> plugin name


class PluginHost:
    """Typed facade over pluggy's PluginManager."""

    def __init__(self, selection: PluginSelection | None = None) -> None:
        self.selection = selection or PluginSelection()
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.loaded: list[LoadedPlugin] = []
        self.skipped: dict[str, str] = {}  # name -> why it was not loaded
        self.registry = Registry()
        self._loaded = False
        if self.selection.trace:
            self.pm.trace.root.setwriter(lambda msg: log.debug("hook %s", msg.rstrip()))
            self.pm.enable_tracing()

    # ------------------------------------------------------------------ loading
    def load(self, extra: list[tuple[str, object]] | None = None) -> PluginHost:
        """Load entry-point plugins (once) and any ``extra`` (name, module) given by tests."""
        if self._loaded:
            return self
        for name in self.selection.block:
            self.pm.set_blocked(name)
        allow = None if self.selection.allow is None else set(self.selection.allow)
        seen: set[str] = set()
        for ep in sorted(md.entry_points(group=PROJECT), key=lambda e: e.name):
            if ep.name in seen:
                continue  # the same distribution found twice on sys.path
            seen.add(ep.name)
            if ep.name in self.selection.block:
                self.skipped[ep.name] = "blocked by plugins.block"
                continue
            if allow is not None and ep.name not in allow:
                self.skipped[ep.name] = "not in plugins.allow"
                continue
            try:
                module = ep.load()
            except Exception as exc:  # noqa: BLE001 - a broken third-party plugin must not stop the shop
                self.skipped[ep.name] = f"failed to import: {type(exc).__name__}: {exc}"
                log.warning("plugin %s failed to import: %s", ep.name, exc)
                continue
            dist = ep.dist
            self._register(ep.name, module, dist.name if dist else None, dist.version if dist else None)
        for name, module in extra or []:
            self._register(name, module, None, None)
        self.pm.check_pending()
        self.pm.hook.register_channels(register=self._registrar("channel", self.registry.channels, Channel))
        self.pm.hook.register_models(register=self._registrar("model", self.registry.models, Model))
        self.pm.hook.register_sources(register=self._registrar("source", self.registry.sources, EventSource))
        self._loaded = True
        return self

    def _register(self, name: str, module: object, dist: str | None, version: str | None) -> None:
        if self.pm.is_blocked(name):
            return
        try:
            self.pm.register(module, name=name)
        except ValueError as exc:
            raise PluginError(f"plugin {name!r} could not be registered: {exc}") from exc
        hooks = sorted(h.name for h in self.pm.get_hookcallers(module) or [])
        module_name = getattr(module, "__name__", type(module).__name__)
        self.loaded.append(LoadedPlugin(name, module_name, dist, version, hooks))

    def _registrar(self, kind: str, table: dict[str, Any], base: type) -> Any:
        def register(cls: type) -> None:
            if not (isinstance(cls, type) and issubclass(cls, base)):
                raise PluginError(f"register_{kind}s was given {cls!r}, not a {base.__name__} subclass")
            name = getattr(cls, "name", None)
            if not isinstance(name, str) or not name:
                raise PluginError(f"{cls.__qualname__} has no name")
            if name in table:
                raise PluginError(
                    f"{kind} name {name!r} registered twice: {table[name].__module__} and {cls.__module__}"
                )
            table[name] = cls

        return register

    # ------------------------------------------------------------------ choosing
    def channel_class(self, kind: str, configured: dict[str, str]) -> type[Channel]:
        """The channel plugin serving ``kind``: the configured one, or the only one."""
        if kind in configured:
            name = configured[kind]
            cls = self.registry.channels.get(name)
            if cls is None:
                known = ", ".join(sorted(self.registry.channels)) or "none"
                raise ConfigError(f"channels.{kind}: no channel plugin named {name!r} (installed: {known})")
            if cls.channel != kind:
                raise ConfigError(f"channels.{kind}: plugin {name!r} serves {cls.channel!r}, not {kind!r}")
            return cls
        candidates = [c for c in self.registry.channels.values() if c.channel == kind]
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise ConfigError(f"channels.{kind}: no installed plugin serves the {kind!r} channel")
        names = ", ".join(sorted(c.name for c in candidates))
        raise ConfigError(f"channels.{kind}: several plugins serve {kind!r} ({names}); choose one")

    def make_channel(self, kind: str, settings: Settings, context: ChannelContext) -> Channel:
        cls = self.channel_class(kind, settings.channels)
        return cls(plugin_settings(cls.Settings, cls.name, settings), context)

    # ------------------------------------------------------------------ lifecycle hooks
    def event_received(self, event: StoredEvent, profile: Profile) -> None:
        self._notify("event_received", event=event, profile=profile)

    def before_send(self, message: OutboundMessage) -> None:
        self._notify("before_send", message=message)

    def after_send(self, message: OutboundMessage, result: SendResult) -> None:
        self._notify("after_send", message=message, result=result)

    def _notify(self, hook: str, **kwargs: Any) -> None:
        caller = getattr(self.pm.hook, hook)
        for impl in reversed(caller.get_hookimpls()):
            try:
                impl.function(**{a: kwargs[a] for a in impl.argnames})
            except Exception:
                log.exception("plugin %s failed in %s", impl.plugin_name, hook)

    # ------------------------------------------------------------------ introspection
    def describe(self) -> dict[str, Any]:
        """Plugins, versions and hooks, for ``GET /admin/plugins`` and ``omnicast plugins``."""
        reg = self.registry
        return {
            "plugins": [
                {
                    "name": p.name,
                    "module": p.module,
                    "distribution": p.distribution,
                    "version": p.version,
                    "hooks": p.hooks,
                }
                for p in self.loaded
            ],
            "skipped": self.skipped,
            "channels": {n: {"channel": c.channel, "module": c.__module__} for n, c in sorted(reg.channels.items())},
            "models": {n: {"kind": c.kind, "module": c.__module__} for n, c in sorted(reg.models.items())},
            "sources": {n: {"module": c.__module__} for n, c in sorted(reg.sources.items())},
            "hookspecs": sorted(hook_names()),
        }


def hook_names() -> list[str]:
    """Every hook declared in :mod:`chalicelib.hookspecs`."""
    return sorted(n for n in vars(hookspecs) if hasattr(getattr(hookspecs, n), "omnicast_spec"))


def plugin_settings(model: type[PluginSettings], name: str, settings: Settings) -> PluginSettings:
    """Validate ``plugin_settings.<name>`` into the plugin's own Settings model."""
    raw = settings.plugin_settings.get(name, {})
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"plugin_settings.{name}.{'.'.join(str(p) for p in e['loc'])}: "
            + ("unknown setting" if e["type"] == "extra_forbidden" else e["msg"])
            for e in exc.errors()
        )
        raise ConfigError(problems) from exc
