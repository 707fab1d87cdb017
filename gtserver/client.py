"""A Python client for the gtserver game API (the ``eot`` listener).

Typical use, one object per player::

    from gtserver.client import GameClient, IllegalMove

    game = GameClient("localhost", 4711, "TicTacToe", session="lab-7", players=2)
    me = game.join()                    # waits until both players have joined
    while True:
        state = game.state()            # waits until something changed
        if state["gameover"]:
            break
        if me in state["current"]:
            try:
                game.move(position=state["board"].index(-1))
            except IllegalMove as refusal:
                print("refused:", refusal)

Every method opens one connection, sends one request and waits for the
answer; the calls block, so use one client object per thread. Errors of the
server raise :class:`GameServerError`; a move the game refuses raises
:class:`IllegalMove` (its ``args`` are the game's message; a list is
unpacked). Invalid constructor arguments raise :class:`InvalidArgument`
(a ``ValueError`` and an ``AssertionError``). ``GameServerAPI`` is another
name for :class:`GameClient`, so code written for the original game
framework runs unchanged.
"""

from __future__ import annotations

import json
import socket
import ssl
from typing import Any

TERMINATOR = b"EOT\0"


class GameServerError(Exception):
    """The server refused a request, or it could not be reached."""


class IllegalMove(Exception):
    """The game refused a move; the arguments are the game's message."""


class InvalidArgument(ValueError, AssertionError):
    """A constructor argument is invalid.

    It is also an ``AssertionError``, which the original framework's client
    raises for bad arguments, so code catching either keeps working.
    """


class GameClient:
    """One player's (or one observer's) connection settings and identity.

    :param server: host name or address of the server
    :param port: TCP port of its ``eot`` listener (4711 by default)
    :param game: name of the game, e.g. ``"TicTacToe"``
    :param session: a token shared by all players of a session, or ``"auto"``
        to be put into the next open session of the game
    :param players: number of players; needed to start a session, ignored when
        joining one that is open
    :param name: your name (others may observe you by it), or the name of the
        player to observe with :meth:`observe`
    :param timeout: seconds allowed for connecting (waiting for an answer is
        never cut short: ``join`` and ``state`` wait as long as needed)
    """

    def __init__(self, server: str, port: int, game: str, session: str = "auto",
                 players: int | None = None, name: str = "", timeout: float = 5.0) -> None:
        if not isinstance(server, str) or not server:
            raise InvalidArgument("Invalid argument: server must be a non-empty string")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidArgument("Invalid argument: port must be an integer 0-65535")
        if not isinstance(game, str) or not game:
            raise InvalidArgument("Invalid argument: game must be a non-empty string")
        if not isinstance(session, str) or not session:
            raise InvalidArgument("Invalid argument: session must be a non-empty string")
        if players is not None and (isinstance(players, bool) or not isinstance(players, int)
                                    or players < 1):
            raise InvalidArgument("Invalid argument: players must be a positive integer "
                                  "or None")
        if not isinstance(name, str):
            raise InvalidArgument("Invalid argument: name must be a string")
        self.server, self.port, self.game = server, port, game
        self.session, self.players, self.name = session, players, name
        self.timeout = timeout
        self.player_id: int | None = None
        self.key: str | None = None
        self.observer = False
        self.request_size_max = 1_000_000
        self._tls: ssl.SSLContext | None = None
        self._server_hostname: str | None = None

    def enable_tls(self, cafile: str | None = None, verify: bool = True,
                   server_hostname: str | None = None,
                   context: ssl.SSLContext | None = None) -> None:
        """Speak TLS to a server's ``ssl:`` listener from now on.

        :param cafile: certificate(s) to trust, e.g. the server's self-signed
            certificate; the system's trusted authorities when None
        :param verify: False skips certificate checks (tests on a trusted
            network only)
        :param server_hostname: the name in the server's certificate, when it
            differs from ``server``
        :param context: a ready ``ssl.SSLContext`` (overrides the others)
        """
        if context is None:
            context = ssl.create_default_context(cafile=cafile)
            if not verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        self._tls = context
        self._server_hostname = server_hostname or self.server

    # requests

    def join(self) -> int:
        """Join or start a session; returns your player id once it is full.

        With a token, everybody using the same token meets in one session; a
        session that is already full is replaced by a new one when
        ``players`` is given. With ``"auto"`` you are put into the next open
        session of the game (a new one if ``players`` is given and none is
        open). Ids are 0 to n-1 in join order.
        """
        data = self._request({"type": "join", "game": self.game, "session": self.session,
                              "players": self.players, "name": self.name})
        self.player_id, self.key = data["player_id"], data["key"]
        self.session = data["session"]
        self.request_size_max = data["request_size_max"]
        self.observer = False
        return self.player_id

    def move(self, **arguments: Any) -> None:
        """Make a move, given as keyword arguments (they depend on the game).

        Raises IllegalMove when the game refuses it, GameServerError when it is
        not your turn, the game is over, or anything else goes wrong.
        """
        self._need_seat()
        if self.observer:
            raise GameServerError("observers cannot move")
        self._request({"type": "move", "game": self.game, "session": self.session,
                       "player_id": self.player_id, "key": self.key, "move": arguments})

    def state(self) -> dict[str, Any]:
        """The game state as a dict, with ``current`` and ``gameover`` added.

        Answers at once when something changed since your last call (the
        game started, anybody's move reached the game, even one it refused,
        or a restart), else waits for the next change. After a restart of a
        finished game you (unless you restarted it) first get that game's
        final state, once; observers of one player share what they are owed.
        """
        self._need_seat()
        return self._request({"type": "state", "game": self.game, "session": self.session,
                              "player_id": self.player_id, "key": self.key,
                              "observer": self.observer})

    def observe(self) -> int:
        """Watch the player called ``name`` in a running named session.

        Afterwards :meth:`state` returns exactly what that player gets.
        Returns the observed player's id.
        """
        if not self.name:
            raise GameServerError("give the name of the player to observe")
        if self.session.startswith("auto"):
            raise GameServerError("auto-join sessions cannot be observed")
        data = self._request({"type": "observe", "game": self.game, "session": self.session,
                              "name": self.name})
        self.player_id, self.key, self.observer = data["player_id"], data["key"], True
        return self.player_id

    def restart(self) -> None:
        """Start a fresh game in the same session; everybody keeps their id."""
        self._need_seat()
        if self.observer:
            raise GameServerError("observers cannot restart the game")
        self._request({"type": "restart", "game": self.game, "session": self.session,
                       "player_id": self.player_id, "key": self.key})

    # transport

    def _need_seat(self) -> None:
        if self.player_id is None:
            raise GameServerError("join a game first")

    def _request(self, request: dict[str, Any]) -> Any:
        try:
            payload = json.dumps(request).encode() + TERMINATOR
        except (TypeError, ValueError) as error:
            raise GameServerError(f"the request cannot be sent as JSON: {error}") from None
        if len(payload) > self.request_size_max:
            raise GameServerError("the request is larger than the server accepts")
        return read_answer(self._exchange(payload))

    def _exchange(self, payload: bytes) -> bytes:
        try:
            connection = socket.create_connection((self.server, self.port), self.timeout)
        except OSError as error:
            raise GameServerError(
                f"cannot connect to {self.server}:{self.port}: {error}") from None
        try:
            if self._tls is not None:
                connection = self._tls.wrap_socket(connection,
                                                   server_hostname=self._server_hostname)
            connection.settimeout(None)     # the server decides how long we wait
            connection.sendall(payload)
            chunks = []
            while True:
                chunk = connection.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except ssl.SSLError as error:
            raise GameServerError(f"TLS failed: {error}") from None
        except OSError as error:
            raise GameServerError(f"connection failed: {error}") from None
        finally:
            connection.close()
        if not chunks:
            raise GameServerError("the server closed the connection without an answer")
        return b"".join(chunks)


#: The name used by the original game framework's client.
GameServerAPI = GameClient

__all__ = ["GameClient", "GameServerAPI", "GameServerError", "IllegalMove", "InvalidArgument"]


def read_answer(answer: bytes) -> Any:
    """The data of a server's answer; IllegalMove or GameServerError for a
    refusal (a list message becomes the exception's arguments)."""
    try:
        reply = json.loads(answer)
        status = reply["status"]
    except (ValueError, KeyError, TypeError):
        raise GameServerError("the server sent an answer that is not valid JSON") from None
    if status == "ok":
        return reply.get("data")
    message = reply.get("message")
    if status == "illegalmove":
        raise IllegalMove(*message) if isinstance(message, list) else IllegalMove(message)
    raise GameServerError(message)
