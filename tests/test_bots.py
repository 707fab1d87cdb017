"""gtserver-bots against a real daemon: each listener for a couple of seconds,
in process and as the installed command; what the server recorded."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections import Counter

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python import usage
from twisted.trial import unittest

from gtserver.bots import Options, format_summary, run_bots
from tests.support import select_events, start_server
from tests.wstimers import settle_websocket_timers

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def options(*arguments: str) -> Options:
    parsed = Options()
    parsed.parseOptions(list(arguments))
    return parsed


class BotRunTests(unittest.TestCase):
    async def serve(self, listener: str, *arguments: str):
        self.addCleanup(settle_websocket_timers)
        self.server = await start_server(self, *arguments, listeners={listener: None})
        return str(self.server.port(listener))

    async def recorded(self, source: str) -> Counter:
        await self.server.core.events.flush()
        rows = await self.server.store.run(select_events, source=source,
                                           limit=100000)
        return Counter(row[3] for row in rows)

    def check_summary(self, summary: dict, bots: int) -> None:
        self.assertEqual(summary["errors"], 0, summary)
        self.assertGreater(summary["actions"], bots)
        self.assertGreater(summary["replies"], 0)
        self.assertGreaterEqual(summary["logins"], bots)
        self.assertLessEqual(summary["latency_p50_ms"], summary["latency_p99_ms"])

    async def test_vr_bots_chat_and_send_poses(self):
        port = await self.serve("vr", "--fps", "5")
        summary = await run_bots(reactor, options(
            "--listener", "vr", "--port", port, "--bots", "4", "--rate", "10",
            "--duration", "2", "--group", "2", "--seed", "1"))
        self.check_summary(summary, 4)
        sent = summary["sent"]
        # Every action but a pose has an answer.
        self.assertEqual(summary["replies"], summary["actions"] - sent.get("transform", 0))
        self.assertGreater(sent["msg"], 0)
        self.assertGreater(sent["transform"], 0)
        kinds = await self.recorded("vr")
        self.assertEqual(kinds["join"], 8)          # the lobby and one room each
        self.assertEqual(kinds["msg"], sent["msg"])
        self.assertEqual(kinds["button"], sent.get("button", 0))
        self.assertGreater(kinds["transform"], 0)  # recorded at the ticks
        for index in range(4):
            self.assertIsNotNone(await self.server.core.accounts.user(f"bot{index}"))

    async def test_vr_bots_in_demo_mode_create_no_accounts(self):
        port = await self.serve("vr", "--vr-any-password")
        summary = await run_bots(reactor, options(
            "--listener", "vr", "--port", port, "--bots", "2", "--rate", "10",
            "--duration", "1", "--password", "anything"))
        self.check_summary(summary, 2)
        self.assertEqual((await self.recorded("vr"))["join"], 4)
        self.assertIsNone(await self.server.core.accounts.user("bot0"))

    async def test_uttt_bots_play_random_matches(self):
        port = await self.serve("uttt")
        summary = await run_bots(reactor, options(
            "--listener", "uttt", "--port", port, "--bots", "4", "--rate", "50",
            "--duration", "3", "--seed", "2"))
        self.check_summary(summary, 4)
        self.assertEqual(summary["replies"], summary["actions"])
        kinds = await self.recorded("uttt")
        self.assertEqual(kinds["move"], summary["sent"]["move"])
        self.assertEqual(kinds["match_end"], summary["games"])
        self.assertGreaterEqual(kinds["match_start"], 2)
        self.assertGreaterEqual(summary["sent"]["match_request"], 4)

    async def test_uttt_temporary_bots_reconnect(self):
        port = await self.serve("uttt")
        summary = await run_bots(reactor, options(
            "--listener", "uttt", "--port", port, "--bots", "2", "--rate", "20",
            "--duration", "2", "--temporary", "--reconnect-every", "0.5"))
        self.assertEqual(summary["errors"], 0, summary)
        self.assertGreater(summary["logins"], 2)      # reconnections count as logins
        self.assertEqual((await self.recorded("uttt"))["move"], summary["sent"]["move"])

    async def test_eot_bots_each_game(self):
        port = await self.serve("eot")
        moves = ended = 0
        for game in ("TicTacToe", "Echo", "Chat"):
            summary = await run_bots(reactor, options(
                "--listener", "eot", "--port", port, "--bots", "4", "--rate", "20",
                "--duration", "1.5", "--game", game, "--group", "2", "--seed", "3"))
            self.check_summary(summary, 4)
            self.assertGreater(summary["games"], 0, (game, summary))
            moves += summary["sent"]["move"]
            if game != "Chat":                       # a chat never ends
                ended += summary["games"]
        kinds = await self.recorded("eot")
        self.assertEqual(kinds["move"], moves)
        self.assertEqual(kinds["match_end"], ended)

    async def test_the_command_prints_a_summary(self):
        port = await self.serve("eot")
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "gtserver.bots", "--listener", "eot", "--port", port,
                             "--bots", "2", "--rate", "10", "--duration", "1", "--json",
                             "--game", "Echo"],
            env={**os.environ, "PYTHONPATH": CHECKOUT}, path=CHECKOUT, reactor=reactor)
        self.assertEqual(code, 0, err)
        summary = json.loads(out)
        self.check_summary(summary, 2)
        self.assertEqual((await self.recorded("eot"))["move"], summary["actions"])


class FailingServerTests(unittest.TestCase):
    async def test_bots_back_off_from_a_server_that_is_not_there(self):
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            port = str(unused.getsockname()[1])
        summary = await run_bots(reactor, options(
            "--listener", "uttt", "--port", port, "--bots", "2", "--rate", "10",
            "--duration", "1.5"))
        self.assertEqual((summary["actions"], summary["logins"]), (0, 0))
        # Without backing off each bot would retry every 0.1 s: 15 times.
        self.assertGreaterEqual(summary["errors"], 2)
        self.assertLessEqual(summary["errors"], 2 * 5)
        self.assertEqual(set(summary["error_kinds"]), {"ConnectionRefusedError"})


class OptionTests(unittest.TestCase):
    def test_defaults(self):
        parsed = options("--listener", "uttt")
        self.assertEqual((parsed["port"], parsed["url"]), (5556, "ws://127.0.0.1:5556/"))
        self.assertEqual(options("--listener", "eot", "--host", "::1")["port"], 4711)

    def test_refusals(self):
        for arguments in ([], ["--listener", "web"], ["--listener", "vr", "--bots", "0"],
                          ["--listener", "vr", "--rate", "0"],
                          ["--listener", "vr", "--duration", "-1"],
                          ["--listener", "eot", "--game", "Chess"],
                          ["--listener", "vr", "--reconnect-every", "-1"]):
            self.assertRaises(usage.UsageError, options, *arguments)

    def test_summary_text(self):
        text = format_summary(options("--listener", "vr"), {
            "actions": 10, "replies": 8, "errors": 1, "games": 0, "logins": 2,
            "latency_p50_ms": 1.5, "latency_p99_ms": 9.25,
            "error_kinds": {"TimeoutError": 1}})
        self.assertIn("actions sent  10", text)
        self.assertIn("errors        1  (TimeoutError 1)", text)
        self.assertIn("latency p99   9.25 ms", text)
