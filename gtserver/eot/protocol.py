"""The EOT game API on the wire: one JSON request per connection.

A client sends a UTF-8 JSON object followed by ``EOT\\0``; the server answers
with one JSON object and closes the connection. This module only frames,
parses and renders: every decision is made by
:class:`gtserver.eot.lobby.TableService`, which :class:`Requests` calls with
the request's fields and whose results and refusals it renders. In a
deployment of several nodes, :mod:`gtserver.eot.cluster` stands in for
:class:`Requests` and runs each request on its session's home node.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from gtserver import jsontext, metrics
from gtserver.core.matches import MatchOver, NotYourTurn
from gtserver.core.peers import Peer
from gtserver.eot.lobby import Joined, TableError, TableService, View
from gtserver.games import IllegalMove

TERMINATOR = b"EOT\0"
PREFIX = "framework: "


class BadField(Exception):
    """A request field is missing or has the wrong type."""


OK_NULL = b'{"status": "ok", "data": null}'     # the answer to every move and restart


def _reply(data: Any) -> bytes:
    return b'{"status": "ok", "data": ' + json.dumps(data).encode() + b"}"


def _error(message: str) -> bytes:
    return json.dumps({"status": "error", "message": PREFIX + message}).encode()


def _illegal(message: Any) -> bytes:
    return json.dumps({"status": "illegalmove", "message": message}).encode()


def _string(request: dict, name: str) -> str:
    value = request.get(name)
    if not isinstance(value, str):
        raise BadField(f"'{name}' must be a string")
    return value


def _integer(request: dict, name: str, optional: bool = False) -> int | None:
    value = request.get(name)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadField(f"'{name}' must be an integer")
    return value


_METRICS = metrics.ListenerMetrics("eot")


class Reply(NamedTuple):
    """A request's wire answer, and how the request went (for /metrics)."""

    outcome: str
    data: bytes


class Requests:
    """The requests of the EOT game API on this node's tables: a parsed
    request in, its wire answer out.

    :meth:`answer` gives a :class:`Reply`, or a Deferred of one for a request
    that waits (a join, a parked state, a move until it is stored);
    cancelling that Deferred withdraws the request. A refusal or failure gets
    one mapping to its reply (:meth:`refusal`) whether the table service
    raised it at once or it came through the Deferred.
    """

    log = Logger()

    def __init__(self, tables: TableService, request_size_max: int) -> None:
        self.tables = tables
        self.request_size_max = request_size_max

    def answer(self, kind: str, request: dict, address: str | None) -> Reply | Deferred:
        """The answer to ``request`` of type ``kind`` (one of :data:`KINDS`)
        from the client at ``address``."""
        try:
            result = self.run(kind, request, address)
        except Exception:
            return self.refusal(Failure())
        if isinstance(result, Deferred):
            return result.addCallbacks(self.render, self._failed)
        return self.render(result)

    def run(self, kind: str, request: dict, address: str | None) -> Any:
        """The table service's result (a value or a Deferred); raises its refusals."""
        return self.handlers[kind](self, request, address)

    def _join(self, request: dict, address: str | None) -> Deferred:
        name = request.get("name")
        if name is None:
            name = ""
        elif not isinstance(name, str):
            raise BadField("'name' must be a string")
        return self.tables.join(_string(request, "game"), _string(request, "session"),
                                _integer(request, "players", optional=True), name, address)

    def _move(self, request: dict, address: str | None) -> Deferred:
        arguments = request.get("move")
        if not isinstance(arguments, dict):
            raise BadField("'move' must be an object of keyword arguments")
        return self.tables.move(_string(request, "game"), _string(request, "session"),
                                _integer(request, "player_id"), _string(request, "key"),
                                arguments, address)

    def _state(self, request: dict, address: str | None) -> Any:
        observer = request.get("observer", False)
        if observer is None:
            observer = False
        elif not isinstance(observer, bool):
            raise BadField("'observer' must be true or false")
        return self.tables.state(_string(request, "game"), _string(request, "session"),
                                 _integer(request, "player_id"), _string(request, "key"),
                                 observer)

    def _observe(self, request: dict, address: str | None) -> Joined:
        return self.tables.observe(_string(request, "game"), _string(request, "session"),
                                   _string(request, "name"), address)

    def _restart(self, request: dict, address: str | None) -> Deferred:
        return self.tables.restart(_string(request, "game"), _string(request, "session"),
                                   _integer(request, "player_id"), _string(request, "key"))

    handlers = {"join": _join, "move": _move, "state": _state, "observe": _observe,
                "restart": _restart}

    # answers

    def render(self, result: Any) -> Reply:
        """The ``ok`` answer carrying ``result``."""
        if type(result) is View:
            encoded = result.rendering      # shared by every viewer of this state
            if encoded is None:
                encoded = result.rendering = self._encode(result)
            return Reply("ok", encoded)
        if result is None:
            return Reply("ok", OK_NULL)
        if isinstance(result, Joined):
            result = {"player_id": result.player_id, "key": result.key,
                      "session": result.token, "request_size_max": self.request_size_max}
        return Reply("ok", self._encode(result))

    def _failed(self, failure: Failure) -> Reply | Failure:
        if failure.check(CancelledError):
            return failure      # the client went away while waiting
        return self.refusal(failure)

    def refusal(self, failure: Failure) -> Reply:
        """The answer to a request refused (or failed) with ``failure``."""
        error = failure.value
        if isinstance(error, (TableError, BadField)):
            return Reply("refused" if isinstance(error, TableError) else "bad_request",
                         _error(str(error)))
        if isinstance(error, NotYourTurn):
            return Reply("refused", _error("it is not your turn"))
        if isinstance(error, MatchOver):
            return Reply("refused", _error("the game is over"))
        if isinstance(error, IllegalMove):
            return Reply("illegal_move", self._illegal(error.message))
        _METRICS.error("internal")
        self.log.failure("EOT request failed", failure)
        return Reply("internal_error", _error("internal server error"))

    def _encode(self, result: Any) -> bytes:
        try:
            return _reply(result)
        except (TypeError, ValueError):
            self.log.failure("EOT reply cannot be encoded as JSON")
            return _error("internal server error")

    def _illegal(self, message: Any) -> bytes:
        """The ``illegalmove`` reply; a message that is not JSON is the game's bug."""
        try:
            return _illegal(message)
        except (TypeError, ValueError):
            self.log.failure("a game refused a move with a message that is not JSON")
            return _error("internal error in the game")


#: The request types of the API.
KINDS = frozenset(Requests.handlers)


class EOTProtocol(Protocol):
    """One connection: read one request, answer it, close."""

    log = Logger()
    #: The request's type and how it went, counted in /metrics when answered.
    kind = "invalid"
    outcome = "bad_request"

    def __init__(self, factory: EOTFactory) -> None:
        self.factory = factory
        self.buffer = b""
        self.waiting: Deferred | None = None
        self.answered = False

    def connectionMade(self) -> None:
        _METRICS.connections.value += 1
        self.factory.watch(self)

    def dataReceived(self, data: bytes) -> None:
        if self.answered or self.waiting is not None:
            return      # anything after the request (or after a refusal) is ignored
        start = len(self.buffer) - 3 if self.buffer else 0
        buffer = self.buffer + data if self.buffer else data
        end = buffer.find(TERMINATOR, max(start, 0))
        limit = self.factory.request_size_max
        if end < 0:
            if len(buffer) >= limit:
                self._refuse_oversized()
            else:
                self.buffer = buffer
            return
        self.buffer = b""
        self._unwatch()
        if end + len(TERMINATOR) > limit:
            self._refuse_oversized()
            return
        self._handle(buffer[:end])

    def connectionLost(self, reason: Any = None) -> None:
        _METRICS.connections.value -= 1
        self._unwatch()
        self.buffer = b""
        waiting, self.waiting = self.waiting, None
        if waiting is not None and not waiting.called:
            waiting.cancel()

    # requests

    def _handle(self, raw: bytes) -> None:
        _METRICS.received.value += 1
        try:
            request = jsontext.loads(raw)
        except jsontext.NonFinite:
            self._send(_error("numbers must be finite: NaN, Infinity and numbers beyond "
                              "the range of a double are refused"))
            return
        except (ValueError, RecursionError):
            self._send(_error("the request is not valid UTF-8 JSON"))
            return
        if not isinstance(request, dict):
            self._send(_error("the request must be a JSON object"))
            return
        # The key is never stored; a wrong one gets the key's own error.
        problem = (jsontext.unstorable(request, skip="key")
                   if jsontext.may_hold_unstorable(raw) else None)
        if problem is not None:
            self._send(_error(f"text in the request cannot be stored: {problem}"))
            return
        kind = request.get("type")
        if not isinstance(kind, str) or kind not in KINDS:
            self.kind = "other"
            self._send(_error("unknown request type"))
            return
        self.kind = kind
        result = self.factory.requests.answer(kind, request,
                                              self.factory.address_of(self.transport))
        if isinstance(result, Deferred):
            self.waiting = result
            result.addCallbacks(self._answered, self._abandoned)
        else:
            self._answered(result)

    def _answered(self, reply: Reply) -> None:
        self.waiting = None
        self.outcome = reply.outcome
        self._send(reply.data)

    def _abandoned(self, failure: Failure) -> None:
        self.waiting = None
        if failure.check(CancelledError):
            _METRICS.request(self.kind, "abandoned")
            return      # the client went away while waiting
        self.outcome = "internal_error"
        _METRICS.error("internal")
        self.log.failure("EOT request failed", failure)
        self._send(_error("internal server error"))

    def _send(self, reply: bytes) -> None:
        if self.answered:
            return
        self.answered = True
        self.transport.write(reply)
        _METRICS.sent.value += 1
        _METRICS.request(self.kind, self.outcome)
        self.transport.loseConnection()
        self.factory.watch(self)    # a client that does not read is cut off

    def _refuse_oversized(self) -> None:
        """Answer, then read and drop the rest so the client can read the reply."""
        self.buffer = b""
        self._unwatch()
        self.answered = True
        self.transport.write(_error(
            f"request size limit exceeded ({self.factory.request_size_max} bytes)"))
        _METRICS.sent.value += 1
        _METRICS.request("oversized", "bad_request")
        half_close = getattr(self.transport, "loseWriteConnection", None)
        if half_close is not None:     # plain TCP (TLS transports cannot half-close)
            half_close()
        else:
            self.transport.loseConnection()
        self.factory.watch(self)    # reading the rest may take this long, no longer

    def timed_out(self) -> None:
        """The connection timeout passed: while reading the request, or after answering.

        Without a complete request the client gets an error; after the answer
        (the reply not yet taken by the client, or an oversized request still
        arriving) the connection is dropped.
        """
        self.buffer = b""
        if self.answered:
            self.transport.abortConnection()
        elif self.waiting is None:
            self.kind, self.outcome = "incomplete", "timed_out"
            self._send(_error("connection timed out before a complete request arrived"))

    def _unwatch(self) -> None:
        self.factory.pending.pop(self, None)


class EOTFactory(Factory):
    """Serves the EOT game API on any stream endpoint.

    The connection timeout bounds the time to receive the request and, once
    the reply is written, the time for the client to take it (a client that
    never reads is cut off). A parked request is bounded by its table's
    idle timeout instead. Connection timeouts cost no timer per connection:
    connections sit in an insertion-ordered dict with their deadlines (so the
    oldest deadline is first) and one timer fires at the earliest deadline.
    """

    protocol = EOTProtocol
    noisy = False

    def __init__(self, tables: TableService, clock: Any, request_size_max: int,
                 connection_timeout: float, requests: Any = None) -> None:
        """``requests`` answers the requests (anything with the
        :meth:`Requests.answer` method; by default this node's ``tables``)."""
        self.tables = tables
        self.requests = requests or Requests(tables, request_size_max)
        self.clock = clock
        self.request_size_max = request_size_max
        self.connection_timeout = connection_timeout
        #: Connections reading their request or flushing their reply, with deadlines.
        self.pending: dict[EOTProtocol, float] = {}
        self.sweeper: Any = None
        #: Set once the listener stopped: replies sent while the daemon shuts
        #: down (the waiters' errors) start no new timer.
        self.stopped = False

    def watch(self, protocol: EOTProtocol) -> None:
        """(Re)start ``protocol``'s connection timeout."""
        self.pending.pop(protocol, None)    # re-inserted last: deadlines stay in order
        self.pending[protocol] = self.clock.seconds() + self.connection_timeout
        if self.sweeper is None and not self.stopped:
            self.sweeper = self.clock.callLater(self.connection_timeout, self.sweep)

    def sweep(self) -> None:
        """Time out every connection past its deadline; wait for the next one."""
        self.sweeper = None
        now = self.clock.seconds()
        expired = []
        for protocol, deadline in self.pending.items():
            if deadline > now:
                break
            expired.append(protocol)
        for protocol in expired:
            del self.pending[protocol]
            protocol.timed_out()
        if self.pending:
            first = next(iter(self.pending.values()))
            self.sweeper = self.clock.callLater(max(0.0, first - now), self.sweep)

    def startFactory(self) -> None:
        self.stopped = False

    def stopFactory(self) -> None:
        self.stopped = True
        if self.sweeper is not None and self.sweeper.active():
            self.sweeper.cancel()
        self.sweeper = None

    def buildProtocol(self, addr: Any) -> EOTProtocol:
        return EOTProtocol(self)

    @staticmethod
    def address_of(transport: Any) -> str:
        """The client's ``host:port``, as every listener records it."""
        return Peer.of(transport).address
