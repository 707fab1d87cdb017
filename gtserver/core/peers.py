"""Who is on the other end of a connection, the same way for every listener.

:class:`Peer` is a client's host and port. Its :attr:`~Peer.address` is what
the research log records (``host:port``, ``[v6 host]:port``; ``unix`` for a
Unix socket) and its :attr:`~Peer.throttle_key` (the host) is what the login
throttle counts per address.

Behind a reverse proxy every TCP peer is the proxy. :class:`TrustedProxies`
lists the proxies whose ``X-Forwarded-For`` header is believed: for a
connection from one of them the client is the header's last address that is
not itself a trusted proxy (the one the nearest trusted proxy saw). A proxy
does not say the client's port, so such a peer's address is its host only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Peer:
    host: str | None
    port: int | None = None
    #: The address family when there is no host (``unix``), lower case.
    kind: str = "tcp"

    @classmethod
    def of(cls, transport: Any) -> Peer:
        """The peer of a Twisted transport (TCP, TLS, Unix socket)."""
        peer = transport.getPeer()
        host = getattr(peer, "host", None)
        port = getattr(peer, "port", None)
        kind = str(getattr(peer, "type", None) or type(peer).__name__).lower()
        if not isinstance(host, str):
            return cls(None, None, "unix" if "unix" in kind else kind)
        return cls(host, port if isinstance(port, int) else None, kind)

    @property
    def address(self) -> str:
        """``host:port`` (``[host]:port`` for IPv6), the host alone without a port."""
        if self.host is None:
            return self.kind
        if self.port is None:
            return self.host
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def throttle_key(self) -> str:
        """What the login throttle counts per address: the host, any port."""
        return self.host if self.host is not None else self.kind


class TrustedProxies:
    """The reverse proxies whose ``X-Forwarded-For`` header names the client."""

    def __init__(self, addresses: Iterable[str] = ()) -> None:
        self.networks: tuple[Network, ...] = tuple(parse_network(item) for item in addresses)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, host: str | None) -> bool:
        ip = _ip(host)
        return ip is not None and any(ip in network for network in self.networks)

    def client(self, peer: Peer, forwarded_for: str | None) -> Peer:
        """The client behind ``peer``: itself unless it is a trusted proxy."""
        if not forwarded_for or not self.trusts(peer.host):
            return peer
        for item in reversed(forwarded_for.split(",")):
            host = _forwarded_host(item.strip())
            if host is None:
                return peer     # a malformed hop: believe nothing beyond it
            if not self.trusts(host):
                return Peer(host, None, peer.kind)
        return peer             # only proxies in the chain


def parse_network(text: str) -> Network:
    """An address or network (``10.0.0.1``, ``10.0.0.0/8``, ``::1``); ValueError if not."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"not an IP address or network: {text!r}") from None


def _ip(host: str | None) -> Any:
    if host is None:
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped or ip


def _forwarded_host(item: str) -> str | None:
    """The IP address of one X-Forwarded-For entry (which may carry a port)."""
    if item.startswith("[") and "]" in item:      # [v6]:port
        item = item[1:item.index("]")]
    elif item.count(":") == 1:                     # v4:port
        item = item.split(":", 1)[0]
    ip = _ip(item)
    return None if ip is None else str(ip)
