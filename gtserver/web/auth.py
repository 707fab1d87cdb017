"""Who may use the web monitor: the admin password, the token, sessions, CSRF.

Two credentials open the monitor and its API:

* the **admin password**, whose scrypt hash (the daemon's own hasher) is kept
  in the store's ``settings`` table and set with ``gtserver-admin
  set-password``;
* the **token** read from ``--web-token-file``: typed at the login page like
  the password, or sent by scripts as ``Authorization: Bearer TOKEN``.

A login opens a **session**: a random id in a cookie (``HttpOnly``,
``SameSite=Strict``, ``Secure`` on TLS) and a CSRF token tied to it, which
every POST of that session must carry in the ``X-CSRF-Token`` header (or the
``csrf`` form field). Bearer requests carry no cookie and need none.

Wrong passwords are counted by the daemon's login guard
(:class:`gtserver.core.login.LoginGuard`) under the account name
:data:`ADMIN_ACCOUNT`, so the per-account and per-address budgets of every
other listener apply here too.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from gtserver.core.login import LoginPolicy
from gtserver.core.peers import Peer
from gtserver.store import settings as queries

#: The ``settings`` row holding the admin password's hash.
PASSWORD_SETTING = "web_admin_password"
#: The name the login guard counts wrong admin passwords under (no listener
#: accepts it as a user name, so it never shares a budget with a player).
ADMIN_ACCOUNT = "@web-admin"
COOKIE = b"gtserver_web"
#: Sessions kept at most; the least recently used goes first.
MAX_SESSIONS = 1000
#: Tokens shorter than this are refused (they could be guessed).
MIN_TOKEN = 16


class NotAllowed(Exception):
    """Wrong password or token; the message says what to do."""


def _any_admin_name(name: str) -> str:
    return name


ADMIN_POLICY = LoginPolicy(_any_admin_name)


def read_token_file(path: str) -> bytes:
    """The token held in ``path`` (``--web-token-file``): its text without
    surrounding white space. ValueError if unreadable, too short, or readable
    by every user."""
    try:
        with open(path, "rb") as source:
            token = source.read().strip()
            mode = os.fstat(source.fileno()).st_mode
    except OSError as error:
        raise ValueError(f"cannot read --web-token-file {path}: {error}") from None
    if len(token) < MIN_TOKEN or b"\n" in token or not token.isascii():
        raise ValueError(f"--web-token-file {path} should hold one line of at least "
                         f"{MIN_TOKEN} ASCII characters")
    if mode & stat.S_IROTH:
        raise ValueError(f"--web-token-file {path} may be read by every user "
                         f"(mode {stat.S_IMODE(mode):04o}): chmod o-r {path}")
    return token


read_token_file.coerceDoc = "A file of one line, not readable by every user."  # type: ignore


@dataclass
class WebSession:
    id: str
    csrf: str
    who: str
    address: str
    created: float
    last_used: float


class WebAuth:
    """Checks credentials and keeps the monitor's sessions (in memory)."""

    def __init__(self, core: Any, token: bytes | None, session_lifetime: float) -> None:
        self.core = core
        self.clock = core.clock
        self.token = token
        self.session_lifetime = session_lifetime
        self.sessions: OrderedDict[str, WebSession] = OrderedDict()

    # credentials

    def token_matches(self, offered: bytes | str | None) -> bool:
        if self.token is None or offered is None:
            return False
        if isinstance(offered, str):
            offered = offered.encode("utf-8", "surrogatepass")
        return hmac.compare_digest(offered, self.token)

    async def password_hash(self) -> str | None:
        return await self.core.store.run(queries.get_setting, PASSWORD_SETTING)

    async def log_in(self, password: str, peer: Peer | None) -> WebSession:
        """A new session for the right password or token; NotAllowed, or the
        guard's LoginThrottled, otherwise."""
        guess = self.core.accounts.guard.start_guess(ADMIN_ACCOUNT, peer, ADMIN_POLICY)
        address = peer.address if peer is not None else ""
        try:
            if self.token_matches(password):
                who = "token"
            else:
                encoded = await self.password_hash()
                hasher = self.core.accounts.hasher
                matches = await hasher.verify(password, encoded or hasher.dummy_hash)
                if not encoded or not matches:
                    guess.failed(address or None)
                    raise NotAllowed("wrong password" if encoded or self.token else
                                     "no admin password is set: run gtserver-admin "
                                     "set-password, or start with --web-token-file")
                who = "admin"
        except NotAllowed:
            raise
        except BaseException:
            guess.abandoned()
            raise
        guess.succeeded()
        return self._open_session(who, address)

    # sessions

    def _open_session(self, who: str, address: str) -> WebSession:
        now = self.clock.seconds()
        session = WebSession(secrets.token_urlsafe(32), secrets.token_urlsafe(32), who,
                             address, now, now)
        self.sessions[session.id] = session
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)
        return session

    def session(self, session_id: str | None) -> WebSession | None:
        """The live session with this id (its use refreshes it), else None."""
        if not session_id:
            return None
        session = self.sessions.get(session_id)
        if session is None:
            return None
        now = self.clock.seconds()
        if now - session.last_used > self.session_lifetime:
            del self.sessions[session_id]
            return None
        session.last_used = now
        self.sessions.move_to_end(session_id)
        return session

    def log_out(self, session: WebSession) -> None:
        self.sessions.pop(session.id, None)

    @staticmethod
    def csrf_matches(session: WebSession, offered: bytes | str | None) -> bool:
        if isinstance(offered, str):
            offered = offered.encode("utf-8", "surrogatepass")
        return offered is not None and hmac.compare_digest(offered, session.csrf.encode())
