"""Game settings from the daemon's options: per service, and Chat's bounds."""

from __future__ import annotations

from twisted.internet import task
from twisted.python import usage
from twisted.trial import unittest

from gtserver.games.chat import Chat
from gtserver.plugins import gtserver_games
from tests.support import parse_options
from tests.test_eot import call, eot_server, join_all, sessions_of


class PerServiceSettingsTests(unittest.TestCase):
    async def rounds_played(self, server, port: int) -> int:
        players = await join_all(server, port, "PrisonersDilemma", "pd", 2)
        return (await players[0].state())["data"]["rounds"]

    async def test_a_second_service_does_not_change_the_first(self):
        first, first_port = await eot_server(self, "--pd-rounds", "2", "--pd-payoffs",
                                             "9,3,1,0")
        second, second_port = await eot_server(self, "--pd-rounds", "7")
        self.assertEqual(await self.rounds_played(first, first_port), 2)
        self.assertEqual(await self.rounds_played(second, second_port), 7)
        games = [server.core.matches.games for server in (first, second)]
        self.assertEqual(games[0]["PrisonersDilemma"].settings["payoffs"][
            ("defect", "cooperate")], 9)
        self.assertEqual(games[1]["PrisonersDilemma"].settings["payoffs"][
            ("defect", "cooperate")], 5)
        self.assertEqual(games[0]["StagHunt"].settings, {"rounds": 2})
        # The installed plugin objects keep no settings at all.
        self.assertEqual(gtserver_games.prisoners_dilemma.settings, {})
        self.assertEqual(gtserver_games.chat.settings, {})
        self.assertIsNot(games[0]["Chat"], gtserver_games.chat)

    def test_non_positive_settings_are_usage_errors(self):
        for option in ("--pd-rounds", "--eot-chat-line-max", "--eot-chat-history-max"):
            for value in ("0", "-3", "many"):
                with self.assertRaises(usage.UsageError, msg=(option, value)):
                    parse_options(option, value)


class ChatBoundsTests(unittest.TestCase):
    async def chat(self, *arguments: str):
        server, port = await eot_server(self, *arguments)
        (speaker,) = await join_all(server, port, "Chat", "bounded", 1)
        self.assertEqual((await speaker.move(name="ab"))["status"], "ok")
        return server, port, speaker

    async def test_default_bounds(self):
        server, port, speaker = await self.chat()
        reply = await speaker.move(message="x" * (Chat.default_line_max + 1))
        self.assertEqual(reply, {"status": "illegalmove",
                                 "message": "the message is longer than 4096 bytes"})
        line = "y" * Chat.default_line_max
        for _ in range(Chat.default_history_max // len(line) + 5):
            self.assertEqual((await speaker.move(message=line))["status"], "ok")
        messages = (await speaker.state())["data"]["messages"]
        kept = sum(len(name) + len(text) for name, text in messages)
        self.assertLessEqual(kept, Chat.default_history_max)
        self.assertGreater(kept, Chat.default_history_max - len(line) - 3)

    async def test_configured_bounds_count_utf8_bytes(self):
        server, port, speaker = await self.chat("--eot-chat-line-max", "10",
                                                "--eot-chat-history-max", "40")
        reply = await speaker.move(message="é" * 6)          # 6 characters, 12 bytes
        self.assertEqual(reply["message"], "the message is longer than 10 bytes")
        reply = await speaker.move(name="ü" * 6)
        self.assertEqual(reply["message"], "the name is longer than 10 bytes")
        for number in range(8):
            self.assertEqual((await speaker.move(message=f"line {number:03}"))["status"],
                             "ok")                           # 2 + 8 bytes a line
        messages = (await speaker.state())["data"]["messages"]
        self.assertEqual(messages, [["ab", f"line {n:03}"] for n in range(4, 8)])
        # A name and message that together exceed the whole history are refused.
        small, small_port, other = await self.chat("--eot-chat-line-max", "10",
                                                   "--eot-chat-history-max", "11")
        reply = await other.move(message="1234567890")
        self.assertEqual(reply["status"], "illegalmove")
        self.assertIn("longer than the chat history", reply["message"])
        self.assertEqual((await call(small_port, other.request("state")))["data"],
                         {"messages": [], "current": [0], "gameover": False})


class ReleaseOverTheWireTests(unittest.TestCase):
    async def test_a_finished_session_is_released_after_the_grace(self):
        server, port = await eot_server(self, "--eot-finished-grace", "5")
        clock = sessions_of(server).clock = task.Clock()
        for token in ("kept", "released"):
            (player,) = await join_all(server, port, "Echo", token, 1, ["solo"])
            await player.move(msg="quit")
            self.assertTrue((await player.state())["data"]["gameover"])
            clock.advance(4)
            if token == "kept":         # a restart within the grace keeps the session
                self.assertEqual(await player.restart(), {"status": "ok", "data": None})
                clock.advance(4)
                self.assertFalse((await player.state())["data"]["gameover"])
            else:
                clock.advance(1)
                reply = await player.state()
                self.assertEqual(reply, {"status": "error",
                                         "message": "framework: no such session"})
        self.assertEqual(list(sessions_of(server).sessions), [("Echo", "kept")])

    def test_options(self):
        self.assertEqual(parse_options()["eot-finished-grace"], 60.0)
        self.assertEqual(parse_options()["eot-sessions-max"], 10_000)
        with self.assertRaises(usage.UsageError):
            parse_options("--eot-sessions-max", "0")
