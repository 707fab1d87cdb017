"""gtserver.client against a real server, over TCP and TLS, playing every built-in game."""

from __future__ import annotations

import tempfile

from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from gtserver.client import GameClient, GameServerAPI, GameServerError, IllegalMove, InvalidArgument
from gtserver.games import GameFactory
from gtserver.games import IllegalMove as Refusal
from tests.fakegames import OneSeatGame
from tests.support import start_server
from tests.tls import write_self_signed_certificate


def play_tictactoe(client: GameClient) -> dict:
    """A simple player: takes the first free cell whenever it is its turn."""
    me = client.join()
    while True:
        state = client.state()
        if state["gameover"]:
            return state
        if me in state["current"]:
            client.move(position=state["board"].index(-1))


class Picky(OneSeatGame):
    """A one-player game that refuses every move with the message it is given."""

    def move(self, seat, refuse):
        raise Refusal(refuse)


class ClientTests(unittest.TestCase):
    async def server(self, *arguments: str, endpoint: str | None = None) -> int:
        server = await start_server(self, *arguments, listeners={"eot": endpoint})
        return server.port("eot")

    async def test_echo(self):
        port = await self.server()

        def session():
            client = GameClient("127.0.0.1", port, "Echo", players=1)
            self.assertEqual(client.join(), 0)
            self.assertTrue(client.session.startswith("auto-"))
            first = client.state()
            client.move(msg="hello")
            second = client.state()
            with self.assertRaises(IllegalMove) as refused:
                client.move(msg="error")
            after_error = client.state()
            with self.assertRaises(IllegalMove):
                client.move()
            client.move(msg="quit")
            final = client.state()
            with self.assertRaises(GameServerError) as over:
                client.move(msg="again")
            client.restart()
            return first, second, refused.exception.args, after_error, final, \
                str(over.exception), client.state()

        first, second, refusal, after_error, final, over, restarted = \
            await deferToThread(session)
        self.assertEqual(first, {"echo": "", "current": [0], "gameover": False})
        self.assertEqual(second["echo"], "hello")
        self.assertEqual(len(refusal), 1)
        self.assertEqual(after_error["echo"], "error")
        self.assertEqual(final, {"echo": "quit", "current": [], "gameover": True})
        self.assertIn("over", over)
        self.assertEqual(restarted, first)

    async def test_tictactoe_two_threads(self):
        port = await self.server()
        clients = [GameClient("127.0.0.1", port, "TicTacToe", "match-1", 2, f"p{i}")
                   for i in range(2)]
        results = [deferToThread(play_tictactoe, client) for client in clients]
        finals = [await result for result in results]
        self.assertEqual(finals[0], finals[1])
        self.assertTrue(finals[0]["gameover"])
        self.assertEqual(sorted(client.player_id for client in clients), [0, 1])

    async def test_observer(self):
        port = await self.server()
        players = [GameClient("127.0.0.1", port, "Echo", "watch-me", 1, "solo")]
        await deferToThread(players[0].join)
        watcher = GameServerAPI("127.0.0.1", port, "Echo", "watch-me", name="solo")
        self.assertEqual(await deferToThread(watcher.observe), 0)
        self.assertEqual(await deferToThread(watcher.state), await deferToThread(players[0].state))
        waiting = deferToThread(watcher.state)
        await deferToThread(players[0].move, msg="look")
        self.assertEqual((await waiting)["echo"], "look")
        with self.assertRaises(GameServerError):
            watcher.move(msg="no")
        with self.assertRaises(GameServerError):
            GameClient("127.0.0.1", port, "Echo", "auto", name="solo").observe()

    async def test_chat(self):
        port = await self.server()
        clients = [GameClient("127.0.0.1", port, "Chat", "chat", 2) for _ in range(2)]
        joins = [deferToThread(client.join) for client in clients]
        for join in joins:
            await join

        def talk():
            first, second = clients
            with self.assertRaises(IllegalMove):
                first.move(message="before naming")
            first.move(name="ann")
            with self.assertRaises(IllegalMove):
                second.move(name="ann")
            with self.assertRaises(IllegalMove):
                second.move(name="")
            second.move(name="bob", message="hi ann")
            first.move(message="   ")
            first.move(message="hi bob")
            return first.state(), second.state()

        first_view, second_view = await deferToThread(talk)
        self.assertEqual(first_view["messages"], [["bob", "hi ann"], ["ann", "hi bob"]])
        self.assertEqual(first_view, second_view)
        self.assertEqual(first_view["current"], [0, 1])
        self.assertFalse(first_view["gameover"])

    async def test_prisoners_dilemma(self):
        port = await self.server("--pd-rounds", "2")
        clients = [GameClient("127.0.0.1", port, "PrisonersDilemma", "pd", 2) for _ in range(2)]
        joins = [deferToThread(client.join) for client in clients]
        for join in joins:
            await join
        first, second = sorted(clients, key=lambda client: client.player_id)

        def play():
            views = []
            first.state()
            first.move(choice="defect")
            views.append(second.state())            # second has not chosen yet
            views.append(first.state())             # right after its own move
            with self.assertRaises(GameServerError):
                first.move(choice="defect")          # already chose: not in current
            with self.assertRaises(IllegalMove):
                second.move(choice="betray")
            second.move(choice="cooperate")
            first.move(choice="cooperate")
            second.move(choice="cooperate")
            views.append(second.state())
            return views

        before, mine, final = await deferToThread(play)
        self.assertEqual(before["current"], [1])
        self.assertIsNone(before["my_choice"])
        self.assertEqual(before["history"], [])
        hidden = {key: value for key, value in before.items() if key != "payoff_matrix"}
        self.assertNotIn("defect", repr(hidden))
        self.assertEqual(mine["my_choice"], "defect")
        self.assertTrue(final["gameover"])
        self.assertEqual(final["history"], [
            {"choices": ["defect", "cooperate"], "payoffs": [5, 0]},
            {"choices": ["cooperate", "cooperate"], "payoffs": [3, 3]}])
        self.assertEqual(final["totals"], [8, 3])

    async def test_ultimate_tic_tac_toe(self):
        port = await self.server()
        clients = [GameClient("127.0.0.1", port, "UltimateTicTacToe", "u", 2) for _ in range(2)]
        joins = [deferToThread(client.join) for client in clients]
        for join in joins:
            await join
        first, second = sorted(clients, key=lambda client: client.player_id)

        def play():
            start = first.state()
            first.move(sub_x=1, sub_y=1, x=0, y=2)
            with self.assertRaises(IllegalMove):
                second.move(sub_x=1, sub_y=1, x=0, y=0)     # must play in sub-board (0, 2)
            second.move(sub_x="0", sub_y="2", x="2", y="2")  # strings work too
            return start, first.state()

        start, after = await deferToThread(play)
        self.assertEqual(start["current"], [0])
        self.assertEqual(start["current_player"], 0)
        self.assertEqual(after["complete_field"][5][3], 1)
        self.assertEqual(after["complete_field"][8][2], 2)
        self.assertEqual(after["current"], [0])
        self.assertEqual(after["last_move"], {"sub_x": 0, "sub_y": 2, "x": 2, "y": 2})

    async def test_tls(self):
        directory = tempfile.mkdtemp(prefix="gtserver-tls-")
        self.addCleanup(__import__("shutil").rmtree, directory, True)
        key, cert, _pem = write_self_signed_certificate(directory)
        port = await self.server(
            endpoint=f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}")
        clients = [GameClient("127.0.0.1", port, "TicTacToe", "secure", 2) for _ in range(2)]
        for client in clients:
            client.enable_tls(cafile=cert, server_hostname="localhost")
        results = [deferToThread(play_tictactoe, client) for client in clients]
        finals = [await result for result in results]
        self.assertTrue(finals[0]["gameover"])
        # A client that does not trust the certificate is refused by its own checks.
        stranger = GameClient("127.0.0.1", port, "Echo", players=1)
        stranger.enable_tls()
        with self.assertRaises(GameServerError):
            await deferToThread(stranger.join)
        # Plain TCP to a TLS listener gets no answer but never hangs the server.
        plain = GameClient("127.0.0.1", port, "Echo", players=1)
        with self.assertRaises(GameServerError):
            await deferToThread(plain.join)

    async def test_a_list_message_is_unpacked_into_the_arguments(self):
        server = await start_server(self, listeners={"eot": None})
        server.factory("eot").tables.games["Picky"] = GameFactory(Picky)
        client = GameClient("127.0.0.1", server.port("eot"), "Picky", players=1)

        def refusals():
            client.join()
            found = []
            for message in ("plain", ["square", 3, {"free": [1, 2]}], []):
                try:
                    client.move(refuse=message)
                except IllegalMove as refusal:
                    found.append(refusal.args)
            return found

        self.assertEqual(await deferToThread(refusals),
                         [("plain",), ("square", 3, {"free": [1, 2]}), ()])

    def test_argument_checks(self):
        for arguments in (("", 1, "Echo"), ("h", 70000, "Echo"), ("h", 1, ""),
                          ("h", 1, "Echo", ""), ("h", 1, "Echo", "s", 0),
                          ("h", True, "Echo"), ("h", 1, "Echo", "s", True),
                          ("h", 1, "Echo", "s", None, 7), (None, 1, "Echo")):
            with self.assertRaises(ValueError):
                GameClient(*arguments)
            # The original client raises AssertionError: code catching it still works.
            with self.assertRaises(AssertionError) as refused:
                GameServerAPI(*arguments)
            self.assertIsInstance(refused.exception, InvalidArgument)
            self.assertTrue(str(refused.exception).startswith("Invalid argument: "))
        GameClient("h", 0, "Echo", "s", None, "")
        with self.assertRaises(GameServerError):
            GameClient("h", 1, "Echo").state()

    async def test_unreachable_server(self):
        port = await self.server()
        client = GameClient("127.0.0.1", port, "Echo", players=1)
        await deferToThread(client.join)
        client.port = 1
        with self.assertRaises(GameServerError):
            await deferToThread(client.state)
