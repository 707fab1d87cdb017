"""Waiting out Autobahn's batched close timers, so a test leaves a clean reactor."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred


def _sleep(seconds: float) -> Deferred:
    d: Deferred = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


async def settle_websocket_timers(limit: float = 3.0) -> None:
    """Let Autobahn's close-handshake timers (bucketed per second) run out."""
    waited = 0.0
    while waited < limit and any(
            getattr(call.func, "__name__", "") == "_notify_bucket"
            for call in reactor.getDelayedCalls()):
        await _sleep(0.05)
        waited += 0.05
