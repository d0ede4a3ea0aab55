"""Which channels Parley serves: names mapped to `Channel` instances.

Every package under ``parley/channels/`` that exposes a module-level ``channel`` is registered
in the default registry when this module is first imported, so a new channel needs no line
here. Tests add their own channels for a while with `registered`.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator
from contextlib import contextmanager

import parley.channels
from parley.channels.base import Channel
from parley.errors import UnknownChannel

__all__ = ["DEFAULT", "Registry", "get", "names", "register", "registered", "unregister"]

# The name is a URL segment, part of a setting's name and a stored 32-character column.
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


class Registry:
    def __init__(self) -> None:
        self._channels: dict[str, Channel] = {}

    def register(self, channel: Channel) -> Channel:
        """Add `channel` under its name; a name already taken is refused, never replaced."""
        name = channel.name
        if not _NAME.fullmatch(name):
            raise ValueError(f"channel name {name!r} must match {_NAME.pattern}")
        if name in self._channels:
            raise ValueError(f"a channel named {name!r} is already registered")
        self._channels[name] = channel
        return channel

    def unregister(self, name: str) -> None:
        if self._channels.pop(name, None) is None:
            raise UnknownChannel(name)

    def get(self, name: str) -> Channel:
        try:
            return self._channels[name]
        except KeyError:
            raise UnknownChannel(name) from None

    def names(self) -> list[str]:
        return sorted(self._channels)

    def __contains__(self, name: object) -> bool:
        return name in self._channels

    @contextmanager
    def registered(self, channel: Channel) -> Iterator[Channel]:
        """`channel` registered for the block, gone after it however the block ends."""
        self.register(channel)
        try:
            yield channel
        finally:
            self.unregister(channel.name)


def discover(registry: Registry) -> None:
    """Register the ``channel`` of every package under ``parley/channels/``."""
    for module in pkgutil.iter_modules(parley.channels.__path__, "parley.channels."):
        if not module.ispkg:
            continue
        channel = getattr(importlib.import_module(module.name), "channel", None)
        if isinstance(channel, Channel):
            registry.register(channel)


DEFAULT = Registry()
discover(DEFAULT)

register = DEFAULT.register
unregister = DEFAULT.unregister
get = DEFAULT.get
names = DEFAULT.names
registered = DEFAULT.registered
