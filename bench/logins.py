"""Benchmark of password logins: memory and rate of concurrent logins (not a test).

Runs the daemon in a child process with only the ``uttt`` listener and sends
bursts of BURST logins at once from Autobahn WebSocket clients: first BURST
new names (registrations: one hash each), then the same names again (logins:
one verification each). Reported per hashing set-up and burst size: the
server's RSS when idle, after each burst (once its replies are all in and
again a second later), logins per second, and the round trip of a
bystander: a VR connection on the same daemon that pings every 10 ms during
the bursts (p50 / p99 / max).

Set-ups compared in the same run:

* ``reactor-10-keep``: the hashes in the reactor's thread pool (up to 10
  threads), glibc's default allocation: how gtserver hashed before;
* ``reactor-10``: the same with hash-sized blocks given back when freed;
* ``pool-N``: gtserver's own hash pool of N threads (``--hash-threads N``),
  blocks given back (the default set-up is ``pool-1``);
* ``pool-N-keep``: the same pool with glibc's default allocation.

    python bench/logins.py                     # bursts of 10 and 50
    python bench/logins.py --bursts 10 50 200 --setups pool-1 pool-2
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)


def serve(port: int, vr_port: int, db: str, hash_cost: int, setup: str) -> None:
    """The daemon (child process), its password hasher set up as ``setup``."""
    from twisted.internet import reactor
    from twisted.internet.threads import deferToThread

    from gtserver.core.passwords import PasswordHasher
    from gtserver.tap import Options, build_service

    arguments = ["--db", db, "--hash-cost", str(hash_cost),
                 "--registrations-per-address", "100000"]
    for name in Options.protocols:
        arguments += ["--port", f"{name}=off"]
    arguments += ["--port", f"uttt=tcp:{port}:interface=127.0.0.1",
                  "--port", f"vr=tcp:{vr_port}:interface=127.0.0.1"]
    options = Options()
    options.parseOptions(arguments)
    service = build_service(options, reactor, freeze_heap=True)
    where, threads, *keep = setup.split("-")
    if where == "reactor":
        hasher = PasswordHasher(log2_n=hash_cost, run_in_thread=deferToThread,
                                return_memory=not keep)
    else:
        hasher = PasswordHasher(log2_n=hash_cost, threads=int(threads),
                                return_memory=not keep)
    service.core.accounts.hasher = hasher
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    service.started.addCallback(lambda _: print("ready", flush=True))
    reactor.run()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def burst(port: int, names: list[str]) -> float:
    """Log in every name at once (each on its own connection); seconds until all replied."""
    from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred, gatherResults
    from twisted.internet.endpoints import TCP4ClientEndpoint

    class Client(WebSocketClientProtocol):
        def onOpen(self) -> None:
            self.factory.opened.callback(self)

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            message = json.loads(payload)
            if message["type"] == "login_response" and not self.answered.called:
                self.answered.callback(message["data"])

    clients = []
    for _ in names:
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/")
        factory.protocol = Client
        factory.opened = Deferred()
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
        client = await factory.opened
        client.answered = Deferred()
        clients.append(client)
    start = time.perf_counter()
    for client, name in zip(clients, names, strict=True):
        client.sendMessage(json.dumps({"type": "login", "data": {"name": name, "pw": "pw"}})
                           .encode())
    replies = await gatherResults([client.answered for client in clients])
    elapsed = time.perf_counter() - start
    failed = [reply for reply in replies if not reply["success"]]
    if failed:
        raise RuntimeError(f"{len(failed)} logins failed: {failed[0]}")
    for client in clients:
        client.transport.loseConnection()
    return elapsed


class Bystander:
    """A VR connection that pings every ``interval`` seconds and keeps the round trips."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.round_trips: list[float] = []
        self.protocol = None

    async def connect(self, port: int) -> None:
        from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
        from twisted.internet import reactor
        from twisted.internet.defer import Deferred
        from twisted.internet.endpoints import TCP4ClientEndpoint
        from twisted.internet.task import LoopingCall

        bystander = self

        class Pinger(WebSocketClientProtocol):
            sent: float | None = None

            def onOpen(self) -> None:
                self.factory.opened.callback(self)

            def ping(self) -> None:
                if self.sent is None:
                    self.sent = time.perf_counter()
                    self.sendMessage(b'{"system":"ping"}')

            def onMessage(self, payload: bytes, isBinary: bool) -> None:
                if self.sent is not None and bystander.measuring:
                    bystander.round_trips.append(time.perf_counter() - self.sent)
                self.sent = None

        factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/")
        factory.protocol = Pinger
        factory.opened = Deferred()
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
        self.protocol = await factory.opened
        self.measuring = False
        self.loop = LoopingCall(self.protocol.ping)
        self.loop.start(self.interval)

    def figures(self) -> str:
        trips = sorted(self.round_trips)
        if not trips:
            return "no pings"
        def at(share):
            return trips[min(len(trips) - 1, int(share * len(trips)))] * 1000
        return f"{at(0.5):.1f} / {at(0.99):.1f} / {trips[-1] * 1000:.1f} ms"

    def stop(self) -> None:
        self.loop.stop()
        self.protocol.transport.loseConnection()


async def sleep(seconds: float) -> None:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater
    await deferLater(reactor, seconds, lambda: None)


async def measure(setup: str, size: int, hash_cost: int) -> dict:
    port, vr_port = free_port(), free_port()
    directory = tempfile.mkdtemp(prefix="gtserver-bench-")
    db = "sqlite:" + os.path.join(directory, "bench.sqlite")
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), str(vr_port), db, str(hash_cost),
         setup],
        stdout=subprocess.PIPE, text=True)
    try:
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("server did not start")
        await sleep(1.0)
        row = {"setup": setup, "burst": size, "idle": rss_kib(child.pid)}
        names = [f"user{number:05d}" for number in range(size)]
        bystander = Bystander()
        await bystander.connect(vr_port)
        for phase in ("register", "login"):
            bystander.measuring = True
            elapsed = await burst(port, names)
            bystander.measuring = False
            row[f"{phase}_rss"] = rss_kib(child.pid)
            await sleep(1.0)
            row[f"{phase}_rss_1s"] = rss_kib(child.pid)
            row[f"{phase}_rate"] = size / elapsed
        row["bystander"] = bystander.figures()
        bystander.stop()
        return row
    finally:
        child.terminate()
        child.wait()


async def run(arguments: argparse.Namespace) -> None:
    rows = []
    for size in arguments.bursts:
        for setup in arguments.setups:
            rows.append(await measure(setup, size, arguments.hash_cost))
            print_row(rows[-1])


def print_row(row: dict) -> None:
    mib = 1024
    print(f"{row['setup']:>13} burst {row['burst']:>4}: idle {row['idle'] / mib:6.1f} MiB | "
          f"registrations {row['register_rate']:5.1f}/s, RSS {row['register_rss'] / mib:6.1f}"
          f" ({row['register_rss_1s'] / mib:6.1f} 1 s later) | "
          f"logins {row['login_rate']:5.1f}/s, RSS {row['login_rss'] / mib:6.1f}"
          f" ({row['login_rss_1s'] / mib:6.1f} 1 s later) MiB | bystander ping "
          f"{row['bystander']}", flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        port, vr_port, db, hash_cost, setup = sys.argv[2:7]
        serve(int(port), int(vr_port), db, int(hash_cost), setup)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bursts", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--setups", nargs="+",
                        default=["reactor-10-keep", "reactor-10", "pool-1", "pool-2",
                                 "pool-2-keep"])
    parser.add_argument("--hash-cost", type=int, default=14)
    arguments = parser.parse_args()

    from twisted.internet import task
    from twisted.internet.defer import ensureDeferred
    task.react(lambda _reactor: ensureDeferred(run(arguments)))


if __name__ == "__main__":
    main()
