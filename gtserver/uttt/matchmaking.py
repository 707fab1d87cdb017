"""Ultimate tic-tac-toe matchmaking and play, independent of any wire format.

:class:`UltimateMatches` plays :class:`gtserver.core.matches.Match` objects
kept in a :class:`gtserver.core.match_store.MatchStore` (source ``"uttt"``,
game ``UltimateTicTacToe``). It serialises the changes of each match (one
lock per match) and stores every change before it tells anyone, so an
acknowledged move is never lost; and it adds what the ultimate tic-tac-toe
clients expect: a random-opponent queue, named challenges, limits on open
matches, the abort rule, idle-match expiry, the end of matches whose player's
account expired, ratings after each finished match, and pushes to every
connection ("sink") of the players concerned.

A sink is any object with ``match_changed(match)``, ``standing_changed(standing)``
and ``friends_changed(friend_list)``; adapters register theirs per user with
:meth:`UltimateMatches.connect` and render the values in their wire format.

Users are identified by id, not name: a temporary user's name may be reused
by someone else once it expires.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from gtserver import metrics
from gtserver.core.accounts import Accounts
from gtserver.core.errors import CoreError
from gtserver.core.match_store import MatchStore
from gtserver.core.matches import Match, MatchOver, NotYourTurn, Seat
from gtserver.core.presence import Presence
from gtserver.core.ratings import Ratings, Standing
from gtserver.games import IllegalMove
from gtserver.store import StoreError
from gtserver.uttt.settings import MatchmakingSettings

SOURCE = "uttt"
GAME = "UltimateTicTacToe"


class MatchRefused(CoreError):
    """A match request was refused; the message says why."""


class UnknownMatch(CoreError):
    """No open or recently finished match has this id."""


class NotYourMatch(CoreError):
    """The user does not play in this match."""


class MoveRefused(CoreError):
    """A move or end request on ``match`` was refused; its state is unchanged."""

    def __init__(self, match: Match, reason: str) -> None:
        super().__init__(reason)
        self.match = match


class Sink(Protocol):
    def match_changed(self, match: Match) -> None: ...
    def standing_changed(self, standing: Standing) -> None: ...
    def friends_changed(self, friends: Any) -> None: ...


class UltimateMatches(Service):
    """Every ultimate tic-tac-toe match of the daemon: matchmaking, the limits,
    idle-match expiry, and for each change the match's lock and "store, then
    tell"."""

    log = Logger()
    #: How many finished matches stay answerable (e.g. a late move gets the final state).
    keep_finished = 10_000

    def __init__(self, match_store: MatchStore, ratings: Ratings, accounts: Accounts,
                 clock: IReactorTime, settings: MatchmakingSettings,
                 presence: Presence | None = None) -> None:
        """``presence`` is told of every connection (a private one if None)."""
        self.match_store = match_store
        self.ratings = ratings
        self.accounts = accounts
        self.clock = clock
        self.presence = presence if presence is not None else Presence(clock)
        self.idle = settings.match_idle
        self.max_open = settings.max_open_matches
        self.check_interval = settings.expiry_interval
        #: One lock per open match that is being changed: its changes are serialised.
        self.locks: dict[str, DeferredLock] = {}
        self.open: dict[str, Match] = {}
        self.by_user: dict[int, dict[str, Match]] = {}
        self.finished: OrderedDict[str, Match] = OrderedDict()
        self.queue: OrderedDict[int, Any] = OrderedDict()
        #: When each user in the queue started waiting.
        self.queued_at: dict[int, float] = {}
        self.sinks: dict[int, list[Sink]] = {}
        #: Opponents per user of the matches being stored right now; they count
        #: against the limits, so checks need no lock across the store write.
        self._creating: dict[int, list[int]] = {}
        self._ready: Deferred | None = None
        self._expiry: LoopingCall | None = None

    # lifecycle

    def startService(self) -> None:
        super().startService()
        self._ready = ensureDeferred(self._load())
        self._expiry = LoopingCall(self._expire_logged)
        self._expiry.clock = self.clock
        self._expiry.start(self.check_interval, now=False)
        self.accounts.after_expiry.append(self.end_orphaned)

    def stopService(self):
        if self.end_orphaned in self.accounts.after_expiry:
            self.accounts.after_expiry.remove(self.end_orphaned)
        if self._expiry is not None and self._expiry.running:
            self._expiry.stop()
        return super().stopService()

    async def ready(self) -> None:
        """Wait until the stored open matches are loaded."""
        if self._ready is None:
            self._ready = ensureDeferred(self._load())
        if not self._ready.called:
            await self._ready

    async def _load(self) -> None:
        for match in await self.match_store.load_open(SOURCE):
            if not match.finished:
                self._index(match)
        self.log.info("ultimate tic-tac-toe: {count} open matches resumed", count=len(self.open))

    # connections

    def connect(self, user: Any, sink: Sink) -> list[Match]:
        """Register a connection of ``user``; returns the user's open matches."""
        self._add_sink(user, sink)
        return self._sending(user, self.open_matches(user))

    def _add_sink(self, user: Any, sink: Sink) -> None:
        self.sinks.setdefault(user.id, []).append(sink)
        self.presence.arrived(sink, SOURCE, user.name, getattr(sink, "address", None))

    @staticmethod
    def _sending(user: Any, matches: list[Match]) -> list[Match]:
        """``matches``, which the adapter sends to ``user`` now (recorded)."""
        for match in matches:
            for seat, player in enumerate(match.seats):
                if player.user_id == user.id:
                    match.sent(seat)
        return matches

    async def connect_loaded(self, user: Any, sink: Sink) -> list[Match]:
        """:meth:`connect`, once every open match of the user is known here
        (at once on a single daemon; a node of a deployment reads them from
        the store)."""
        return self.connect(user, sink)

    def disconnect(self, user: Any, sink: Sink) -> None:
        """Forget a connection; a user without connections leaves the random queue."""
        self.presence.gone(sink, matches=[match.id for match in self.open_matches(user)])
        sinks = self.sinks.get(user.id, [])
        if sink in sinks:
            sinks.remove(sink)
        if not sinks:
            self.sinks.pop(user.id, None)
            self.queue.pop(user.id, None)
            self.queued_at.pop(user.id, None)

    def sinks_of(self, user_id: int | None) -> list[Sink]:
        return list(self.sinks.get(user_id, ())) if user_id is not None else []

    def open_matches(self, user: Any) -> list[Match]:
        return sorted(self.by_user.get(user.id, {}).values(), key=lambda m: m.created)

    # matchmaking

    async def request_random(self, user: Any) -> Match | None:
        """Pair with the longest-waiting compatible user (who becomes player_a),
        or wait in the queue; returns the new match or None when queued."""
        await self.ready()
        if user.id in self.queue:
            raise MatchRefused("you are already waiting for an opponent")
        self._check_capacity(user, "you have")
        for waiter in list(self.queue.values()):
            try:
                self._check_pair(waiter, user)
            except MatchRefused:
                continue
            del self.queue[waiter.id]
            now = self.clock.seconds()
            metrics.MATCHMAKING_WAIT.observe(now - self.queued_at.pop(waiter.id, now))
            return await self._create(waiter, user)
        if self.sinks.get(user.id):   # gone already: nobody to pair later
            self.queue[user.id] = user
            self.queued_at[user.id] = self.clock.seconds()
        return None

    async def challenge(self, user: Any, opponent: Any | None, opponent_name: str) -> Match:
        """Start a match against a named user at once (the requester is player_a)."""
        await self.ready()
        if opponent_name == user.name:
            raise MatchRefused("you cannot play against yourself")
        if opponent is None:
            raise MatchRefused(f"there is no user {opponent_name}")
        self._check_pair(user, opponent)
        return await self._create(user, opponent)

    def _check_pair(self, first: Any, second: Any) -> None:
        if first.id == second.id:
            raise MatchRefused("you cannot play against yourself")
        open_against = any(seat.user_id == second.id
                           for match in self.by_user.get(first.id, {}).values()
                           for seat in match.seats)
        if open_against or second.id in self._creating.get(first.id, ()):
            raise MatchRefused(f"there is already an open match against {second.name}")
        self._check_capacity(first, f"{first.name} has")
        self._check_capacity(second, f"{second.name} has")

    def _check_capacity(self, user: Any, who: str) -> None:
        if len(self.by_user.get(user.id, {})) + len(self._creating.get(user.id, ())) \
                >= self.max_open:
            raise MatchRefused(f"{who} too many open matches (at most {self.max_open})")

    async def _create(self, first: Any, second: Any) -> Match:
        """Store and start a match; call it right after the checks passed (the
        pair counts as matched from here on, before the store write)."""
        match = await self._store_new(first, second)
        self._index(match)
        self._push_match(match)
        return match

    async def _store_new(self, first: Any, second: Any, limit: int | None = None) -> Match:
        """Store a new match of ``first`` and ``second``; while the store
        writes it, the pair counts as matched (``_creating``). ``limit`` is
        checked by the store (see ``MatchStore.create``)."""
        ranked = not first.temporary and not second.temporary
        pair = ((first.id, second.id), (second.id, first.id))
        for user_id, opponent_id in pair:
            self._creating.setdefault(user_id, []).append(opponent_id)
        try:
            return await self.match_store.create(
                GAME, [Seat(first.name, first.id), Seat(second.name, second.id)], SOURCE,
                ranked=ranked, limit=limit)
        finally:
            for user_id, opponent_id in pair:
                opponents = self._creating[user_id]
                opponents.remove(opponent_id)
                if not opponents:
                    del self._creating[user_id]

    # play

    def find(self, user: Any, match_id: Any) -> tuple[Match, int]:
        """The match (open or recently finished) and the user's seat in it."""
        match = self.open.get(match_id) if isinstance(match_id, str) else None
        if match is None and isinstance(match_id, str):
            match = self.finished.get(match_id)
        if match is None:
            raise UnknownMatch(f"there is no match {match_id}")
        for seat, player in enumerate(match.seats):
            if player.user_id == user.id:
                return match, seat
        raise NotYourMatch("you do not play in this match")

    async def _find(self, user: Any, match_id: Any) -> tuple[Match, int]:
        """:meth:`find`, also looking in the store for a match that finished
        before a restart or long ago, so a late request gets its final state."""
        try:
            return self.find(user, match_id)
        except UnknownMatch:
            if not isinstance(match_id, str):
                raise
            match = await self.match_store.load(match_id)
            if match is None or match.source != SOURCE or not match.finished:
                raise
            self._remember_finished(match)
            return self.find(user, match_id)

    async def move(self, user: Any, match_id: Any, arguments: dict[str, Any],
                   address: str | None = None) -> Match:
        """Play a move; both players are told, the mover first, as soon as it
        is stored (before a move waiting behind it can change the match).

        Raises UnknownMatch, NotYourMatch, or MoveRefused (with the unchanged match).
        """
        match, seat = await self._find(user, match_id)
        if match.finished:
            raise MoveRefused(match, "the match is over")
        try:
            finished = await self._change(
                match, seat, lambda: match.apply(seat, arguments, self.clock.seconds()),
                lambda: match.moved(seat, arguments, address),
                lambda refusal: match.refused(seat, arguments, refusal, address))
        except IllegalMove as refusal:
            raise MoveRefused(match, str(refusal.message)) from None
        except (MatchOver, NotYourTurn) as refusal:
            raise MoveRefused(match, str(refusal)) from None
        except StoreError as error:  # an outage, not a bug: one line, no traceback
            self.log.warn("move in match {id} not stored: {error}", id=match.id, error=error)
            raise MoveRefused(match, "the move could not be stored, try again") from None
        if finished:  # by this move (a change after it may have ended the match too)
            await self._finish(match)
        return match

    async def abort(self, user: Any, match_id: Any) -> Match:
        """End a match early. In a ranked match where both players have moved,
        this counts as a loss for the one who ends it."""
        match, seat = await self._find(user, match_id)
        if match.finished:
            raise MoveRefused(match, "the match is over")
        forfeit = match.ranked and both_have_moved(match)
        await self._end(match, seat, "aborted", forfeit)
        return match

    async def expire_idle(self) -> int:
        """End every match idle longer than the limit, lost by the player to move."""
        await self.ready()
        deadline = self.clock.seconds() - self.idle
        expired = 0
        for match in [m for m in self.open.values() if m.updated <= deadline]:
            if match.finished:
                continue
            try:
                await self._end(match, seat_to_move(match), "expired", True)
            except MoveRefused:
                continue
            expired += 1
        return expired

    async def end_orphaned(self) -> int:
        """End every open match in which a player's account no longer exists
        (an expired temporary user, an idle account removed): that player
        loses, the opponent is told, nobody is rated. Runs after each account
        expiry that removed users, and with the idle-match check (which also
        catches accounts removed while the server was down)."""
        await self.ready()
        ended = 0
        for match_id, seat in await self.match_store.seats_without_user(SOURCE):
            match = self.open.get(match_id)
            if match is None or match.finished:
                continue
            self._forget_player(match, seat)
            try:
                await self._end(match, seat, "player expired", True)
            except MoveRefused:
                continue
            ended += 1
        if ended:
            self.log.info("ultimate tic-tac-toe: {count} matches of expired users ended",
                          count=ended)
        return ended

    async def end_by_operator(self, match_id: str) -> Match:
        """End an open match for the server's operator: nobody wins, nobody
        is rated, both players are told (stored first, under the match's
        lock). UnknownMatch if it is not open."""
        match = self.open.get(match_id) if isinstance(match_id, str) else None
        if match is None or match.finished:
            raise UnknownMatch(f"there is no open match {match_id}")

        def end() -> None:
            match.abort(None, self.clock.seconds())
            match.extra.update(end="ended by the operator", forfeit=False)

        try:
            await self._change(match, 0, end, match.ended)
        except MatchOver:
            raise UnknownMatch(f"there is no open match {match_id}") from None
        await self._finish(match)
        return match

    async def open_match(self, match_id: Any) -> Match | None:
        """The open match ``match_id``, else None (for the operator, who may
        end it with :meth:`end_by_operator`)."""
        match = self.open.get(match_id) if isinstance(match_id, str) else None
        return match if match is not None and not match.finished else None

    def snapshot(self) -> dict[str, Any]:
        """The random queue (longest waiting first), the matches being created
        and the open matches, as plain data (for the web monitor)."""
        now = self.clock.seconds()
        return {"queue": [{"user": user.name, "waiting": now - self.queued_at.get(user_id, now)}
                          for user_id, user in self.queue.items()],
                "creating": sum(len(opponents) for opponents in self._creating.values()) // 2,
                "open_matches": len(self.open),
                "matches": [match.view(now) for match in
                            sorted(self.open.values(), key=lambda match: match.created)]}

    def _forget_player(self, match: Match, seat: int) -> None:
        """Detach a removed user from a match: no more pushes, moves or ratings for it."""
        user_id = match.seats[seat].user_id
        if user_id is None:
            return
        matches = self.by_user.get(user_id)
        if matches is not None:
            matches.pop(match.id, None)
            if not matches:
                del self.by_user[user_id]
        self.queue.pop(user_id, None)
        self.queued_at.pop(user_id, None)
        match.seats[seat].user_id = None

    async def _end(self, match: Match, seat: int, how: str, forfeit: bool) -> None:
        def abort() -> None:
            match.abort(seat, self.clock.seconds())
            match.extra.update(end=how, forfeit=forfeit)

        try:
            await self._change(match, seat, abort, match.ended)
        except MatchOver:
            raise MoveRefused(match, "the match is over") from None
        await self._finish(match)

    async def _change(self, match: Match, seat: int, change: Callable[[], None],
                      record: Callable[[], None],
                      record_refusal: Callable[[IllegalMove], None] | None = None) -> bool:
        """Change a match, store it, then record the change and tell the players
        (``seat`` first); the changes of one match run one at a time, in order.
        A change the game refuses is recorded with ``record_refusal`` while
        the match is still locked (so in its place among the changes).

        The players are told before the next change of the match may start
        (releasing the lock starts a waiting change at once). When the store
        write fails the change is undone and the error raised. Returns
        whether this change finished the match.
        """
        lock = self.locks.get(match.id)
        if lock is None:
            lock = self.locks[match.id] = DeferredLock()
        await lock.acquire()
        try:
            before = match.snapshot()
            try:
                change()
            except IllegalMove as refusal:
                if record_refusal is not None:
                    record_refusal(refusal)
                    await self.match_store.recorder.stored()
                raise
            try:
                await self.match_store.save(match)
            except Exception:
                match.rollback(before)
                raise
            record()
            # The move's event too is stored before anyone is told.
            finished = match.finished
            await self.match_store.recorder.stored()
            self._push_match(match, first_seat=seat)
        finally:
            lock.release()
        return finished

    async def _finish(self, match: Match) -> None:
        """Retire a finished match, rate it, and send both players their standing."""
        self._unindex(match)
        self.locks.pop(match.id, None)
        self.match_store.forget(match)
        self._remember_finished(match)
        result = scores(match)
        players = [seat.user_id for seat in match.seats]
        rated = match.ranked and result is not None and None not in players
        standings = await self.ratings.finish(match.id, players, result if rated else None,
                                              SOURCE, [seat.name for seat in match.seats])
        self._push_standings(list(zip(players, standings, strict=True)))

    # pushes and bookkeeping

    def revoke_time(self, match: Match) -> float:
        """When the match expires if nobody moves (seconds since the epoch)."""
        return match.updated + self.idle

    def _push_standings(self, standings: list[tuple[int | None, Standing]]) -> None:
        """Tell each user (id) its standing."""
        for user_id, standing in standings:
            for sink in self.sinks_of(user_id):
                sink.standing_changed(standing)

    def push_friends(self, user: Any, friends: Any) -> None:
        for sink in self.sinks_of(user.id):
            sink.friends_changed(friends)

    def _push_match(self, match: Match, first_seat: int = 0) -> None:
        order = [first_seat] + [s for s in range(len(match.seats)) if s != first_seat]
        for seat in order:
            sinks = self.sinks_of(match.seats[seat].user_id)
            if sinks:
                match.sent(seat)
            for sink in sinks:
                try:
                    sink.match_changed(match)
                except Exception:
                    self.log.failure("push to a connection failed")

    def _remember_finished(self, match: Match) -> None:
        self.finished[match.id] = match
        while len(self.finished) > self.keep_finished:
            self.finished.popitem(last=False)

    def _index(self, match: Match) -> None:
        self.open[match.id] = match
        for seat in match.seats:
            if seat.user_id is not None:
                self.by_user.setdefault(seat.user_id, {})[match.id] = match

    def _unindex(self, match: Match) -> None:
        self.open.pop(match.id, None)
        for seat in match.seats:
            matches = self.by_user.get(seat.user_id)
            if matches is not None:
                matches.pop(match.id, None)
                if not matches:
                    del self.by_user[seat.user_id]

    def _expire_logged(self) -> None:
        def report(count: int) -> None:
            if count:
                self.log.info("ultimate tic-tac-toe: {count} idle matches expired", count=count)

        def failed(failure: Any) -> None:
            self.log.failure("match expiry failed", failure)

        async def run() -> int:
            expired = await self.expire_idle()
            await self.end_orphaned()
            return expired

        ensureDeferred(run()).addCallbacks(report, failed)


def both_have_moved(match: Match) -> bool:
    cells = [cell for row in match.game.field for cell in row]
    return 1 in cells and 2 in cells


def seat_to_move(match: Match) -> int:
    return match.game.to_move


def scores(match: Match) -> list[float] | None:
    """Score per seat of a finished match; None when it ended without a result
    (aborted before it counted)."""
    if match.game.is_over():
        return match.game.outcome()
    if match.aborted_by is not None and match.aborted_by >= 0 and match.extra.get("forfeit"):
        return [0.0 if seat == match.aborted_by else 1.0 for seat in range(len(match.seats))]
    return None


def winner(match: Match) -> int | None:
    """The winning seat of a finished match, else None."""
    result = scores(match)
    if result is None or 1.0 not in result:
        return None
    return result.index(1.0)
