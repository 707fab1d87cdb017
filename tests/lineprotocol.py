"""A tiny line-based wire protocol used only by the tests.

It exercises the listener machinery and the shared accounts service over real
sockets without depending on any game protocol. One command per line:

- ``login NAME PASSWORD`` -> ``ok TOKEN``
- ``resume TOKEN`` -> ``ok NAME``
- ``echo TEXT`` -> ``TEXT``

A refused command answers ``error ErrorClassName``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.internet.protocol import Factory
from twisted.plugin import IPlugin
from twisted.protocols.basic import LineOnlyReceiver
from zope.interface import implementer

from gtserver.core import Core
from gtserver.core.accounts import Accounts
from gtserver.core.peers import Peer
from gtserver.interfaces import IWireProtocol


@dataclass(frozen=True)
class LineSettings:
    """Everything the options give the line protocol."""

    greeting: str


class LineCommands(LineOnlyReceiver):
    delimiter = b"\n"

    def __init__(self, accounts: Accounts, greeting: str) -> None:
        self.accounts = accounts
        self.greeting = greeting

    def connectionMade(self) -> None:
        self.sendLine(self.greeting.encode())

    def lineReceived(self, line: bytes) -> None:
        ensureDeferred(self.answer(*line.decode().split(" ", 2))).addCallback(
            lambda reply: self.sendLine(reply.encode()))

    async def answer(self, command: str, *arguments: str) -> str:
        accounts = self.accounts
        try:
            if command == "login":
                user, _registered = await accounts.login(*arguments, Peer.of(self.transport))
                return "ok " + await accounts.open_session(user)
            if command == "resume":
                return "ok " + (await accounts.resume(arguments[0])).name
            if command == "echo":
                return " ".join(arguments)
        except Exception as error:
            return "error " + type(error).__name__
        return "error UnknownCommand"


class LineFactory(Factory):
    def __init__(self, accounts: Accounts, settings: LineSettings) -> None:
        self.accounts = accounts
        self.greeting = settings.greeting

    def buildProtocol(self, addr: Any) -> LineCommands:
        protocol = LineCommands(self.accounts, self.greeting)
        protocol.factory = self
        return protocol


@implementer(IPlugin, IWireProtocol)
class LinePlugin:
    name = "testline"
    description = "test line protocol"
    default_endpoints = ("tcp:0:interface=127.0.0.1",)
    options = [("testline-greeting", "hello", "First line sent on every connection.", str)]
    flags = [("testline-quiet", "Accepted and ignored.")]

    def settings(self, options: Mapping[str, Any]) -> LineSettings:
        return LineSettings(greeting=options["testline-greeting"])

    def build_factory(self, core: Core, settings: LineSettings) -> LineFactory:
        return LineFactory(core.accounts, settings)


line_plugin = LinePlugin()


class LineClient(LineOnlyReceiver):
    """Client side for the tests: ``await client.command("echo hi")``."""

    delimiter = b"\n"

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._waiting: list[Any] = []

    def lineReceived(self, line: bytes) -> None:
        if self._waiting:
            self._waiting.pop(0).callback(line.decode())
        else:
            self.lines.append(line.decode())

    def next_line(self) -> Any:
        from twisted.internet.defer import Deferred, succeed
        if self.lines:
            return succeed(self.lines.pop(0))
        waiter: Deferred = Deferred()
        self._waiting.append(waiter)
        return waiter

    def command(self, text: str) -> Any:
        self.sendLine(text.encode())
        return self.next_line()


async def connect_line_client(endpoint: Any) -> LineClient:
    """Connect to a line-protocol listener and read its greeting into ``greeting``."""
    from twisted.internet.endpoints import connectProtocol

    client = await connectProtocol(endpoint, LineClient())
    client.greeting = await client.next_line()
    return client
