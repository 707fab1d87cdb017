"""The EOT game API in a deployment of several nodes: one home per session.

Each session (a table) lives on one node, its *home*: the holder of the
lease ``eot-session:GAME:TOKEN``. A named session's home is the node that
claimed the lease for its first join; auto sessions are made by one node per
game, the holder of ``eot-auto:GAME``, which also takes the session lease of
every auto session it makes before answering its joins. The home runs every
request of its sessions through the same :class:`gtserver.eot.protocol.Requests`
(and so the same :class:`gtserver.eot.lobby.TableService`) as a single
daemon; any other node forwards the request as parsed, with the client's
address, over :meth:`gtserver.core.bus.Calls.call` (a ``state`` or ``join``
waits at the home as long as it would on one node; other requests give up
after :data:`FORWARD_TIMEOUT`) and relays the home's rendered answer to its
client. A client that disconnects cancels the call, and the home withdraws
the request (unparks the ``state``). A node looks a home up in the
database once and remembers it; a node asked for a session it does not
hold, by a node that did not look it up just now, says so, and the asking
node looks again.

When a home stops, its sessions end with it: their lease rows are left to
expire (a clean stop does not release them either), so the next request of
such a session, on any node, is refused with :class:`HomeStopped` rather
than "no such session" (for :data:`ENDED_KEPT` seconds); a session that
ended normally (released, timed out) gives up its lease, and its token is
unknown again. A join waiting at a home that stops is routed once more (its
session starts afresh on a live node), and the auto home of a game is taken
over by the next node to need one once its lease has expired.

Answers of :data:`SHARED_MIN` bytes or more (a long Chat, say) cross the
bus once per node and reactor turn however many replies carry them (the
``state`` requests one move releases): the home sends the answer to that
node as an ``eot-view`` message, the call replies name it, and an
``eot-view`` message at the end of the turn tells the node it may forget it.
"""

from __future__ import annotations

import itertools
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from gtserver.core.bus import BusError, Calls, CallTimeout, IBus, NodeGone
from gtserver.core.leases import Leases
from gtserver.eot.lobby import AUTO, TableEnded, TableError
from gtserver.eot.protocol import Reply, Requests
from gtserver.store import Store
from gtserver.store import leases as lease_queries

SESSION = "eot-session:"
AUTO_HOME = "eot-auto:"
#: Bus topics: forwarded requests (a call), and answers shared by several replies.
TOPIC, SHARED_TOPIC = "eot", "eot-view"
#: Answers at least this long cross the bus once per node and turn.
SHARED_MIN = 2048
#: The refusal of a request for a session whose home stopped (docs/eot.md).
HOME_STOPPED = "this session ended: the node that held it stopped"
#: Seconds a forwarded move, restart or observe may take (joins and states
#: wait at the home as long as they would on one node).
FORWARD_TIMEOUT = 30.0
#: Requests that wait at the home without a time limit.
WAITING = frozenset({"join", "state"})
#: Seconds the lease row of a session whose home stopped is kept (so that
#: its clients get HOME_STOPPED); older ones are deleted when a node starts.
ENDED_KEPT = 7 * 24 * 3600.0


class HomeStopped(TableError):
    def __init__(self) -> None:
        super().__init__(HOME_STOPPED)


class NoAutoHome(TableError):
    """The node that makes this game's auto sessions stopped, and its lease
    has not expired yet."""

    def __init__(self) -> None:
        super().__init__("the node that starts auto-join sessions of this game stopped; "
                         "try again in a few seconds")


class HomeSilent(TableError):
    def __init__(self) -> None:
        super().__init__("the node holding this session did not answer in time")


class SessionMoved(TableError):
    def __init__(self) -> None:
        super().__init__("the session just moved to another node; try again")


def session_lease(game: str, token: str) -> str:
    return f"{SESSION}{game}:{token}"


#: What :meth:`EOTCluster._home` says of a session whose home stopped.
ENDED = "\0ended"
#: What a node forwarded to from memory says when it is not the home.
ABSENT = object()
#: Sessions whose home a node remembers (the last ones it forwarded to).
HOMES_KEPT = 100_000


class EOTCluster(Service):
    """Answers EOT requests on any node of a deployment (the factory's
    ``requests``): runs those of this node's sessions through ``requests``
    and forwards the others to their homes."""

    log = Logger()

    def __init__(self, requests: Requests, bus: IBus, calls: Calls, leases: Leases,
                 store: Store, clock: Any) -> None:
        self.local = requests
        self.tables = requests.tables
        self.bus, self.calls, self.leases, self.store = bus, calls, leases, store
        self.clock = clock
        self.node: str = bus.node
        #: Nodes reported stopped (until they are live again).
        self.gone: set[str] = set()
        #: Homes of other nodes' sessions this node forwarded to, by
        #: (game, token), oldest first: asked first, before the database.
        self._homes: dict[tuple[str, str], str] = {}
        self.stopping = False
        #: This turn's shared answers: (id of the answer's bytes, node) ->
        #: reference, and the bytes themselves (so that their ids stay theirs).
        self._shipped: dict[tuple[int, str], str] = {}
        self._shipped_data: list[bytes] = []
        self._refs = itertools.count(1)
        #: Shared answers received, by reference, until their turn is over.
        self._received: dict[str, bytes] = {}
        calls.serve(TOPIC, self._serve)
        bus.subscribe(SHARED_TOPIC, self._shared)
        leases.on_node_gone(self.gone.add)
        leases.on_lost(self._lost)
        self.tables.closed_watchers.append(self._closed)

    # the factory's interface (as Requests.answer)

    def answer(self, kind: str, request: dict, address: str | None) -> Reply | Deferred:
        game, token = request.get("game"), request.get("session")
        if (not isinstance(game, str) or not isinstance(token, str)
                or game not in self.tables.games
                or (kind == "join" and token != AUTO and token.startswith(AUTO))):
            return self.local.answer(kind, request, address)    # refused as on one node
        if kind != "join" and session_lease(game, token) in self.leases.held:
            return self.local.answer(kind, request, address)    # this node is its home
        return Deferred.fromCoroutine(self._routed(kind, request, address, game, token))

    async def _routed(self, kind: str, request: dict, address: str | None, game: str,
                      token: str) -> Reply:
        if kind == "join":
            return await self._join(request, address, game, token)
        known = self._homes.get((game, token))
        if known is not None and not self._dead(known):
            reply = await self._forward(known, kind, request, address, checked=False)
            if reply is not ABSENT:
                return self._refused(HomeStopped()) if reply is None else reply
        self._homes.pop((game, token), None)    # not there (any more): ask the database
        home = await self._home(session_lease(game, token))
        if home == ENDED:
            return self._refused(HomeStopped())
        if home is None or home == self.node:
            return await self._here(kind, request, address)
        self._remember(game, token, home)
        reply = await self._forward(home, kind, request, address)
        return self._refused(HomeStopped()) if reply is None else reply

    def _remember(self, game: str, token: str, home: str) -> None:
        """Keep the home of a session forwarded to (the oldest forgotten
        beyond HOMES_KEPT)."""
        homes = self._homes
        homes.pop((game, token), None)
        homes[(game, token)] = home
        if len(homes) > HOMES_KEPT:
            del homes[next(iter(homes))]

    async def _here(self, kind: str, request: dict, address: str | None) -> Reply:
        reply = self.local.answer(kind, request, address)
        if isinstance(reply, Deferred):
            reply = await reply
        return reply

    # homes

    async def _home(self, name: str) -> str | None:
        """The live home of session lease ``name``; None if nobody holds it
        nor ever did (or it was released); ENDED if its home stopped."""
        if name in self.leases.held:
            return self.node
        holder = await self.leases.holder(name)
        if holder is not None:
            return ENDED if self._dead(holder) else holder
        row = await self.store.run(lease_queries.last_holder, name)
        return ENDED if row is not None else None

    def _dead(self, node: str) -> bool:
        return node in self.gone and not self.leases.alive(node)

    async def _join(self, request: dict, address: str | None, game: str,
                    token: str) -> Reply:
        """Route a join; one waiting at a home that stops is routed again."""
        for _attempt in range(2):
            if token == AUTO:
                home = await self._auto_home(game)
            else:
                home = await self._join_home(game, token, request.get("players"))
            if home == ENDED:
                return self._refused(NoAutoHome() if token == AUTO else HomeStopped())
            if home == self.node:
                return await self._join_here(request, address, game, token)
            reply = await self._forward(home, "join", request, address)
            if reply is not None:
                return reply
        return self._refused(HomeStopped())

    async def _auto_home(self, game: str) -> str:
        """The node making ``game``'s auto sessions (this one if nobody does)."""
        name = AUTO_HOME + game
        if name in self.leases.held:
            return self.node
        holder = await self.leases.holder(name)
        if holder is None:
            holder = await self.leases.claim(name)
        return ENDED if self._dead(holder) else holder

    async def _join_home(self, game: str, token: str, players: Any) -> str:
        """The home a join of named session ``token`` goes to: its holder;
        else this node, which claims it when the join may start a session."""
        name = session_lease(game, token)
        if name in self.leases.held:
            return self.node
        holder = await self.leases.holder(name)
        if holder is None:
            if players is None:     # only joins an open session: none is
                row = await self.store.run(lease_queries.last_holder, name)
                return ENDED if row is not None else self.node
            holder = await self.leases.claim(name)
        return ENDED if self._dead(holder) else holder

    async def _join_here(self, request: dict, address: str | None, game: str,
                         token: str) -> Reply:
        """A join at its home: the session lease is this node's before the
        join can start a session, and before any joiner is answered."""
        if token != AUTO and request.get("players") is not None:
            name = session_lease(game, token)
            if name not in self.leases.held and await self.leases.claim(name) != self.node:
                return self._refused(SessionMoved())
        try:
            joined = self.local.run("join", request, address)
            if isinstance(joined, Deferred):
                joined = await joined
        except CancelledError:
            self._release_unused(game, token)
            raise
        except Exception:
            failure = Failure()
            self._release_unused(game, token)
            return self.local.refusal(failure)
        await self._hold(game, joined.token)
        return self.local.render(joined)

    async def _hold(self, game: str, token: str) -> None:
        """Make sure this node holds the lease of its session ``token``."""
        name = session_lease(game, token)
        if name in self.leases.held:
            return
        try:
            holder = await self.leases.claim(name)
        except CancelledError:
            raise
        except Exception as error:
            self.log.warn("session lease {name} not taken: {error}", name=name, error=error)
            return
        if holder != self.node:
            self.log.error("session lease {name} is held by node {holder}", name=name,
                           holder=holder)
        elif (game, token) not in self.tables.tables:
            self._release(name)     # the session ended meanwhile

    def _release_unused(self, game: str, token: str) -> None:
        if token != AUTO and (game, token) not in self.tables.tables:
            self._release(session_lease(game, token))

    def _release(self, name: str) -> None:
        if name in self.leases.held:
            self.leases.release(name).addErrback(lambda failure: self.log.warn(
                "session lease {name} not released (it expires): {error}", name=name,
                error=failure.value))

    def _closed(self, game: str, token: str) -> None:
        """A session of this node ended: its token is free again."""
        if not self.stopping:
            self._release(session_lease(game, token))

    def _lost(self, name: str) -> None:
        """This node could not renew a session's lease in time: another node
        may hold it now, so the session ends here."""
        if name.startswith(SESSION):
            game, _, token = name[len(SESSION):].partition(":")
            self.tables.end_table(game, token, TableEnded(
                "the session ended: this node lost its hold on it (the database was "
                "unreachable for too long)"))

    # calls between nodes

    async def _forward(self, home: str, kind: str, request: dict, address: str | None,
                       checked: bool = True) -> Any:
        """The home's answer, relayed; None if the home stopped meanwhile;
        ABSENT if, not ``checked`` in the database just now, the node does
        not hold the session (any more)."""
        timeout = None if kind in WAITING else FORWARD_TIMEOUT
        body = {"kind": kind, "request": request, "address": address, "checked": checked}
        try:
            reply = await self.calls.call(home, TOPIC, body, timeout=timeout)
        except NodeGone:
            return None
        except CallTimeout:
            return self._refused(HomeSilent())
        except BusError as error:
            self.log.error("EOT request forwarded to node {home} failed: {error}",
                           home=home, error=error)
            return self._refused(error)
        if reply.get("absent"):
            return ABSENT
        return self._unpack(reply)

    def _serve(self, sender: str, body: dict) -> Deferred:
        """A request forwarded by ``sender``, run here as on one node."""
        kind, request, address = body["kind"], body["request"], body["address"]
        if not body.get("checked", True) and kind != "join" and session_lease(
                request["game"], request["session"]) not in self.leases.held:
            return succeed({"absent": True})
        if kind == "join":
            answered = Deferred.fromCoroutine(self._join_here(
                request, address, request["game"], request["session"]))
        else:
            reply = self.local.answer(kind, request, address)
            answered = reply if isinstance(reply, Deferred) else succeed(reply)
        return answered.addCallback(self._ship, sender)

    def _ship(self, reply: Reply, node: str) -> dict:
        """``reply`` as a call reply to ``node``; a long one that goes there
        again in this turn crosses the bus once."""
        data = reply.data
        if len(data) < SHARED_MIN:
            return {"outcome": reply.outcome, "text": data.decode()}
        key = (id(data), node)
        ref = self._shipped.get(key)
        if ref is None:
            if not self._shipped:
                self.clock.callLater(0, self._turn_over)
            ref = self._shipped[key] = f"{self.node}:{next(self._refs)}"
            self._shipped_data.append(data)
            self.bus.send(node, SHARED_TOPIC, {"ref": ref, "text": data.decode()})
        return {"outcome": reply.outcome, "ref": ref}

    def _turn_over(self) -> None:
        """Every reply naming this turn's shared answers is on its way: their
        nodes may forget them."""
        done: dict[str, list[str]] = {}
        for (_data, node), ref in self._shipped.items():
            done.setdefault(node, []).append(ref)
        self._shipped.clear()
        self._shipped_data.clear()
        for node, refs in done.items():
            self.bus.send(node, SHARED_TOPIC, {"done": refs})

    def _shared(self, sender: str, body: dict) -> None:
        if "done" in body:
            for ref in body["done"]:
                self._received.pop(ref, None)
        else:
            self._received[body["ref"]] = body["text"].encode()

    def _unpack(self, reply: dict) -> Reply:
        if "ref" in reply:
            data = self._received.get(reply["ref"])
            if data is None:
                self.log.error("shared EOT answer {ref} never arrived", ref=reply["ref"])
                return self._refused(RuntimeError("shared answer missing"))
            return Reply(reply["outcome"], data)
        return Reply(reply["outcome"], reply["text"].encode())

    def _refused(self, error: Exception) -> Reply:
        return self.local.refusal(Failure(error))

    # service

    def startService(self) -> None:
        super().startService()
        forgotten = self.store.run(lease_queries.forget_expired, SESSION,
                                   self.clock.seconds() - ENDED_KEPT)
        forgotten.addCallbacks(
            lambda count: count and self.log.info(
                "forgot {count} EOT sessions whose node stopped long ago", count=count),
            lambda failure: self.log.warn("old EOT session leases not deleted: {error}",
                                          error=failure.value))

    def stopService(self) -> Any:
        """The sessions end with this node, their leases left to expire: a
        request for one elsewhere is then refused with HomeStopped."""
        self.stopping = True
        self.leases.held.difference_update(
            [name for name in self.leases.held if name.startswith(SESSION)])
        return super().stopService()
