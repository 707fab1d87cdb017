"""gtserver.blocking: the Twisted clients called from plain threads and scripts."""

from __future__ import annotations

import json
import os
import sys

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from gtserver.blocking import connect_uttt, connect_vr
from gtserver.uttt.client import MoveRefused
from gtserver.vr.client import VRError
from tests.support import start_server
from tests.wstimers import settle_websocket_timers

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = """
import json, sys
from gtserver.blocking import connect_vr
client = connect_vr(sys.argv[1])
lobby = client.login("script", "pw")
client.join("room")
client.msg("room", "from a script")
event = client.next_event("msg", room="room")
print(json.dumps({"lobby": [m.user for m in lobby], "said": event.data,
                  "rooms": client.rooms(), "close": client.close()}))
"""


class BlockingTests(unittest.TestCase):
    async def test_vr_from_a_thread(self):
        server = await start_server(self, "--fps", "0.001", listeners={"vr": None})
        url = f"ws://127.0.0.1:{server.port('vr')}/"

        def script():
            client = connect_vr(url)
            lobby = client.login("Ann", "pw")
            try:
                client.join("lobby")
            except VRError as error:
                conflict = error.code
            client.msg("lobby", "hi")
            event = client.next_event("msg")
            self.assertRaises(AttributeError, lambda: client.frames)
            return [m.user for m in lobby], conflict, event.data, client.user, client.close()

        self.assertEqual(await deferToThread(script), (["Ann"], 409, "hi", "Ann", 1000))

    async def test_uttt_from_a_thread(self):
        self.addCleanup(settle_websocket_timers)
        server = await start_server(self, listeners={"uttt": None})
        url = f"ws://127.0.0.1:{server.port('uttt')}/"

        def script():
            alice, bob = connect_uttt(url), connect_uttt(url)
            alice.login("alice", "pw")
            bob.login("bob", "pw")
            alice.match_request("bob")
            [match_id] = alice.matches
            update = alice.move(match_id, 1, 1, 1, 1)
            with self.assertRaises(MoveRefused):
                alice.move(match_id, 1, 1, 0, 0)
            started = bob.next_match(match_id)
            pushed = bob.next_match(match_id)
            states = bob.match_states()
            alice.close()
            bob.close()
            return (started["match_state"]["last_move"], update == pushed,
                    [m["id"] for m in states] == [match_id])

        self.assertEqual(await deferToThread(script), (None, True, True))

    async def test_a_script_starts_its_own_reactor(self):
        server = await start_server(self, "--fps", "0.001", listeners={"vr": None})
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-c", SCRIPT, f"ws://127.0.0.1:{server.port('vr')}/"],
            env={**os.environ, "PYTHONPATH": CHECKOUT}, path=CHECKOUT, reactor=reactor)
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out), {"lobby": ["script"], "said": "from a script",
                                           "rooms": {"lobby": "", "room": ""},
                                           "close": 1000})
