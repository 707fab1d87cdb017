"""Every TCP listener (vr, uttt, eot; plain and TLS) serves with TCP_NODELAY set."""

from __future__ import annotations

import shutil
import socket
import tempfile

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.trial import unittest

from tests.support import LOOPBACK, start_server
from tests.test_vr_client import connect as connect_vr
from tests.tls import write_self_signed_certificate

LISTENERS = ("vr", "uttt", "eot")


def socket_under(protocol) -> socket.socket:
    """The socket under a connected protocol, through any TLS layer."""
    transport = protocol.transport
    while not isinstance(transport.getHandle(), socket.socket):
        transport = transport.transport  # TLS: the TCP transport under it
    return transport.getHandle()


def nodelay(handle: socket.socket) -> bool:
    return bool(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


class NoDelayTests(unittest.TestCase):
    async def test_every_listener_plain_and_tls(self):
        directory = tempfile.mkdtemp(prefix="gt-nodelay-")
        self.addCleanup(shutil.rmtree, directory, True)
        key, cert, pem = write_self_signed_certificate(directory)
        tls = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        arguments = []
        for name in LISTENERS:
            arguments += ["--port", f"{name}={tls}"]
        server = await start_server(self, *arguments,
                                    listeners={name: LOOPBACK for name in LISTENERS})
        accepted: dict[str, list] = {name: [] for name in LISTENERS}
        for name in LISTENERS:  # one factory serves both endpoints of a listener
            factories = {id(item.factory): item.factory for item in server.service.listeners
                         if item.protocol_name == name}
            self.assertEqual(len(factories), 1)
            self.record_built_protocols(*factories.values(), accepted[name])
        tls_options = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(pem))

        for name in LISTENERS:
            plain = TCP4ClientEndpoint(reactor, "127.0.0.1", server.port(name, 0))
            secure = wrapClientTLS(
                tls_options, TCP4ClientEndpoint(reactor, "127.0.0.1", server.port(name, 1)))
            for endpoint in (plain, secure):
                client = await connectProtocol(endpoint, Protocol())
                self.addCleanup(client.transport.abortConnection)
                self.assertFalse(nodelay(socket_under(client)))  # the client's default
            await self.until(lambda name=name: len(accepted[name]) == 2)
            tcp_protocol, tls_protocol = accepted[name]
            for protocol in (tcp_protocol, tls_protocol):
                self.assertTrue(nodelay(socket_under(protocol)), (name, protocol.transport))
            self.assertIsNot(socket_under(tls_protocol), tls_protocol.transport.getHandle())

        # A VR client that logs in, as the original clients do.
        vr_client = await connect_vr(server.port("vr"), self)
        await vr_client.login("Tibi")
        self.assertTrue(nodelay(socket_under(accepted["vr"][-1])))

    def record_built_protocols(self, factory, into: list) -> None:
        build = factory.buildProtocol

        def recording(address):
            protocol = build(address)
            into.append(protocol)
            return protocol
        self.patch(factory, "buildProtocol", recording)

    async def until(self, condition, limit: float = 5.0) -> None:
        waited = 0.0
        while not condition():
            self.assertLess(waited, limit, "the server did not accept the connection")
            await deferLater(reactor, 0.01, lambda: None)
            waited += 0.01

