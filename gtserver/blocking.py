"""Blocking use of the Twisted clients, for scripts and notebooks.

The reactor runs in a background thread (started on first use unless it is
already running); every method of the wrapped client is called in it and
waited for::

    from gtserver.blocking import connect_vr

    client = connect_vr("ws://127.0.0.1:42069/")
    client.login("alice", "secret")
    client.join("table-1")
    client.msg("table-1", "hello")
    print(client.next_event("msg"))
    client.close()

Do not use it from code that runs in the reactor thread itself (it would wait
for itself): there, await the Twisted clients directly. ``frames()`` (an async
iterator) is not available blocking; call ``next_frame()`` in a loop.
"""

from __future__ import annotations

import threading
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.threads import blockingCallFromThread

_started = threading.Lock()


def _reactor() -> Any:
    from twisted.internet import reactor
    with _started:
        if not reactor.running and not getattr(_reactor, "thread", None):
            thread = threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False},
                                      name="gtserver-reactor", daemon=True)
            _reactor.thread = thread
            thread.start()
    return reactor


def call(function: Any, *arguments: Any, **keywords: Any) -> Any:
    """Run ``function`` in the reactor thread; wait for its result (or Deferred's)."""
    def run() -> Any:
        result = function(*arguments, **keywords)
        if hasattr(result, "__await__") and not isinstance(result, Deferred):
            result = ensureDeferred(result)
        return result
    return blockingCallFromThread(_reactor(), run)


class Blocking:
    """A client whose methods block until their Deferred fires; other
    attributes (``user``, ``matches``, ``connection``...) are read as they are."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._client, name)
        if not callable(value) or name == "frames":
            if name == "frames":
                raise AttributeError("frames() is asynchronous: call next_frame() in a loop")
            return value

        def blocking(*arguments: Any, **keywords: Any) -> Any:
            return call(value, *arguments, **keywords)
        blocking.__doc__ = value.__doc__
        return blocking

    def __repr__(self) -> str:
        return f"Blocking({self._client!r})"


def connect_vr(url: str, **options: Any) -> Blocking:
    """A blocking :class:`gtserver.vr.client.VRClient` connected to ``url``."""
    from gtserver.vr.client import VRClient
    return Blocking(call(lambda: VRClient.connect(url, _reactor(), **options)))


def connect_uttt(url: str, **options: Any) -> Blocking:
    """A blocking :class:`gtserver.uttt.client.UtttClient` connected to ``url``."""
    from gtserver.uttt.client import UtttClient
    return Blocking(call(lambda: UtttClient.connect(url, _reactor(), **options)))


__all__ = ["Blocking", "call", "connect_uttt", "connect_vr"]
