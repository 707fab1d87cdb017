"""Chat-pair latency on the VR rooms listener (Nagle's algorithm and delayed ACKs).

Not a test. Run from the checkout::

    python bench/vr_pair.py --rounds 300

The daemon runs in a child process (as in bench/vr.py). Two clients in this
process, both with TCP_NODELAY on their own sockets, talk in turn: alice says
a line, bob answers as soon as he sees it, and alice times the round from her
line to bob's answer. Every round makes the server write to alice twice in
quick succession (her own line, then bob's answer): with Nagle's algorithm
on the server's socket, the second write waits for alice's delayed ACK of the
first (about 40 ms on Linux).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


async def pair_rounds(port: int, rounds: int) -> list[float]:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    from tests.test_vr_client import connect

    alice, bob = await connect(port), await connect(port)
    for client in (alice, bob):
        client.transport.setTcpNoDelay(True)  # only the server's side is measured
    await alice.login("alice")
    await bob.login("bob")
    await alice.next()  # bob's join

    async def wait_for(client, text: str) -> None:
        while True:
            frame = await client.next()
            if any(e["type"] == "msg" and e["data"] == text for e in frame["payload"]):
                return

    times = []
    for n in range(rounds):
        start = time.perf_counter()
        alice.say("lobby", "msg", f"q{n}")
        await wait_for(bob, f"q{n}")
        bob.say("lobby", "msg", f"a{n}")
        await wait_for(alice, f"a{n}")
        times.append(time.perf_counter() - start)
        bob.pending()
        await deferLater(reactor, 0.005, lambda: None)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    options = parser.parse_args()
    sys.path.insert(0, ROOT)
    sys.path.insert(0, HERE)
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred
    from vr import Server

    server = Server("gtserver", fps=0.01)
    result: dict = {}

    def report(times):
        times = sorted(times[len(times) // 10:])  # the first tenth warms up
        result.update(rounds=len(times), p50_ms=round(times[len(times) // 2] * 1000, 2),
                      p99_ms=round(times[int(len(times) * 0.99)] * 1000, 2))

    d = ensureDeferred(pair_rounds(server.port, options.rounds))
    d.addCallback(report)
    d.addErrback(lambda failure: result.update(error=failure.getErrorMessage()))
    d.addBoth(lambda _: reactor.stop())
    try:
        reactor.run()
    finally:
        server.stop()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
