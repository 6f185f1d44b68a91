"""The table of contents of Omnicast's extension API: every hook, typed and documented.

Registration hooks hand the plugin a core-owned ``register`` callback; the core keeps
the registry, checks names for duplicates and decides (by configuration) which
registered plugin serves which channel or model. Lifecycle hooks only notify: their
return values are ignored, and an exception in one is logged and does not stop the
message or event (a broken analytics plugin must not stop a shop's order email).

Each hook is documented in the README's "Hooks" table; a test checks that every hook
here has a row there and a test of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from chalicelib.plugin_api import (
        Channel,
        EventSource,
        Model,
        OutboundMessage,
        SendResult,
    )
    from chalicelib.ports import Profile, StoredEvent

hookspec = pluggy.HookspecMarker("omnicast")


@hookspec
def register_channels(register: Callable[[type[Channel]], None]) -> None:
    """Register channel plugin classes.

    :param register: call once per :class:`~chalicelib.plugin_api.Channel` subclass.
        A name already registered is an error naming both plugins.

    Fires once per process, when the plugin host loads. Return value ignored.
    """


@hookspec
def register_models(register: Callable[[type[Model]], None]) -> None:
    """Register model plugin classes (:class:`~chalicelib.plugin_api.Model` subclasses).

    Fires once per process, when the plugin host loads. Return value ignored.
    """


@hookspec
def register_sources(register: Callable[[type[EventSource]], None]) -> None:
    """Register event source classes (:class:`~chalicelib.plugin_api.EventSource`).

    Fires once per process, when the plugin host loads. Return value ignored.
    """


@hookspec
def event_received(event: StoredEvent, profile: Profile) -> None:
    """Notify that a new canonical event was applied to ``profile``.

    Fires once per event (duplicates do not fire again), after the profile is saved and
    before journeys are evaluated. Return value ignored; exceptions are logged.
    """


@hookspec
def before_send(message: OutboundMessage) -> None:
    """Notify that ``message`` passed the send policy and is about to go to its channel.

    Fires once per send attempt. Return value ignored; exceptions are logged.
    """


@hookspec
def after_send(message: OutboundMessage, result: SendResult) -> None:
    """Notify what the channel reported for ``message``.

    Fires once per send attempt, successful or not. Return value ignored; exceptions
    are logged.
    """
