"""A tiny line-based wire protocol used only by the tests.

It exercises the listener machinery and the shared accounts service over real
sockets without depending on any game protocol. One command per line:

- ``login NAME PASSWORD`` -> ``ok TOKEN``
- ``resume TOKEN`` -> ``ok NAME``
- ``echo TEXT`` -> ``TEXT``

A refused command answers ``error ErrorClassName``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.internet.protocol import Factory
from twisted.plugin import IPlugin
from twisted.protocols.basic import LineOnlyReceiver
from zope.interface import implementer

from gtserver.interfaces import IWireProtocol


class LineCommands(LineOnlyReceiver):
    delimiter = b"\n"

    def __init__(self, core: Any, greeting: str) -> None:
        self.core = core
        self.greeting = greeting

    def connectionMade(self) -> None:
        self.sendLine(self.greeting.encode())

    def lineReceived(self, line: bytes) -> None:
        ensureDeferred(self.answer(*line.decode().split(" ", 2))).addCallback(
            lambda reply: self.sendLine(reply.encode()))

    async def answer(self, command: str, *arguments: str) -> str:
        accounts = self.core.accounts
        try:
            if command == "login":
                user, _registered = await accounts.login(*arguments)
                return "ok " + await accounts.open_session(user)
            if command == "resume":
                return "ok " + (await accounts.resume(arguments[0])).name
            if command == "echo":
                return " ".join(arguments)
        except Exception as error:
            return "error " + type(error).__name__
        return "error UnknownCommand"


class LineFactory(Factory):
    def __init__(self, core: Any, greeting: str) -> None:
        self.core = core
        self.greeting = greeting

    def buildProtocol(self, addr: Any) -> LineCommands:
        protocol = LineCommands(self.core, self.greeting)
        protocol.factory = self
        return protocol


@implementer(IPlugin, IWireProtocol)
class LinePlugin:
    name = "testline"
    description = "test line protocol"
    default_endpoints = ("tcp:0:interface=127.0.0.1",)
    options = [("testline-greeting", "hello", "First line sent on every connection.", str)]
    flags = [("testline-quiet", "Accepted and ignored.")]

    def build_factory(self, core: Any, config: Any) -> LineFactory:
        return LineFactory(core, config["testline_greeting"])


line_plugin = LinePlugin()
