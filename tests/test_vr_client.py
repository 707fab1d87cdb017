"""A real Autobahn WebSocket client for the VR rooms tests (no tests of its own)."""

from __future__ import annotations

import json
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint

TIMEOUT = 5.0


class VRTestClient(WebSocketClientProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.inbox: DeferredQueue = DeferredQueue()
        self.opened: Deferred = Deferred()
        self.closed: Deferred = Deferred()
        self.frames_received = 0

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.frames_received += 1
        self.inbox.put(json.loads(payload))

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"handshake failed: {reason}"))
        if not self.closed.called:
            self.closed.callback((wasClean, code, reason))

    def send(self, value: Any, binary: bool = False) -> None:
        self.sendMessage(json.dumps(value).encode(), isBinary=binary)

    def send_raw(self, payload: bytes, binary: bool = False) -> None:
        self.sendMessage(payload, isBinary=binary)

    async def next(self, timeout: float = TIMEOUT) -> Any:
        d = self.inbox.get()
        d.addTimeout(timeout, reactor)
        return await d

    async def reply(self, timeout: float = TIMEOUT) -> dict:
        """The next frame, which must be a system or error reply; its response."""
        frame = await self.next(timeout)
        assert frame.get("info") in ("system", "error"), frame
        assert set(frame) == {"info", "response"}, frame
        response = frame["response"]
        assert set(response) == {"time", "code", "msg", "detail"}, frame
        # Codes 100-399 are system replies, 400 and up errors (PROTOCOLS.md §1).
        assert frame["info"] == ("error" if response["code"] >= 400 else "system"), frame
        assert isinstance(response["time"], float), frame
        return response

    async def code(self) -> int:
        return (await self.reply())["code"]

    def pending(self) -> list:
        """Frames already received and not yet read."""
        frames = []
        while self.inbox.pending:
            frames.append(self.inbox.pending.pop(0))
        return frames

    async def login(self, user: str, password: str = "secret") -> list[dict]:
        """Log in; returns the lobby member list the server sends after 202."""
        self.send({"system": "login", "options": {"user": user, "pass": password}})
        response = await self.reply()
        assert response["code"] == 202, response
        members = await self.next()
        assert members["room"] == "lobby", members
        return members["payload"]

    def say(self, room: str, kind: str, data: Any = "") -> None:
        self.send({"room": room, "type": kind, "data": data})


async def connect(port: int, testcase: Any = None, source: str | None = None) -> VRTestClient:
    """A connected client; ``source`` is a loopback address to connect from."""
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/")
    factory.protocol = VRTestClient
    # No Autobahn close timers in the client: their batched timer buckets are
    # never cancelled and would outlive the test.
    factory.setProtocolOptions(closeHandshakeTimeout=0, serverConnectionDropTimeout=0)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=TIMEOUT,
                                  bindAddress=None if source is None else (source, 0))
    client = await endpoint.connect(factory)
    await client.opened
    if testcase is not None:
        testcase.addCleanup(disconnect, client)
    return client


async def disconnect(client: VRTestClient) -> None:
    if client.transport is not None and client.transport.connected:
        client.transport.abortConnection()
    if not client.closed.called:
        d = client.closed
        d.addTimeout(TIMEOUT, reactor)
        await d
