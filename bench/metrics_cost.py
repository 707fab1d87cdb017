"""CPU cost of the metrics on the server's own code paths, without sockets.

Not a test. Run from the checkout::

    python bench/metrics_cost.py            # both workloads, 7 alternating rounds
    python bench/metrics_cost.py --rounds 11

The end-to-end benchmarks (``bench/vr.py --metrics-cost``, ``bench/eot.py
--metrics-cost``) are the real measure, but on a shared, busy machine their
run-to-run spread is far larger than a few per cent. This one measures the
same server code in one process, on fake transports, as CPU time
(``time.process_time``): what the server does for each message, minus the
socket reads and writes and, for VR, Autobahn's frame parsing. Leaving that
work out makes the per-message total smaller, so the share of the metrics
comes out larger than it is over real sockets: an upper bound.

Each round runs a workload in a fresh process with metrics on and in one with
``GTSERVER_METRICS=off`` (every instrument a no-op), the order swapped every
round; the result is the median of the per-round ratios.

- vr: one client says a chat line in a room of 100 members, the line is
  broadcast to all of them (one encoded frame written to 100 transports);
  the scenario (a) path per message, 100 deliveries.
- eot: one EOT connection per request, ``move`` then ``state`` on a
  one-player Echo session, as in eot (a): request parsed, move applied and
  logged, reply encoded and written, connection closed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


class NullTransport:
    """Takes writes and closes without doing anything (counts the bytes)."""

    disconnecting = False

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def writeSequence(self, data: list[bytes]) -> None:
        self.written += sum(map(len, data))

    def loseConnection(self) -> None:
        pass

    def abortConnection(self) -> None:
        pass

    def loseWriteConnection(self) -> None:
        pass

    def getPeer(self) -> object:
        from twisted.internet.address import IPv4Address
        return IPv4Address("TCP", "127.0.0.1", 40000)

    def getHost(self) -> object:
        from twisted.internet.address import IPv4Address
        return IPv4Address("TCP", "127.0.0.1", 5556)

    def registerProducer(self, producer: object, streaming: bool) -> None:
        pass


def core_for_bench() -> object:
    from twisted.internet.task import Clock

    from gtserver.core import Core
    from gtserver.store import open_store
    store = open_store("sqlite:" + os.path.join(tempfile.mkdtemp(), "bench.sqlite"))
    return Core(store, Clock(), reactor=Clock())


def listener_factory(core: object, name: str, *arguments: str) -> object:
    """The factory of listener ``name``, built as the daemon builds it."""
    from gtserver.registry import wire_protocols
    from gtserver.tap import Options

    options = Options()
    options.parseOptions(list(arguments))
    plugin = wire_protocols()[name]
    return plugin.build_factory(core, plugin.settings(options))


def vr_workload(messages: int, members: int = 100) -> float:
    from autobahn.websocket.protocol import WebSocketProtocol

    from gtserver.vr.adapter import VRServerProtocol
    from gtserver.vr.rooms import LOBBY

    core = core_for_bench()
    factory = listener_factory(core, "vr", "--fps", "0.001", "--vr-any-password",
                               "--vr-max-rate", "1e9")
    rooms = factory.rooms
    rooms.call_soon = lambda function: None     # flushed by hand below, once per message
    connections = []
    for number in range(members):
        connection = factory.buildProtocol(None)
        connection.transport = NullTransport()
        connection.connectionMade = lambda: None
        connection.state = WebSocketProtocol.STATE_OPEN
        connection._perMessageCompress = None
        connection.user, connection.address = f"user{number}", "127.0.0.1"
        connection._tokens = factory.limits.burst
        rooms.join(connection, LOBBY)
        connections.append(connection)
    rooms.flush()
    sender: VRServerProtocol = connections[0]
    payloads = [json.dumps({"room": LOBBY, "type": "msg", "data": f"line {n}"}).encode()
                for n in range(100)]
    started = time.process_time()
    for number in range(messages):
        sender._tokens = factory.limits.burst
        sender.onMessage(payloads[number % 100], False)
        rooms.flush()
    elapsed = time.process_time() - started
    assert connections[-1].transport.written > messages * 10
    return elapsed / (messages * members)


def eot_workload(requests: int) -> float:
    core = core_for_bench()
    factory = listener_factory(core, "eot")

    def exchange(request: dict) -> bytes:
        connection = factory.buildProtocol(None)
        transport = NullTransport()
        replies: list[bytes] = []
        transport.write = replies.append
        connection.makeConnection(transport)
        connection.dataReceived(json.dumps(request).encode() + b"EOT\0")
        connection.connectionLost(None)
        return b"".join(replies)

    joined = json.loads(exchange({"type": "join", "game": "Echo", "session": "bench",
                                  "players": 1, "name": ""}))["data"]
    player = {"game": "Echo", "session": "bench", "player_id": joined["player_id"],
              "key": joined["key"]}
    exchange({"type": "state", **player})
    started = time.process_time()
    for number in range(requests // 2):
        exchange({"type": "move", "move": {"msg": f"m{number}"}, **player})
        reply = exchange({"type": "state", **player})
    elapsed = time.process_time() - started
    assert b'"ok"' in reply, reply
    return elapsed / (requests // 2 * 2)


def child(workload: str) -> None:
    sys.path.insert(0, ROOT)
    if workload == "vr":
        vr_workload(500)        # warm up
        print(vr_workload(20000))
    else:
        eot_workload(2000)
        print(eot_workload(60000))


def measure(workload: str, metrics: bool) -> float:
    environment = dict(os.environ)
    if not metrics:
        environment["GTSERVER_METRICS"] = "off"
    output = subprocess.run([sys.executable, __file__, "--child", workload], env=environment,
                            check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return float(output.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", choices=("vr", "eot"), help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--workload", choices=("vr", "eot"), action="append")
    options = parser.parse_args()
    if options.child:
        child(options.child)
        return
    unit = {"vr": "us per delivery", "eot": "us per request"}
    for workload in options.workload or ["vr", "eot"]:
        ratios, on_times, off_times = [], [], []
        for number in range(options.rounds):
            order = (False, True) if number % 2 == 0 else (True, False)
            times = {metrics: measure(workload, metrics) for metrics in order}
            on_times.append(times[True])
            off_times.append(times[False])
            ratios.append(times[True] / times[False])
            print(f"{workload} round {number + 1}: on {times[True] * 1e6:.3f}, off "
                  f"{times[False] * 1e6:.3f} {unit[workload]} ({100 * (ratios[-1] - 1):+.1f} %)",
                  flush=True)
        ratios.sort()
        print(f"{workload}: median on {sorted(on_times)[len(on_times) // 2] * 1e6:.3f}, off "
              f"{sorted(off_times)[len(off_times) // 2] * 1e6:.3f} {unit[workload]}; median "
              f"cost of the metrics {100 * (ratios[len(ratios) // 2] - 1):+.1f} % "
              f"(rounds from {100 * (ratios[0] - 1):+.1f} to {100 * (ratios[-1] - 1):+.1f} %)",
              flush=True)


if __name__ == "__main__":
    main()
