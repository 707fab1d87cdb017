"""An HTTP client for the web listener's tests (no tests of its own)."""

from __future__ import annotations

import json
from http.cookies import SimpleCookie
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

TIMEOUT = 10.0


@implementer(IBodyProducer)
class Body:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> Deferred:
        consumer.write(self.data)
        d: Deferred = Deferred()
        d.callback(None)
        return d

    def pauseProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class Reply:
    def __init__(self, code: int, headers: Headers, body: bytes) -> None:
        self.code = code
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name.encode())
        return values[0].decode() if values else None

    def cookies(self) -> list[str]:
        return [value.decode() for value in self.headers.getRawHeaders(b"set-cookie") or []]

    def json(self) -> Any:
        return json.loads(self.body)


class WebClient:
    """Requests to one web listener, keeping its session cookie like a browser."""

    def __init__(self, port: int, scheme: str = "http", agent: Agent | None = None) -> None:
        self.base = f"{scheme}://127.0.0.1:{port}"
        self.agent = agent or Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        self.cookie: str | None = None
        self.csrf: str | None = None

    async def request(self, method: str, path: str, body: bytes | None = None,
                      headers: dict[str, str] | None = None) -> Reply:
        all_headers = dict(headers or {})
        if self.cookie is not None:
            all_headers.setdefault("Cookie", self.cookie)
        d = self.agent.request(
            method.encode(), (self.base + path).encode(),
            Headers({name: [value] for name, value in all_headers.items()}),
            Body(body) if body is not None else None)
        d.addTimeout(TIMEOUT, reactor)
        response = await d
        content = await readBody(response)
        reply = Reply(response.code, response.headers, content)
        for cookie in reply.cookies():
            parsed = SimpleCookie(cookie)
            for name, morsel in parsed.items():
                self.cookie = f"{name}={morsel.value}" if morsel.value else None
        return reply

    async def get(self, path: str, **headers: str) -> Reply:
        return await self.request("GET", path, headers=headers)

    async def post_json(self, path: str, value: Any, csrf: str | None = "session",
                        headers: dict[str, str] | None = None) -> Reply:
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        token = self.csrf if csrf == "session" else csrf
        if token is not None:
            all_headers["X-CSRF-Token"] = token
        return await self.request("POST", path, json.dumps(value).encode(), all_headers)

    async def log_in(self, password: str) -> Reply:
        reply = await self.post_json("/api/login", {"password": password}, csrf=None)
        if reply.code == 200:
            self.csrf = reply.json()["csrf"]
        return reply


class FirstEvent(Protocol):
    """Collects a server-sent event stream until one whole event arrived."""

    def __init__(self) -> None:
        self.buffer = b""
        self.event: Deferred = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if b"\n\n" in self.buffer and not self.event.called:
            self.event.callback(self.buffer.split(b"\n\n", 1)[0])
            self.transport.stopProducing()

    def connectionLost(self, reason: Any) -> None:
        if not self.event.called:
            self.event.errback(reason)


async def first_event(client: WebClient, path: str, **headers: str) -> tuple[int, bytes]:
    """The status and the first event of a stream."""
    all_headers = dict(headers)
    if client.cookie is not None:
        all_headers.setdefault("Cookie", client.cookie)
    d = client.agent.request(b"GET", (client.base + path).encode(),
                             Headers({name: [value] for name, value in all_headers.items()}))
    d.addTimeout(TIMEOUT, reactor)
    response = await d
    if response.code != 200:
        return response.code, await readBody(response)
    collector = FirstEvent()
    response.deliverBody(collector)
    collector.event.addTimeout(TIMEOUT, reactor)
    return response.code, await collector.event
