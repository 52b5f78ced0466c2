"""The adapter's hooks: how a caller learns of each call as it starts and once it has finished,
without db/ knowing who listens (the harness turns each finished call into Locust's `request`
event; a tool server would need no Locust at all)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

__all__ = ["CallHook", "Hook"]

_Listener = TypeVar("_Listener", bound=Callable[..., object])


class CallHook(Protocol):
    """What the adapter fires: `Hook` below, or anything with the same `fire` (Locust's
    `EventHook`, which the harness gives so that a listener's exception is handled as Locust
    handles any other listener's: logged, and the next listener still called)."""

    def fire(self, **kwargs: Any) -> None: ...


class Hook:
    """Listeners called in the order they were added, each with the keyword arguments given to
    `fire`. A listener that raises stops the fire and reaches the code that fired it."""

    def __init__(self) -> None:
        self._listeners: list[Callable[..., object]] = []

    def add_listener(self, listener: _Listener) -> _Listener:
        self._listeners.append(listener)
        return listener

    def remove_listener(self, listener: Callable[..., object]) -> None:
        self._listeners.remove(listener)

    def fire(self, **kwargs: Any) -> None:
        # A copy: a listener may add or remove listeners while the hook fires.
        for listener in list(self._listeners):
            listener(**kwargs)
