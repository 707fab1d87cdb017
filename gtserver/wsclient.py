"""What the ``vr`` and ``uttt`` clients share: an Autobahn WebSocket connection
whose JSON frames are decoded into an inbox that callers take from.

Frames are kept in arrival order; a caller takes the first one that matches
what it waits for (:meth:`FrameConnection.take`), leaving the others for later
calls, so a reply is never confused with a push that arrived before it.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.ssl import optionsForClientTLS

#: Seconds a call waits for its answer unless told otherwise.
DEFAULT_TIMEOUT = 10.0
#: Frames kept for the caller; older ones are dropped (and counted) beyond it.
DEFAULT_MAX_PENDING = 10_000


class ConnectionClosed(Exception):
    """The connection closed (or never opened) while a frame was awaited."""


class Taken:
    """What a :meth:`FrameConnection.take` predicate returns to give another value."""

    __slots__ = ("value", "keep")

    def __init__(self, value: Any, keep: bool = False) -> None:
        self.value, self.keep = value, keep


class FrameProtocol(WebSocketClientProtocol):
    """Hands every decoded frame, and the close, to its :class:`FrameConnection`."""

    connection: FrameConnection

    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        try:
            frame = json.loads(payload)
        except ValueError:
            frame = {"undecodable": payload}
        self.connection._received(frame)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionClosed(f"handshake failed: {reason}"))
            return
        self.connection._closed(code, reason)


class FrameConnection:
    """An open WebSocket connection to a gtserver listener, JSON in and out.

    Use :meth:`open` (through a protocol client's ``connect``). ``frames_received``,
    ``frames_sent`` and ``dropped`` count traffic; ``close_code`` and
    ``close_reason`` are set once the connection has closed.
    """

    def __init__(self, protocol: FrameProtocol, reactor: Any, timeout: float,
                 max_pending: int) -> None:
        self.protocol = protocol
        protocol.connection = self
        self.reactor = reactor
        self.timeout = timeout
        self.max_pending = max_pending
        self.inbox: deque[tuple[int, Any]] = deque()   # (arrival number, frame)
        self.frames_received = 0
        self.frames_sent = 0
        self.dropped = 0
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.is_closed = False
        self._listeners: list[Callable[[Any], None]] = []
        self._waiters: list[Deferred] = []
        self._on_close: Deferred = Deferred()

    @classmethod
    async def open(cls, url: str, reactor: Any = None, timeout: float = DEFAULT_TIMEOUT,
                   max_pending: int = DEFAULT_MAX_PENDING, tls_options: Any = None,
                   **kwargs: Any) -> Any:
        """Connect to ``ws://host:port/`` or ``wss://host:port/``.

        :param tls_options: client TLS options for ``wss://`` (e.g. from
            ``twisted.internet.ssl.optionsForClientTLS`` with a ``trustRoot``);
            by default the system's authorities vouch for the host name
        """
        if reactor is None:
            from twisted.internet import reactor
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"not a ws:// or wss:// address: {url!r}")
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        endpoint: Any = HostnameEndpoint(reactor, parts.hostname, port, timeout=timeout)
        if secure:
            endpoint = wrapClientTLS(tls_options or optionsForClientTLS(parts.hostname),
                                     endpoint)
        factory = WebSocketClientFactory(url)
        factory.protocol = FrameProtocol
        factory.opened = Deferred()
        # No lingering close timers: a closed client leaves nothing in the reactor.
        factory.setProtocolOptions(closeHandshakeTimeout=0, serverConnectionDropTimeout=0)
        connecting = endpoint.connect(factory)
        connecting.addTimeout(timeout, reactor)
        await connecting
        opened = factory.opened
        opened.addTimeout(timeout, reactor)
        protocol = await opened
        if hasattr(protocol.transport, "setTcpNoDelay"):
            try:
                protocol.transport.setTcpNoDelay(True)
            except OSError:
                pass
        return cls(protocol, reactor, timeout, max_pending, **kwargs)

    # sending

    def send(self, value: Any, binary: bool = False) -> None:
        """Send ``value`` as one JSON frame."""
        self.send_raw(json.dumps(value).encode("utf-8"), binary)

    def send_raw(self, payload: bytes, binary: bool = False) -> None:
        """Send bytes as they are (e.g. to test how the server handles bad input)."""
        if self.is_closed:
            raise ConnectionClosed("the connection is closed")
        self.frames_sent += 1
        self.protocol.sendMessage(payload, isBinary=binary)

    # receiving

    def listen(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback`` with every frame as it arrives (it is queued as well)."""
        self._listeners.append(callback)

    def pending(self) -> list[Any]:
        """Take every frame received and not yet taken."""
        frames = [frame for _number, frame in self.inbox]
        self.inbox.clear()
        return frames

    def take(self, matches: Callable[[Any], Any] | None = None,
             timeout: float | None = None, after: int = 0) -> Deferred:
        """The first frame for which ``matches(frame)`` is true, removed from the inbox.

        When ``matches`` returns a :class:`Taken`, the Deferred fires with its
        ``value`` instead, and the frame stays in the inbox if ``keep`` is
        set (e.g. when only part of it was taken). Only frames received after
        the first ``after`` ones are considered (pass ``frames_received`` as it
        was when a request was sent to skip what came before it). Fails with
        :class:`ConnectionClosed` when the connection closes first, and with
        ``TimeoutError`` after ``timeout`` seconds (the client's default if
        None; 0 waits forever).
        """
        return ensureDeferred(self._take(matches or (lambda frame: True), timeout, after))

    async def _take(self, matches: Callable[[Any], Any], timeout: float | None,
                    after: int) -> Any:
        timeout = self.timeout if timeout is None else timeout
        deadline = self.reactor.seconds() + timeout if timeout else None
        scanned = 0
        while True:
            while scanned < len(self.inbox):
                number, frame = self.inbox[scanned]
                if number <= after:
                    scanned += 1
                    continue
                found = matches(frame)
                if isinstance(found, Taken):
                    if not found.keep:
                        del self.inbox[scanned]
                    return found.value
                if found:
                    del self.inbox[scanned]
                    return frame
                scanned += 1
            if self.is_closed:
                raise ConnectionClosed(f"closed ({self.close_code}): {self.close_reason}")
            waiter: Deferred = Deferred()
            self._waiters.append(waiter)
            if deadline is not None:
                left = deadline - self.reactor.seconds()
                if left <= 0:
                    self._waiters.remove(waiter)
                    raise TimeoutError("no matching frame arrived in time")
                waiter.addTimeout(left, self.reactor)
            try:
                await waiter
            except Exception:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                raise TimeoutError("no matching frame arrived in time") from None
            # Frames may have been taken by other callers meanwhile: rescan.
            scanned = 0

    async def frames(self) -> Any:
        """``async for frame in connection.frames()``: every frame until the close."""
        while True:
            try:
                yield await self.take(timeout=0)
            except ConnectionClosed:
                return

    def _received(self, frame: Any) -> None:
        self.frames_received += 1
        for callback in self._listeners:
            callback(frame)
        self.inbox.append((self.frames_received, frame))
        while len(self.inbox) > self.max_pending:
            self.inbox.popleft()
            self.dropped += 1
        self._wake()

    def _closed(self, code: Any, reason: Any) -> None:
        self.is_closed = True
        self.close_code, self.close_reason = code, reason
        self._wake()
        if not self._on_close.called:
            self._on_close.callback(code)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(None)

    # closing

    def when_closed(self) -> Deferred:
        """A Deferred firing with the close code once the connection has closed."""
        d: Deferred = Deferred()
        if self.is_closed:
            d.callback(self.close_code)
        else:
            self._on_close.addBoth(lambda result: (d.callback(result), result)[1])
        return d

    def close(self, code: int = 1000, reason: str | None = None) -> Deferred:
        """Close the connection (a close handshake); fires with the close code.
        A server that does not complete the handshake within the client's
        timeout is disconnected."""
        if not self.is_closed:
            self.protocol.sendClose(code=code, reason=reason)
        if not self.is_closed and self.timeout:
            timer = self.reactor.callLater(self.timeout, self.abort)
            self._on_close.addBoth(lambda result: (timer.active() and timer.cancel(), result)[1])
        return self.when_closed()

    def abort(self) -> Deferred:
        """Drop the TCP connection without a close handshake."""
        if not self.is_closed and self.protocol.transport is not None:
            self.protocol.transport.abortConnection()
        return self.when_closed()


class FrameClient:
    """What the clients of the WebSocket listeners share: their connection,
    and :meth:`connect`, which builds one for a URL."""

    def __init__(self, connection: FrameConnection) -> None:
        self.connection = connection

    @classmethod
    def connect(cls, url: str, reactor: Any = None, timeout: float = DEFAULT_TIMEOUT,
                tls_options: Any = None, max_pending: int = DEFAULT_MAX_PENDING) -> Deferred:
        """A Deferred firing with a connected client for ``ws://host:port/`` (or wss://).

        :param timeout: seconds allowed for connecting, and the default wait
            of every call for its answer
        :param max_pending: frames kept unread; older ones are dropped beyond it
        """
        async def opening() -> FrameClient:
            return cls(await FrameConnection.open(url, reactor, timeout, max_pending,
                                                  tls_options))
        return ensureDeferred(opening())

    def pending(self) -> list[Any]:
        """Take every frame received and not yet taken (decoded JSON)."""
        return self.connection.pending()

    def frames(self) -> Any:
        """``async for frame in client.frames()``: every frame until the close."""
        return self.connection.frames()

    def listen(self, callback: Any) -> None:
        """Call ``callback(frame)`` for every frame as it arrives."""
        self.connection.listen(callback)
