"""Accounts and sessions: the one identity service every protocol shares."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from inspect import iscoroutine
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from gtserver.core.errors import BadCredentials, InvalidName, NameTaken, UnknownSession
from gtserver.core.login import DEFAULT_POLICY, LoginGuard, LoginLimits, LoginPolicy
from gtserver.core.passwords import PasswordHasher
from gtserver.core.peers import Peer
from gtserver.core.throttle import LoginThrottled
from gtserver.store import Conflict, Store
from gtserver.store import accounts as queries

DAY = 24 * 3600.0

#: Event kinds of the research log for logins (docs/export.md, "Presence events").
LOGIN, LOGIN_FAILED, LOGIN_THROTTLED, RECONNECT = (
    "login", "login_failed", "login_throttled", "reconnect")


@dataclass(frozen=True)
class User:
    id: int
    name: str
    temporary: bool
    created: float
    last_seen: float

    @classmethod
    def from_row(cls, row: tuple) -> User:
        user_id, name, _hash, temporary, created, last_seen = row
        return cls(user_id, name, bool(temporary), created, last_seen)


@dataclass(frozen=True)
class Lifetimes:
    """Idle lifetimes in seconds (reference defaults of the game protocols)."""

    account: float = 45 * DAY
    session: float = 20 * DAY
    temporary: float = 3600.0
    check_interval: float = 3600.0


class Accounts(Service):
    """Register, log in, temporary users, session tokens, expiry on a timer.

    Logins, registrations and temporary users of every listener come here
    with the client's :class:`~gtserver.core.peers.Peer` and the listener's
    :class:`~gtserver.core.login.LoginPolicy`; one :class:`LoginGuard` counts
    the guessing and registration budgets for all of them. With an event log,
    every login, refused login and reconnection through a policy that names
    its listener is recorded (never the password).
    """

    log = Logger()

    def __init__(self, store: Store, clock: Any, hasher: PasswordHasher | None = None,
                 lifetimes: Lifetimes = Lifetimes(),
                 limits: LoginLimits = LoginLimits(), events: Any = None) -> None:
        """``events`` is the research log (its ``record`` method), or None."""
        self.store = store
        self.events = events
        self.clock = clock
        self.hasher = hasher or PasswordHasher()
        self.lifetimes = lifetimes
        self.guard = LoginGuard(clock, limits)
        self._expiry: LoopingCall | None = None
        #: The latest expiry run (fires when it is done), for tests and shutdown.
        self.expiry_run: Deferred | None = None
        #: Called (no arguments) after an expiry run removed accounts, so that
        #: services holding user ids can settle what belonged to them. A
        #: returned Deferred or coroutine is waited for; errors are logged.
        self.after_expiry: list[Callable[[], Any]] = []

    # lifecycle

    def startService(self) -> None:
        super().startService()
        self._expiry = LoopingCall(self._expire_logged)
        self._expiry.clock = self.clock
        self._expiry.start(self.lifetimes.check_interval, now=False)

    def stopService(self):
        if self._expiry is not None and self._expiry.running:
            self._expiry.stop()
        super().stopService()
        self.hasher.stop()
        # Let a running expiry finish before the store closes under it.
        if self.expiry_run is not None and not self.expiry_run.called:
            return self.expiry_run
        return None

    # identity

    async def user(self, name: str) -> User | None:
        row = await self.store.run(queries.user_by_name, name)
        return User.from_row(row) if row else None

    async def register(self, name: str, password: str, peer: Peer | None = None,
                       policy: LoginPolicy = DEFAULT_POLICY) -> User:
        """Create a registered account; NameTaken if the name is in use.

        With a ``peer``, counts against its registration budget (LoginThrottled).
        """
        name = policy.name_rule(name)
        self.guard.start_registration(name, peer)
        encoded = await self.hasher.hash(password)
        await self.store.run(queries.replace_temporary_user, name, self.clock.seconds())
        try:
            row = await self.store.run(queries.insert_user, name, encoded, False,
                                       self.clock.seconds())
        except Conflict:
            raise NameTaken(name) from None
        self.guard.registered(name, peer)
        return User.from_row(row)

    async def authenticate(self, name: str, password: str, peer: Peer | None = None,
                           policy: LoginPolicy = DEFAULT_POLICY) -> User:
        """The registered user with this name and password, else BadCredentials.

        The guess is counted before the password is checked; LoginThrottled if
        the account (or, for an account new to it, ``peer``) is over budget.
        """
        name = policy.name_rule(name)
        guess = self.guard.start_guess(name, peer, policy)
        try:
            row = await self.store.run(queries.user_by_name, name)
            encoded = row[2] if row else None
            # Verify even for unknown names, so timing does not reveal which exist.
            matches = await self.hasher.verify(password, encoded or self.hasher.dummy_hash)
            if not row or not encoded or not matches:
                guess.failed(peer.address if peer is not None else None)
                raise BadCredentials(name)
            await self.store.run(queries.touch_user, row[0], self.clock.seconds())
        except BadCredentials:
            raise
        except BaseException:
            guess.abandoned()
            raise
        guess.succeeded()
        return User.from_row(row)

    async def login(self, name: str, password: str, peer: Peer | None = None,
                    policy: LoginPolicy = DEFAULT_POLICY) -> tuple[User, bool]:
        """Log in, registering unknown names; returns (user, newly registered).

        ``name`` must pass the listener's name rule (InvalidName); the
        throttle may refuse with LoginThrottled.
        """
        try:
            user, registered = await self._login(name, password, peer, policy)
        except (InvalidName, BadCredentials, LoginThrottled) as refusal:
            self.record_refusal(refusal, name, peer, policy)
            raise
        self.record_login(LOGIN, user.name, peer, policy, registered=registered)
        return user, registered

    async def _login(self, name: str, password: str, peer: Peer | None,
                     policy: LoginPolicy) -> tuple[User, bool]:
        name = policy.name_rule(name)
        if await self.user(name) is None:
            try:
                return await self.register(name, password, peer, policy), True
            except NameTaken:
                pass  # registered concurrently: fall through to a normal login
        return await self.authenticate(name, password, peer, policy), False

    async def create_temporary(self, name: str, peer: Peer | None = None,
                               policy: LoginPolicy = DEFAULT_POLICY) -> User:
        """A password-less user that expires when idle; NameTaken if in use.

        Temporary users cost no hash and are not throttled.
        """
        try:
            name = policy.name_rule(name)
            now = self.clock.seconds()
            await self.store.run(queries.replace_temporary_user, name, now)
            try:
                row = await self.store.run(queries.insert_user, name, None, True, now)
            except Conflict:
                raise NameTaken(name) from None
        except (InvalidName, NameTaken) as refusal:
            self.record_refusal(refusal, name, peer, policy)
            raise
        user = User.from_row(row)
        self.record_login(LOGIN, user.name, peer, policy, temporary=True)
        return user

    # sessions

    async def open_session(self, user: User) -> str:
        """A new session token (256 random bits) for ``user``."""
        token = secrets.token_urlsafe(32)
        await self.store.run(queries.insert_session, token, user.id, user.temporary,
                             self.clock.seconds())
        return token

    async def resume(self, token: str, peer: Peer | None = None,
                     policy: LoginPolicy | None = None) -> User:
        """The user of a live session, else UnknownSession.

        With a ``policy``, a client's reconnection: it is recorded (``reconnect``,
        or ``login_failed`` for an unknown session; never the token).
        """
        try:
            if not isinstance(token, str) or not token:
                raise UnknownSession(token)
            row = await self.store.run(
                queries.resume_session, token, self.clock.seconds(),
                self.lifetimes.session, self.lifetimes.temporary)
            if row is None:
                raise UnknownSession(token)
        except UnknownSession as refusal:
            if policy is not None:
                self.record_refusal(refusal, None, peer, policy)
            raise
        user = User.from_row(row)
        if policy is not None:
            self.record_login(RECONNECT, user.name, peer, policy, temporary=user.temporary)
        return user

    # the research log

    def record_login(self, kind: str, name: Any, peer: Peer | None, policy: LoginPolicy,
                     **data: Any) -> None:
        """One login event of ``policy``'s listener (nothing if it has no name)."""
        if self.events is None or policy.listener is None:
            return
        self.events.record(policy.listener, kind,
                           user=name if isinstance(name, str) else None,
                           address=peer.address if peer is not None else None,
                           data=data or None)

    def record_refusal(self, refusal: Exception, name: Any, peer: Peer | None,
                       policy: LoginPolicy) -> None:
        """A refused login as ``login_throttled`` or ``login_failed`` with its reason."""
        if isinstance(refusal, LoginThrottled):
            self.record_login(LOGIN_THROTTLED, name, peer, policy, budget=refusal.budget,
                              retry_after=refusal.retry_after)
        else:
            self.record_login(LOGIN_FAILED, name, peer, policy,
                              reason=_reason(refusal))

    # expiry

    async def expire(self) -> tuple[int, int]:
        """Remove idle sessions and accounts now; returns (sessions, users) removed."""
        lifetimes = self.lifetimes
        return await self.store.run(
            queries.expire, self.clock.seconds(), lifetimes.account, lifetimes.session,
            lifetimes.temporary)

    def _expire_logged(self) -> Deferred:
        def report(counts):
            if any(counts):
                self.log.info("expired {sessions} sessions and {users} accounts",
                              sessions=counts[0], users=counts[1])
            if counts[1]:
                return self._notify_expired()
            return None

        def failed(failure):
            self.log.failure("account expiry failed", failure)

        # Errors are logged, never raised: a failing run must not stop the timer.
        # Returning the Deferred makes the LoopingCall wait, so runs never overlap.
        self.expiry_run = ensureDeferred(self.expire()).addCallbacks(report, failed)
        return self.expiry_run

    def _notify_expired(self) -> Deferred:
        def failed(failure):
            self.log.failure("an after-expiry observer failed", failure)

        waits = [maybeDeferred(observer).addCallback(_awaited).addErrback(failed)
                 for observer in list(self.after_expiry)]
        return DeferredList(waits).addCallback(lambda _results: None)


_REASONS = ((BadCredentials, "wrong_password"), (InvalidName, "invalid_name"),
            (NameTaken, "name_taken"), (UnknownSession, "unknown_session"))


def _reason(refusal: Exception) -> str:
    """The ``reason`` of a ``login_failed`` event (docs/export.md)."""
    return next((reason for kind, reason in _REASONS if isinstance(refusal, kind)),
                "refused")


def _awaited(result: Any) -> Any:
    """A coroutine returned by an observer, as a Deferred; anything else unchanged."""
    return ensureDeferred(result) if iscoroutine(result) else result
