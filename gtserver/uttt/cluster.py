"""Ultimate tic-tac-toe across the nodes of a deployment (``--node``).

:class:`ClusterMatches` is :class:`~gtserver.uttt.matchmaking.UltimateMatches`
for a node that shares its database with others; the uttt plugin builds it
instead when ``core.bus`` is set. What it adds:

- **One home per open match**: the node holding the lease ``uttt-match:ID``
  keeps the match in memory and runs every change of it through the same
  per-match lock and "store, then tell" (:meth:`UltimateMatches._change`).
  The node that creates a match claims it. A move, an abort or the
  operator's end arriving elsewhere is forwarded to the home with
  ``core.calls`` (one request, one reply); a match without a live home (its
  node died, or every node restarted) is claimed by the next node that needs
  it and reloaded from the store, which holds its latest state.
- **Pushes**: the home broadcasts each change once on the bus (one message
  per move, whatever the number of connections); every node hands it to its
  own connections of the players. Broadcasting needs no directory of which
  user is connected where, so no push can miss a connection that a node has
  not announced yet, a user on two nodes gets both, and nothing is left to
  clean up when a node dies; on PostgreSQL a broadcast is one notification
  whatever the number of nodes. Elo and friends updates go the same way.
- Every node keeps a copy of the open matches of its connected users
  (loaded from the store at login, replaced by each push, newer states only)
  for the login greeting and ``match_states_request``.
- **The random queue** lives on the holder of ``uttt-queue``; the others
  forward requests to it. It pairs users of any nodes and creates the match.
  When it dies, each node enqueues its own waiting users at the new home.
- **Limits** (open matches per user, one open match per pair) are checked in
  the store in the transaction that creates the match, with the players' rows
  locked: they hold for the whole deployment.
"""

from __future__ import annotations

import json
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock, ensureDeferred
from twisted.internet.task import deferLater

from gtserver import metrics
from gtserver.core.accounts import User
from gtserver.core.bus import Calls, CallTimeout, IBus, NodeGone, RemoteError
from gtserver.core.errors import CoreError
from gtserver.core.friends import FriendList
from gtserver.core.leases import Leases
from gtserver.core.match_store import MatchLimit, MatchStore
from gtserver.core.matches import Match, Seat
from gtserver.core.ratings import Standing
from gtserver.store import StoreError, StoreUnavailable
from gtserver.uttt.matchmaking import (
    SOURCE,
    MatchRefused,
    MoveRefused,
    NotYourMatch,
    UltimateMatches,
    UnknownMatch,
)

MATCH_LEASE = "uttt-match:"
QUEUE_LEASE = "uttt-queue"
#: Requests served by a match's home, or the queue's.
MOVE, ABORT, END, RANDOM = "uttt-move", "uttt-abort", "uttt-end", "uttt-random"
#: Broadcasts of the homes, and one-way messages.
PUSH_MATCH, PUSH_STANDINGS, PUSH_FRIENDS = "uttt-match", "uttt-standings", "uttt-friends"
UNQUEUE, REQUEUE, ORPHANS = "uttt-unqueue", "uttt-requeue", "uttt-orphans"
#: Seconds a forwarded request may take (the home may be waiting for the store).
CALL_TIMEOUT = 30.0
#: Forwarded attempts per request (a home may move while a request is on its way).
MAX_HOPS = 4


class NotHome(CoreError):
    """This node is not the home of the match (or queue) asked about."""


class HomeUnreachable(CoreError):
    """The home of a match or of the queue did not answer in time."""


class RemoteStoreError(CoreError):
    """The node called could not reach the store."""


# values on the bus (JSON)

def encode_user(user: Any) -> dict[str, Any]:
    return {"id": user.id, "name": user.name, "temporary": bool(user.temporary)}


def decode_user(data: dict[str, Any]) -> User:
    return User(data["id"], data["name"], data["temporary"], 0.0, 0.0)


def encode_match(match: Match) -> dict[str, Any]:
    """A match as it is now (the state as text: it cannot change on its way)."""
    return {"id": match.id, "game": match.game_name, "state": match.stored_state(),
            "ranked": bool(match.ranked), "created": match.created, "updated": match.updated,
            "seats": [[seat.name, seat.user_id] for seat in match.seats]}


def decode_match(data: dict[str, Any], match_store: MatchStore) -> Match:
    """A copy of a match of another node (never changed, never stored)."""
    state = json.loads(data["state"])
    factory = match_store.factory(data["game"])
    return Match(data["id"], data["game"], factory, factory.restore(state["game"]), SOURCE,
                 [Seat(name, user_id) for name, user_id in data["seats"]],
                 match_store.recorder, data["ranked"], data["created"], data["updated"],
                 state.get("aborted_by"), state.get("extra", {}))


def progress(match: Match) -> tuple[int, bool]:
    """How far a match has come: every change marks a cell or ends it, so of
    two states of one match the later has the larger progress."""
    return (sum(1 for row in match.game.field for cell in row if cell), match.finished)


def shielded(work: Deferred) -> Deferred:
    """``work`` as a Deferred whose cancellation leaves ``work`` running: a
    change of a match must finish (and be stored) even if the node that
    asked for it stopped."""
    outer: Deferred = Deferred(lambda _outer: None)

    def relay(result: Any) -> None:
        if not outer.called:
            outer.callback(result)

    work.addBoth(relay)
    return outer


_REMOTE_ERRORS: dict[str, type[CoreError]] = {
    kind.__name__: kind for kind in (UnknownMatch, NotYourMatch, MatchRefused)}


def local_error(error: RemoteError) -> Exception:
    """A refusal of another node as the error this node would have raised."""
    if error.kind in _REMOTE_ERRORS:
        return _REMOTE_ERRORS[error.kind](str(error))
    if error.kind == RemoteStoreError.__name__:
        return StoreUnavailable(str(error))
    return error


class ClusterMatches(UltimateMatches):
    """The ultimate tic-tac-toe matches of one node of a deployment."""

    def __init__(self, match_store: MatchStore, ratings: Any, accounts: Any, clock: Any,
                 settings: Any, presence: Any, bus: IBus, leases: Leases,
                 calls: Calls) -> None:
        super().__init__(match_store, ratings, accounts, clock, settings, presence=presence)
        self.bus = bus
        self.leases = leases
        self.calls = calls
        self.node: str = bus.node
        #: Copies of the open matches homed elsewhere that local users play in.
        self.remote: dict[str, Match] = {}
        self.remote_by_user: dict[int, dict[str, Match]] = {}
        #: The home last seen for matches homed elsewhere.
        self.homes: dict[str, str] = {}
        #: The queue's home as last seen, and the local users waiting there.
        self.queue_home: str | None = None
        self.waiting_here: OrderedDict[int, Any] = OrderedDict()
        #: On the queue's home: the node each waiting user asked from.
        self.queue_origin: dict[int, str] = {}
        #: Nodes seen stopping (until they are back).
        self._gone: set[str] = set()
        #: One lookup (and take-over) of a match's home at a time, per match.
        self._resolving: dict[str, DeferredLock] = {}
        self._requeue_lock = DeferredLock()
        for topic, serve in ((MOVE, self._serve_move), (ABORT, self._serve_abort),
                             (END, self._serve_end), (RANDOM, self._serve_random)):
            self._serve(topic, serve)
        for topic, handler in ((PUSH_MATCH, self._pushed_match),
                               (PUSH_STANDINGS, self._pushed_standings),
                               (PUSH_FRIENDS, self._pushed_friends),
                               (UNQUEUE, self._unqueue_message),
                               (REQUEUE, self._requeue_message),
                               (ORPHANS, self._orphans_message)):
            bus.subscribe(topic, handler)
        leases.on_node_gone(self._node_gone)
        leases.on_lost(self._lease_lost)

    async def _load(self) -> None:
        """Nothing is loaded at start: a match is taken over (from the store)
        by the first node that needs it."""
        self.log.info("ultimate tic-tac-toe: node {node} of a deployment", node=self.node)
        # If this node held the queue before a restart, its waiting users are
        # to be enqueued again by their nodes.
        self.bus.broadcast(REQUEUE, {})

    # connections

    async def connect_loaded(self, user: Any, sink: Any) -> list[Match]:
        self._add_sink(user, sink)
        try:
            stored = await self.match_store.load_of_user(SOURCE, user.id)
        except StoreError as problem:
            self.log.warn("open matches of {user} not loaded: {problem}", user=user.name,
                          problem=problem)
            stored = []
        if self.sinks.get(user.id):
            for match in stored:
                if match.id not in self.open:
                    self._remember_remote(match)
        return self._sending(user, self.open_matches(user))

    def disconnect(self, user: Any, sink: Any) -> None:
        self.presence.gone(sink, matches=[match.id for match in self.open_matches(user)])
        sinks = self.sinks.get(user.id, [])
        if sink in sinks:
            sinks.remove(sink)
        if sinks:
            return
        self.sinks.pop(user.id, None)
        if self.waiting_here.pop(user.id, None) is not None:
            self._leave_queue(user.id)
        for match in list(self.remote_by_user.get(user.id, {}).values()):
            if not self._has_local_player(match):
                self._forget_remote(match.id)

    def open_matches(self, user: Any) -> list[Match]:
        matches = {**self.remote_by_user.get(user.id, {}), **self.by_user.get(user.id, {})}
        return sorted(matches.values(), key=lambda match: match.created)

    # matchmaking

    async def challenge(self, user: Any, opponent: Any | None, opponent_name: str) -> Match:
        await self.ready()
        if opponent_name == user.name or (opponent is not None and opponent.id == user.id):
            raise MatchRefused("you cannot play against yourself")
        if opponent is None:
            raise MatchRefused(f"there is no user {opponent_name}")
        return await self._create_match(user, opponent)

    async def request_random(self, user: Any) -> Match | None:
        await self.ready()
        match = await self._at_queue_home(
            lambda: self._random_here(user, self.node), {"user": encode_user(user)})
        if match is None:
            if self.sinks.get(user.id):
                self.waiting_here[user.id] = user
            else:  # gone meanwhile: nobody to pair later
                self._leave_queue(user.id)
        return match

    async def _at_queue_home(self, here: Callable[[], Awaitable[Match | None]],
                             body: dict[str, Any]) -> Match | None:
        for _hop in range(MAX_HOPS):
            try:
                home = await self._queue_home()
            except HomeUnreachable:
                break
            if home == self.node:
                return await here()
            try:
                reply = await self.calls.call(home, RANDOM, body, timeout=CALL_TIMEOUT)
            except RemoteError as error:
                if error.kind != NotHome.__name__:
                    raise local_error(error) from None
            except NodeGone:
                pass
            except CallTimeout:
                break
            else:
                return self._copy(reply["match"]) if reply["match"] else None
            self.queue_home = None
        raise MatchRefused("matchmaking is not available right now, try again")

    async def _queue_home(self) -> str:
        """The node holding the random queue (taking it if nobody does)."""
        home = self.queue_home
        if home == self.node and QUEUE_LEASE in self.leases.held:
            return home
        if home is not None and home != self.node and self._reachable(home):
            return home
        was_mine = QUEUE_LEASE in self.leases.held
        holder = await self._claim_if_free(QUEUE_LEASE, self._true)
        if holder == self.node and not was_mine:
            self._clear_queue()   # whatever was here is from an earlier spell
        self.queue_home = holder
        return holder

    async def _random_here(self, user: Any, origin: str) -> Match | None:
        """The random queue's work, on its home, for a user of ``origin``."""
        waiting = [user.id, *self.queue]
        counts, pairs = _tally(await self.match_store.open_players(SOURCE, waiting))
        if user.id in self.queue:
            raise MatchRefused("you are already waiting for an opponent")
        if counts[user.id] + len(self._creating.get(user.id, ())) >= self.max_open:
            raise MatchRefused(f"you have too many open matches (at most {self.max_open})")
        for waiter in list(self.queue.values()):
            if waiter.id not in self.queue or frozenset((waiter.id, user.id)) in pairs \
                    or waiter.id in self._creating.get(user.id, ()) \
                    or counts[waiter.id] + len(self._creating.get(waiter.id, ())) \
                    >= self.max_open:
                continue
            entry = self._take_waiter(waiter.id)
            try:
                return await self._create_match(waiter, user, dequeued=[waiter.id],
                                                refuse=False)
            except MatchLimit as refusal:
                # A match created on another node meanwhile took the room.
                self._put_back_waiter(waiter, entry)
                if refusal.reason == "full" and refusal.seat == 1:
                    raise MatchRefused("you have too many open matches "
                                       f"(at most {self.max_open})") from None
        if origin != self.node or self.sinks.get(user.id):
            self.queue[user.id] = user
            self.queued_at[user.id] = self.clock.seconds()
            self.queue_origin[user.id] = origin
        return None

    def _take_waiter(self, user_id: int) -> tuple[float, str]:
        del self.queue[user_id]
        now = self.clock.seconds()
        since = self.queued_at.pop(user_id, now)
        metrics.MATCHMAKING_WAIT.observe(now - since)
        return since, self.queue_origin.pop(user_id, self.node)

    def _put_back_waiter(self, waiter: Any, entry: tuple[float, str]) -> None:
        self.queue[waiter.id] = waiter
        self.queue.move_to_end(waiter.id, last=False)
        self.queued_at[waiter.id], self.queue_origin[waiter.id] = entry

    def _clear_queue(self) -> None:
        self.queue.clear()
        self.queued_at.clear()
        self.queue_origin.clear()

    def _leave_queue(self, user_id: int) -> None:
        home = self.queue_home
        if home == self.node:
            self._unqueue(user_id, self.node)
        elif home is not None:
            self.bus.send(home, UNQUEUE, {"user": user_id})

    def _unqueue(self, user_id: int, origin: str) -> None:
        if user_id in self.queue and self.queue_origin.get(user_id) == origin:
            del self.queue[user_id]
            self.queued_at.pop(user_id, None)
            self.queue_origin.pop(user_id, None)

    async def _create_match(self, first: Any, second: Any, dequeued: list[int] = (),
                            refuse: bool = True) -> Match:
        """Create a match in the store (which checks the limits: MatchRefused,
        or MatchLimit unless ``refuse``), become its home, and tell both
        players on every node."""
        try:
            match = await self._store_new(first, second, limit=self.max_open)
        except MatchLimit as refusal:
            if not refuse:
                raise
            raise MatchRefused(self._limit_message(refusal, first, second)) from None
        for user_id in dequeued:
            self.waiting_here.pop(user_id, None)
        try:
            holder = await self.leases.claim(MATCH_LEASE + match.id)
        except StoreError as problem:
            self.log.warn("match {id} created without a home: {problem}", id=match.id,
                          problem=problem)
            holder = None
        if holder == self.node:
            self._index(match)
        else:  # the next request for it takes it over
            self.match_store.forget(match)
            self._remember_remote(match)
        self._push_match(match, 0, dequeued)
        return match

    def _limit_message(self, refusal: MatchLimit, first: Any, second: Any) -> str:
        if refusal.reason == "against":
            return f"there is already an open match against {second.name}"
        who = (first, second)[refusal.seat or 0].name
        return f"{who} has too many open matches (at most {self.max_open})"

    # play: at the home, or forwarded there

    async def move(self, user: Any, match_id: Any, arguments: dict[str, Any],
                   address: str | None = None) -> Match:
        body = {"user": encode_user(user), "match": match_id, "move": arguments,
                "address": address}
        return await self._play(match_id, MOVE, body, lambda: UltimateMatches.move(
            self, user, match_id, arguments, address))

    async def abort(self, user: Any, match_id: Any) -> Match:
        body = {"user": encode_user(user), "match": match_id}
        return await self._play(match_id, ABORT, body,
                                lambda: UltimateMatches.abort(self, user, match_id))

    async def end_by_operator(self, match_id: str) -> Match:
        return await self._routed(match_id, END, {"match": match_id},
                                  lambda: UltimateMatches.end_by_operator(self, match_id))

    async def open_match(self, match_id: Any) -> Match | None:
        """The open match ``match_id`` homed anywhere (a copy if elsewhere)."""
        if not isinstance(match_id, str):
            return None
        match = self.open.get(match_id) or self.remote.get(match_id) \
            or await self.match_store.load(match_id)
        if match is None or match.source != SOURCE or match.finished:
            return None
        return match

    async def _play(self, match_id: Any, topic: str, body: dict[str, Any],
                    here: Callable[[], Awaitable[Match]]) -> Match:
        """A player's change: when its home cannot be reached the player
        gets the match back unchanged (so the client's board unlocks)."""
        try:
            return await self._routed(match_id, topic, body, here)
        except (HomeUnreachable, StoreError) as problem:
            view = self.remote.get(match_id) or self.open.get(match_id)
            if view is None:
                raise
            self.log.warn("{topic} in match {id} not done: {problem}", topic=topic,
                          id=match_id, problem=problem)
            raise MoveRefused(view, "the match's server cannot be reached, try again") \
                from None

    async def _routed(self, match_id: Any, topic: str, body: dict[str, Any],
                      here: Callable[[], Awaitable[Match]]) -> Match:
        """Run ``here`` if this node is the match's home (or the match is not
        open: then this node answers from the store), else forward ``body``
        to the home."""
        if not isinstance(match_id, str):
            return await here()
        for _hop in range(MAX_HOPS):
            home = await self._home(match_id)
            if home is None or home == self.node:
                return await here()
            try:
                reply = await self.calls.call(home, topic, body, timeout=CALL_TIMEOUT)
            except RemoteError as error:
                if error.kind != NotHome.__name__:
                    raise local_error(error) from None
                self.homes.pop(match_id, None)
                continue
            except NodeGone:
                self.homes.pop(match_id, None)
                continue
            except CallTimeout:
                raise HomeUnreachable(f"node {home} did not answer in time") from None
            if "refused" in reply:
                raise MoveRefused(self._copy(reply["match"]), reply["refused"])
            if "match" in reply:
                return self._copy(reply["match"])
            # The change's broadcast arrived before the reply (both from the
            # home, in order): this node's copy is the match as changed.
            return self.remote.get(match_id) or await self.open_match(match_id) \
                or await self.match_store.load(match_id)
        raise HomeUnreachable(f"the home of match {match_id} keeps moving")

    def _copy(self, data: dict[str, Any]) -> Match:
        """A match of another node; the newest copy this node has of it."""
        match = decode_match(data, self.match_store)
        known = self.remote.get(match.id)
        return known if known is not None and progress(known) > progress(match) else match

    async def _home(self, match_id: str, wait: bool = True) -> str | None:
        """The node of an open match's home, this node if it took the match
        over; None if the match is not open (finished, or no such match)."""
        if match_id in self.open:
            return self.node
        cached = self.homes.get(match_id)
        if cached is not None and self._reachable(cached):
            return cached
        lock = self._resolving.setdefault(match_id, DeferredLock())
        await lock.acquire()
        try:
            if match_id in self.open:
                return self.node
            holder = await self._claim_if_free(MATCH_LEASE + match_id,
                                               lambda: self._still_open(match_id), wait)
            if holder == self.node:
                return await self._adopt(match_id)
            if holder is not None:
                self.homes[match_id] = holder
            return holder
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._resolving.pop(match_id, None)

    async def _claim_if_free(self, name: str, exists: Callable[[], Awaitable[bool]],
                             wait: bool = True) -> str | None:
        """The live holder of lease ``name``; this node after taking it, if
        nobody holds it and ``exists()``; None if it does not exist. A holder
        known to have stopped is waited out (its lease expires) unless not
        ``wait``."""
        attempts = int(2 * self.leases.ttl / self.leases.renew_interval) + 2
        for _attempt in range(attempts):
            holder = await self.leases.holder(name)
            if holder is None or holder == self.node:
                if holder is None and not await exists():
                    return None
                holder = await self.leases.claim(name)
                if holder == self.node:
                    return holder
            if self._reachable(holder) or not wait:
                return holder
            await deferLater(self.clock, self.leases.renew_interval, lambda: None)
        raise HomeUnreachable(f"{name} is held by a node that stopped")

    @staticmethod
    async def _true() -> bool:
        return True

    async def _still_open(self, match_id: str) -> bool:
        match = await self.match_store.load(match_id)
        return match is not None and match.source == SOURCE and not match.finished

    async def _adopt(self, match_id: str) -> str | None:
        """Take a match over from the store (this node holds its lease now)."""
        match = await self.match_store.load_live(match_id)
        if match is None or match.source != SOURCE:  # finished meanwhile
            await self.leases.release(MATCH_LEASE + match_id)
            return None
        self._forget_remote(match_id)
        self.homes.pop(match_id, None)
        self._index(match)
        self.log.info("ultimate tic-tac-toe: match {id} taken over", id=match_id)
        return self.node

    def _reachable(self, node: str) -> bool:
        """Whether ``node`` may answer (not seen stopping, or back since)."""
        return node == self.node or node in self.leases.nodes or node not in self._gone

    async def _finish(self, match: Match) -> None:
        await super()._finish(match)
        self.leases.release(MATCH_LEASE + match.id).addErrback(
            lambda failure: self.log.warn("lease of match {id} not released: {error}",
                                          id=match.id, error=failure.value))

    async def expire_idle(self) -> int:
        """Also take over the idle matches that have no home, so that they expire."""
        await self.ready()
        for match_id in await self.match_store.idle(SOURCE, self.clock.seconds() - self.idle):
            await self._take_if_homeless(match_id)
        return await super().expire_idle()

    async def end_orphaned(self) -> int:
        """Also for matches homed elsewhere (their homes are told) or nowhere."""
        await self.ready()
        homes = set()
        for match_id, _seat in await self.match_store.seats_without_user(SOURCE):
            home = await self._take_if_homeless(match_id)
            if home is not None and home != self.node:
                homes.add(home)
        for home in sorted(homes):
            self.bus.send(home, ORPHANS, {})
        return await super().end_orphaned()

    async def _take_if_homeless(self, match_id: str) -> str | None:
        if match_id in self.open:
            return self.node
        try:
            return await self._home(match_id, wait=False)
        except HomeUnreachable:
            return None

    # serving other nodes

    def _serve(self, topic: str, serve: Callable[[str, Any], Awaitable[Any]]) -> None:
        async def served(sender: str, body: Any) -> Any:
            try:
                return await serve(sender, body)
            except StoreError as problem:
                raise RemoteStoreError(str(problem)) from None

        self.calls.serve(topic, lambda sender, body: shielded(ensureDeferred(
            served(sender, body))))

    async def _at_home(self, match_id: str) -> None:
        """NotHome unless this node is (or just became) the match's home, or
        the match is not open (then this node answers from the store)."""
        if match_id in self.open or match_id in self.finished:
            return
        home = await self._home(match_id)
        if home is not None and home != self.node:
            raise NotHome(home)

    async def _serve_move(self, sender: str, body: dict[str, Any]) -> dict[str, Any]:
        await self._at_home(body["match"])
        return await self._reply(UltimateMatches.move(
            self, decode_user(body["user"]), body["match"], body["move"], body["address"]))

    async def _serve_abort(self, sender: str, body: dict[str, Any]) -> dict[str, Any]:
        await self._at_home(body["match"])
        return await self._reply(UltimateMatches.abort(
            self, decode_user(body["user"]), body["match"]))

    async def _serve_end(self, sender: str, body: dict[str, Any]) -> dict[str, Any]:
        await self._at_home(body["match"])
        return await self._reply(UltimateMatches.end_by_operator(self, body["match"]),
                                 with_match=True)

    @staticmethod
    async def _reply(change: Awaitable[Match], with_match: bool = False) -> dict[str, Any]:
        """The answer to a forwarded change. A change made is broadcast
        anyway, so the answer carries the match only when asked (the
        operator's node may have no copy of it) or when it was refused
        (then nothing else tells the mover's node)."""
        try:
            match = await change
        except MoveRefused as refusal:
            return {"refused": str(refusal), "match": encode_match(refusal.match)}
        return {"match": encode_match(match)} if with_match else {}

    async def _serve_random(self, sender: str, body: dict[str, Any]) -> dict[str, Any]:
        if await self._queue_home() != self.node:
            raise NotHome(self.queue_home)
        match = await self._random_here(decode_user(body["user"]), sender)
        return {"match": encode_match(match) if match is not None else None}

    # pushes

    def _push_match(self, match: Match, first_seat: int = 0, dequeued: list[int] = ()) -> None:
        super()._push_match(match, first_seat)
        self.bus.broadcast(PUSH_MATCH, {"match": encode_match(match), "first": first_seat,
                                        "dequeued": list(dequeued)})

    def _push_standings(self, standings: list[tuple[int | None, Standing]]) -> None:
        super()._push_standings(standings)
        if standings:
            top = standings[0][1]
            self.bus.broadcast(PUSH_STANDINGS, {
                "top_names": top.top_names, "top_elos": top.top_elos,
                "players": [[user_id, standing.elo, standing.rank]
                            for user_id, standing in standings]})

    def push_friends(self, user: Any, friends: FriendList) -> None:
        super().push_friends(user, friends)
        self.bus.broadcast(PUSH_FRIENDS, {"user": user.id, "names": friends.names,
                                          "elos": friends.elos})

    def _pushed_match(self, sender: str, body: dict[str, Any]) -> None:
        for user_id in body["dequeued"]:
            self.waiting_here.pop(user_id, None)
        data = body["match"]
        if data["id"] in self.open:
            # Only a match's home broadcasts its changes: another node took
            # it over (this node's lease expired before it could renew it).
            self._drop_home(data["id"])
        if not any(user_id in self.sinks for _name, user_id in data["seats"]):
            self._forget_remote(data["id"])
            return
        match = decode_match(data, self.match_store)
        if match.finished:
            self.homes.pop(match.id, None)
        else:
            self.homes[match.id] = sender
        if self._remember_remote(match):
            UltimateMatches._push_match(self, match, body["first"])

    def _pushed_standings(self, sender: str, body: dict[str, Any]) -> None:
        standings = [(user_id, Standing(elo, rank, body["top_names"], body["top_elos"]))
                     for user_id, elo, rank in body["players"]]
        UltimateMatches._push_standings(self, standings)

    def _pushed_friends(self, sender: str, body: dict[str, Any]) -> None:
        friends = FriendList(body["names"], body["elos"])
        for sink in self.sinks_of(body["user"]):
            sink.friends_changed(friends)

    # copies of matches homed elsewhere

    def _has_local_player(self, match: Match) -> bool:
        return any(seat.user_id in self.sinks for seat in match.seats)

    def _remember_remote(self, match: Match) -> bool:
        """Keep ``match`` as this node's copy unless the copy is newer;
        returns whether it is the newest this node has seen."""
        known = self.remote.get(match.id)
        if known is not None and progress(known) > progress(match):
            return False
        self._forget_remote(match.id)
        if not match.finished:
            self.remote[match.id] = match
            for seat in match.seats:
                if seat.user_id is not None:
                    self.remote_by_user.setdefault(seat.user_id, {})[match.id] = match
        return True

    def _forget_remote(self, match_id: str) -> None:
        match = self.remote.pop(match_id, None)
        if match is None:
            return
        for seat in match.seats:
            matches = self.remote_by_user.get(seat.user_id)
            if matches is not None:
                matches.pop(match_id, None)
                if not matches:
                    del self.remote_by_user[seat.user_id]

    # nodes and leases

    def _node_gone(self, node: str) -> None:
        self._gone.add(node)
        for match_id in [m for m, home in self.homes.items() if home == node]:
            del self.homes[match_id]
        for user_id in [u for u, origin in self.queue_origin.items() if origin == node]:
            self._unqueue(user_id, node)
        if self.queue_home == node:
            self.queue_home = None
            self._requeue()

    def _lease_lost(self, name: str) -> None:
        if name == QUEUE_LEASE:
            self._clear_queue()
            self.queue_home = None
            self.bus.broadcast(REQUEUE, {})
            self._requeue()
        elif name.startswith(MATCH_LEASE):
            self._drop_home(name[len(MATCH_LEASE):])

    def _drop_home(self, match_id: str) -> None:
        """This node is no longer the home of ``match_id``: keep a copy only."""
        match = self.open.get(match_id)
        if match is None:
            return
        self.log.warn("ultimate tic-tac-toe: match {id} is homed elsewhere now", id=match_id)
        self._unindex(match)
        self.match_store.forget(match)
        if self._has_local_player(match):
            self._remember_remote(match)

    def _requeue_message(self, sender: str, body: Any) -> None:
        """The queue's home lost its queue (or restarted without it)."""
        if self.queue_home == sender:
            self.queue_home = None
            self._requeue()

    def _requeue(self) -> None:
        """Enqueue this node's waiting users again, at the queue's new home."""
        ensureDeferred(self._requeue_waiting()).addErrback(
            lambda failure: self.log.failure("re-enqueueing failed", failure))

    async def _requeue_waiting(self) -> None:
        await self._requeue_lock.acquire()
        try:
            for user in list(self.waiting_here.values()):
                if user.id not in self.waiting_here or not self.sinks.get(user.id):
                    continue
                try:
                    await self._at_queue_home(lambda user=user: self._random_here(
                        user, self.node), {"user": encode_user(user)})
                except MatchRefused as refusal:
                    if "already waiting" not in str(refusal):
                        self.waiting_here.pop(user.id, None)
                        self.log.info("{user} left the random queue: {why}", user=user.name,
                                      why=refusal)
                except (HomeUnreachable, StoreError) as problem:
                    self.waiting_here.pop(user.id, None)
                    self.log.warn("{user} left the random queue: {why}", user=user.name,
                                  why=problem)
        finally:
            self._requeue_lock.release()

    def _unqueue_message(self, sender: str, body: dict[str, Any]) -> None:
        self._unqueue(body["user"], sender)

    def _orphans_message(self, sender: str, body: Any) -> None:
        ensureDeferred(UltimateMatches.end_orphaned(self)).addErrback(
            lambda failure: self.log.failure("ending orphaned matches failed", failure))


def _tally(players: dict[str, list]) -> tuple[Counter, set[frozenset]]:
    """Open matches per user, and the pairs of users sharing one."""
    counts: Counter = Counter()
    pairs: set[frozenset] = set()
    for users in players.values():
        present = [user for user in users if user is not None]
        counts.update(present)
        pairs.update(frozenset((a, b)) for a in present for b in present if a != b)
    return counts, pairs
