"""The login policy shared by every listener: name rules and guessing budgets.

Budgets (:class:`LoginLimits`, from the daemon's options) are counted by the
accounts service across every listener:

* wrong passwords **per account**: once an account has
  ``failures_per_account`` of them within ``window`` seconds, its logins are
  refused (right password included) until the oldest leaves the window;
* wrong passwords **per address** (client host, any port), a much larger
  budget: once spent, that address may still log in to accounts that logged
  in from it before (a lab behind one NAT keeps working), but guesses at other
  accounts are refused. Throttled attempts are not counted, so one person
  retrying one account spends at most ``failures_per_account`` of it;
* **registrations per address**: new accounts from one host within
  ``registration_window`` seconds.

A guess is counted when it starts, so that guesses sent at once cannot all
be checked. Each listener passes a :class:`LoginPolicy`: its name rule and,
if it has its own options, its own per-account budget over the same counts.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger
from twisted.python import usage

from gtserver import metrics
from gtserver.core.errors import InvalidName
from gtserver.core.peers import Peer, parse_network
from gtserver.core.throttle import LoginThrottled, Throttle

#: Known (address, account) pairs kept for the per-address exemption.
MAX_KNOWN_PAIRS = 100_000


def any_name(name: str) -> str:
    """The default name rule: any non-empty string, unchanged."""
    if not isinstance(name, str) or not name:
        raise InvalidName("a name must be a non-empty string")
    return name


@dataclass(frozen=True)
class LoginPolicy:
    """What one listener asks of the accounts service at login."""

    #: Returns the name as stored (e.g. lower-cased) or raises InvalidName.
    name_rule: Callable[[str], str] = any_name
    #: This listener's wrong passwords per account (None: the daemon's budget).
    failures_per_account: int | None = None
    #: Seconds they count (None: the daemon's window).
    window: float | None = None
    #: The listener's name, the ``source`` of its login events in the research
    #: log (None: logins through this policy are not recorded).
    listener: str | None = None


DEFAULT_POLICY = LoginPolicy()


@dataclass(frozen=True)
class LoginLimits:
    failures_per_account: int = 5
    failures_per_address: int = 100
    window: float = 300.0
    registrations_per_address: int = 30
    registration_window: float = 60.0


class LoginGuard:
    """The three budgets of :class:`LoginLimits`, with log lines when they bite."""

    log = Logger()

    def __init__(self, clock: Any, limits: LoginLimits = LoginLimits()) -> None:
        self.limits = limits
        self.accounts = Throttle(clock, limits.failures_per_account, limits.window)
        self.addresses = Throttle(clock, limits.failures_per_address, limits.window)
        self.registrations = Throttle(clock, limits.registrations_per_address,
                                      limits.registration_window)
        self._known: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._logged_until: dict[tuple[str, str], float] = {}

    def use_clock(self, clock: Any) -> None:
        """Count time on ``clock`` (tests drive the windows with ``task.Clock``)."""
        for throttle in (self.accounts, self.addresses, self.registrations):
            throttle.clock = clock

    def start_guess(self, name: str, peer: Peer | None,
                    policy: LoginPolicy = DEFAULT_POLICY) -> Guess:
        """A password check about to start, counted now; LoginThrottled if over budget."""
        limit, window = policy.failures_per_account, policy.window
        wait = self.accounts.retry_after(name, limit, window)
        if wait > 0:
            self._refused("account", name, peer, wait)
        host = peer.throttle_key if peer is not None else None
        if host is not None and (host, name) not in self._known:
            wait = self.addresses.retry_after(host)
            if wait > 0:
                self._refused("address", name, peer, wait)
        stamp = self.accounts.failure(name)
        if host is not None:
            self.addresses.failure(host)
        return Guess(self, name, host, stamp)

    def start_registration(self, name: str, peer: Peer | None) -> None:
        """Count a registration from ``peer`` now; LoginThrottled if over budget."""
        if peer is None:
            return
        wait = self.registrations.retry_after(peer.throttle_key)
        if wait > 0:
            self._refused("registrations", name, peer, wait)
        self.registrations.failure(peer.throttle_key)

    def registered(self, name: str, peer: Peer | None) -> None:
        """A new account from ``peer``: it may log in from there like a known one."""
        if peer is not None:
            self._remember(peer.throttle_key, name)

    def _refused(self, budget: str, name: str, peer: Peer | None, wait: float) -> None:
        address = peer.address if peer is not None else None
        what = "new accounts" if budget == "registrations" else "failed logins"
        key = (budget, name if budget == "account" or peer is None else peer.throttle_key)
        now = self.accounts.clock.seconds()
        if self._logged_until.get(key, -1.0) <= now:    # one line per blocked spell
            if len(self._logged_until) > MAX_KNOWN_PAIRS:
                self._logged_until = {k: t for k, t in self._logged_until.items() if t > now}
            self._logged_until[key] = now + wait
            self.log.warn(
                "throttling {budget}: refused {name} from {address} ({what}), "
                "for {seconds:.0f} s", budget=_BUDGETS[budget], name=name, address=address,
                what=what, seconds=wait, throttled=budget)
        metrics.LOGIN_THROTTLED(budget)
        raise LoginThrottled(wait, what, budget)

    def _remember(self, host: str | None, name: str) -> None:
        if host is None:
            return
        pair = (host, name)
        self._known[pair] = None
        self._known.move_to_end(pair)
        if len(self._known) > MAX_KNOWN_PAIRS:
            self._known.popitem(last=False)


_BUDGETS = {"account": "logins of one account", "address": "guesses from one address",
            "registrations": "registrations from one address"}


@dataclass
class Guess:
    """One password check in progress, already counted against both budgets."""

    guard: LoginGuard
    name: str
    host: str | None
    stamp: float

    def succeeded(self) -> None:
        """Right password: the account's failures are forgotten, this guess too."""
        self.guard.accounts.success(self.name)
        if self.host is not None:
            self.guard.addresses.withdraw(self.host, self.stamp)
        self.guard._remember(self.host, self.name)

    def failed(self, address: str | None) -> None:
        """Wrong password: it stays counted."""
        metrics.LOGIN_FAILURES.inc()
        self.guard.log.info("failed login for {name} from {address}", name=self.name,
                            address=address)

    def abandoned(self) -> None:
        """Not a guess after all (the database failed, ...): take it back."""
        self.guard.accounts.withdraw(self.name, self.stamp)
        if self.host is not None:
            self.guard.addresses.withdraw(self.host, self.stamp)


def _positive(kind: type, what: str) -> Callable[[str], Any]:
    def coerce(text: str) -> Any:
        value = kind(text)
        if not value > 0:
            raise ValueError(f"{what} must be above 0")
        return value
    coerce.coerceDoc = f"{what}: above 0."      # type: ignore[attr-defined]
    return coerce


class LoginOptions(usage.Options):
    """The daemon's login options (a base of ``tap.BaseOptions``)."""

    optParameters: list[list[Any]] = [
        ["login-failures-per-account", None, LoginLimits.failures_per_account,
         "Wrong passwords for one account (over every listener) within --login-window "
         "after which its logins are refused until they leave the window.",
         _positive(int, "login-failures-per-account")],
        ["login-failures-per-address", None, LoginLimits.failures_per_address,
         "Wrong passwords from one client host within --login-window after which it may "
         "only log in to accounts that logged in from it before.",
         _positive(int, "login-failures-per-address")],
        ["login-window", None, LoginLimits.window,
         "Seconds a wrong password counts.", _positive(float, "login-window")],
        ["registrations-per-address", None, LoginLimits.registrations_per_address,
         "New accounts one client host may register within --registration-window.",
         _positive(int, "registrations-per-address")],
        ["registration-window", None, LoginLimits.registration_window,
         "Seconds a registration counts.", _positive(float, "registration-window")],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["trusted-proxy"] = []

    def opt_trusted_proxy(self, value: str) -> None:
        """ADDRESS: a reverse proxy (address or network, repeatable) whose X-Forwarded-For header names the client on the WebSocket listeners. Off by default."""  # noqa: E501
        try:
            parse_network(value)
        except ValueError as error:
            raise usage.UsageError(f"--trusted-proxy: {error}") from None
        self["trusted-proxy"].append(value.strip())
