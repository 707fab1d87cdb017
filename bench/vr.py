"""Benchmark of the VR rooms listener against a bare Autobahn broadcast server.

Not a test. Run from the checkout::

    python bench/vr.py                # every scenario
    python bench/vr.py --scenario a   # chat fan-out only (a, b or c)
    python bench/vr.py --metrics-cost 3   # (a) with metrics on and off, alternating

Scenarios (see bench/README.md for the targets and results):

a. 100 clients in one room, 10 sending chat at rising rates, gtserver and the bare
   server in turn: delivered messages/s with p99 latency under 100 ms, loss and
   reordering, server CPU per delivery.
b. 100 clients sending poses at 30 Hz to gtserver --fps 30: tick rate per client,
   tick-interval p99, server CPU.
c. 2,000 connections logging in at once (demo mode), then idling in the lobby at
   fps 1 with changed-only ticks: time until all are in, RSS per connection, idle CPU.

The servers and the load clients run as separate processes; the load is spread
over several client processes so that the client side is not the bottleneck.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- servers


def serve(options: argparse.Namespace) -> None:
    """Run one server in this process; print its port, then serve until killed."""
    sys.path.insert(0, ROOT)
    from twisted.internet import reactor

    if options.kind == "bare":
        port = reactor.listenTCP(0, bare_factory(), interface="127.0.0.1", backlog=4096)
        print(f"PORT {port.getHost().port}", flush=True)
        reactor.run()
        return

    from twisted.internet.defer import ensureDeferred

    from gtserver.tap import Options, build_service
    arguments = ["--db", "sqlite:" + os.path.join(tempfile.mkdtemp(), "bench.sqlite"),
                 "--hash-cost", "4", "--vr-any-password", "--vr-max-rate", "100000",
                 "--fps", str(options.fps)]
    for name in Options.protocols:
        arguments += ["--port", f"{name}=off"]
    arguments += ["--port", "vr=tcp:0:interface=127.0.0.1:backlog=4096"]
    if options.changed:
        arguments.append("--vr-changed-poses-only")
    parsed = Options()
    parsed.parseOptions(arguments)
    service = build_service(parsed, reactor, freeze_heap=True)  # as the daemon does

    async def start():
        service.startService()
        await service.started
        port = [item for item in service.listeners if item.protocol_name == "vr"][0]
        print(f"PORT {port.port.getHost().port}", flush=True)

    reactor.callWhenRunning(lambda: ensureDeferred(start()))
    reactor.run()


def bare_factory():
    """Receives a frame, sends it to every connection: the baseline."""
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

    class Broadcast(WebSocketServerProtocol):
        def onOpen(self):
            self.factory.clients.append(self)

        def onClose(self, wasClean, code, reason):
            if self in self.factory.clients:
                self.factory.clients.remove(self)

        def onMessage(self, payload, isBinary):
            prepared = self.factory.prepareMessage(payload, isBinary)
            for client in self.factory.clients:
                client.sendPreparedMessage(prepared)

    factory = WebSocketServerFactory()
    factory.protocol = Broadcast
    factory.clients = []
    return factory


class Server:
    def __init__(self, kind: str, fps: float = 1.0, changed: bool = False,
                 metrics: bool = True) -> None:
        command = [sys.executable, __file__, "serve", "--kind", kind, "--fps", str(fps)]
        if changed:
            command.append("--changed")
        environment = dict(os.environ)
        if not metrics:     # every instrument a no-op: the baseline of --metrics-cost
            environment["GTSERVER_METRICS"] = "off"
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                                        env=environment)
        line = self.process.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"server did not start: {line!r}")
        self.port = int(line.split()[1])

    def cpu(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def rss(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


# ---------------------------------------------------------------- load clients


def load(options: argparse.Namespace) -> None:
    """One load process: ``connections`` clients; prints a JSON report at the end."""
    from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
    from twisted.internet import reactor, task
    from twisted.internet.defer import Deferred, DeferredList, ensureDeferred

    gt = options.mode == "gt"
    report = {"latency_100us": Counter(), "received": 0, "reordered": 0, "sent": 0,
              "logins_done": None, "tick_intervals_ms": Counter(), "tick_rates": []}
    last_seq: dict[str, int] = {}
    clients = []

    class Client(WebSocketClientProtocol):
        def onOpen(self):
            self.ticks = []
            self.name = f"u{self.factory.index}"
            if gt:
                self.sendMessage(json.dumps({"system": "login", "options": {
                    "user": self.name, "pass": "x"}}).encode())
            else:
                self.factory.ready.callback(self)

        def onClose(self, wasClean, code, reason):
            if not self.factory.ready.called:
                self.factory.ready.errback(ConnectionError(f"closed before login: {reason}"))

        def onMessage(self, payload, isBinary):
            if not self.factory.ready.called:
                if b'"code":202' in payload:
                    return
                if b'"info":"user"' in payload:  # the lobby member list
                    self.factory.ready.callback(self)
                return
            if options.scenario == "pose":
                if b'"transform"' in payload:
                    self.ticks.append(time.time())
                return
            if options.scenario != "chat":
                return
            now = time.time()
            frame = json.loads(payload)
            entries = frame["payload"] if gt else [frame]
            for entry in entries:
                if entry.get("type", "msg") != "msg":
                    continue
                sender, seq, stamp = entry["data"].split(":")
                key = f"{self.name}/{sender}"
                seq = int(seq)
                if seq <= last_seq.get(key, -1):
                    report["reordered"] += 1
                last_seq[key] = seq
                report["received"] += 1
                report["latency_100us"][int((now - float(stamp)) * 10000)] += 1

    class Factory(WebSocketClientFactory):
        def clientConnectionFailed(self, connector, reason):
            if not self.ready.called:
                self.ready.errback(reason.value)

    def connect(index):
        factory = Factory(f"ws://127.0.0.1:{options.port}/")
        factory.setProtocolOptions(openHandshakeTimeout=60)
        factory.protocol = Client
        factory.index = index
        factory.ready = Deferred()
        reactor.connectTCP("127.0.0.1", options.port, factory, timeout=60)
        return factory.ready

    async def main(_reactor):
        first = options.first
        if options.scenario == "idle":
            # Logging in is what scenario c measures: every process starts at
            # the agreed moment, so "all logged in" counts from there.
            await task.deferLater(reactor, max(0.0, options.start - time.time()), lambda: None)
        ready = [connect(first + n) for n in range(options.connections)]
        outcomes = await DeferredList(ready, consumeErrors=True)
        clients.extend(client for ok, client in outcomes if ok)
        report["failed"] = len(ready) - len(clients)
        report["failures"] = dict(Counter(str(f.value)[:80] for ok, f in outcomes if not ok))
        report["logins_done"] = time.time()
        await task.deferLater(reactor, max(0.0, options.start - time.time()), lambda: None)
        if options.scenario == "chat":
            await send_chat()
        elif options.scenario == "pose":
            await send_poses()
        else:
            await task.deferLater(reactor, options.duration, lambda: None)
        await task.deferLater(reactor, 1.5, lambda: None)  # let the last frames arrive
        if options.scenario == "pose":
            for client in clients:
                ticks = client.ticks
                if len(ticks) > 2:
                    report["tick_rates"].append((len(ticks) - 1) / (ticks[-1] - ticks[0]))
                    for a, b in zip(ticks, ticks[1:], strict=False):
                        report["tick_intervals_ms"][int((b - a) * 1000)] += 1
        report["latency_100us"] = dict(report["latency_100us"])
        report["tick_intervals_ms"] = dict(report["tick_intervals_ms"])
        print(json.dumps(report), flush=True)
        for client in clients:
            client.transport.abortConnection()

    async def send_chat():
        senders = [c for c in clients if c.factory.index < options.senders]
        seqs = {c.name: 0 for c in senders}
        began = time.time()
        step = 0.005

        def burst():
            due = int((time.time() - began) * options.rate)
            for client in senders:
                while seqs[client.name] < due:
                    seq = seqs[client.name]
                    data = f"{client.name}:{seq}:{time.time():.6f}"
                    message = {"room": "lobby", "type": "msg", "data": data} if gt else \
                        {"type": "msg", "data": data}
                    client.sendMessage(json.dumps(message).encode())
                    seqs[client.name] = seq + 1
                    report["sent"] += 1

        loop = task.LoopingCall(burst)
        loop.start(step)
        await task.deferLater(reactor, options.duration, lambda: None)
        loop.stop()

    async def send_poses():
        interval = 1.0 / options.rate

        def send_all():
            for client in clients:
                x = time.time() % 10
                client.sendMessage(json.dumps({"room": "lobby", "type": "transform", "data": {
                    "pos": {"x": x, "y": 1.5, "z": 0.0},
                    "rot": {"x": 0.0, "y": x * 36, "z": 0.0}}}).encode())
                report["sent"] += 1

        loop = task.LoopingCall(send_all)
        loop.start(interval)
        await task.deferLater(reactor, options.duration, lambda: None)
        loop.stop()

    task.react(lambda r: ensureDeferred(main(r)))


def run_load(port: int, mode: str, scenario: str, total: int, processes: int,
             start_in: float, duration: float, rate: float = 0.0, senders: int = 0):
    per = math.ceil(total / processes)
    start = time.time() + start_in
    children = []
    for p in range(processes):
        first = p * per
        count = min(per, total - first)
        if count <= 0:
            break
        children.append(subprocess.Popen(
            [sys.executable, __file__, "load", "--port", str(port), "--mode", mode,
             "--scenario", scenario, "--first", str(first), "--connections", str(count),
             "--senders", str(senders), "--rate", str(rate), "--duration", str(duration),
             "--start", repr(start)], stdout=subprocess.PIPE, text=True, cwd=ROOT))
    return start, children


def collect(children) -> list[dict]:
    reports = []
    for child in children:
        out, _ = child.communicate(timeout=300)
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def percentile(histogram: Counter, fraction: float) -> float:
    total = sum(histogram.values())
    if not total:
        return float("nan")
    goal, seen = fraction * total, 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= goal:
            return value
    return max(histogram)


# ---------------------------------------------------------------- scenarios


def chat_round(kind: str, rate: float, duration: float, clients: int = 100, senders: int = 10,
               processes: int = 3, metrics: bool = True) -> dict:
    server = Server(kind, fps=0.01, metrics=metrics)
    try:
        start, children = run_load(server.port, "gt" if kind == "gtserver" else "bare", "chat",
                                   clients, processes, start_in=4.0, duration=duration,
                                   rate=rate, senders=senders)
        time.sleep(max(0.0, start - time.time()))
        cpu0 = server.cpu()
        time.sleep(duration + 1.0)
        cpu = server.cpu() - cpu0
        reports = collect(children)
    finally:
        server.stop()
    latency = Counter()
    for report in reports:
        latency.update({int(k): v for k, v in report["latency_100us"].items()})
    sent = sum(r["sent"] for r in reports)
    received = sum(r["received"] for r in reports)
    return {"kind": kind, "rate_per_sender": rate, "deliveries_per_s": received / duration,
            "expected": sent * clients, "received": received,
            "lost": sent * clients - received, "reordered": sum(r["reordered"] for r in reports),
            "p99_ms": percentile(latency, 0.99) / 10, "p50_ms": percentile(latency, 0.5) / 10,
            "cpu_us_per_delivery": cpu / max(received, 1) * 1e6}


def scenario_a(duration: float) -> dict:
    results = {}
    for kind in ("bare", "gtserver"):
        best = None
        for rate in (50, 100, 200, 300, 400, 600):
            result = chat_round(kind, rate, duration)
            print(json.dumps(result), flush=True)
            if result["p99_ms"] >= 100 or result["lost"] or result["reordered"]:
                break
            best = result
        results[kind] = best
    bare, gt = results["bare"], results["gtserver"]
    if bare and gt:
        print(f"(a) best with p99 < 100 ms: gtserver {gt['deliveries_per_s']:.0f}/s, "
              f"bare {bare['deliveries_per_s']:.0f}/s, ratio "
              f"{gt['deliveries_per_s'] / bare['deliveries_per_s']:.2f}; server CPU per "
              f"delivery gtserver {gt['cpu_us_per_delivery']:.2f} us, bare "
              f"{bare['cpu_us_per_delivery']:.2f} us")
    return results


def metrics_cost(duration: float, rates: list[float], rounds: int) -> None:
    """Scenario a's chat fan-out on gtserver with metrics on and with every
    instrument a no-op (``GTSERVER_METRICS=off``), in alternating runs (the
    order swapped every round) at each of ``rates`` (per sender)."""
    for rate in rates:
        rows: dict[bool, list[dict]] = {True: [], False: []}
        for number in range(rounds):
            for metrics in ((False, True) if number % 2 == 0 else (True, False)):
                result = chat_round("gtserver", rate, duration, metrics=metrics)
                result["metrics"] = "on" if metrics else "off"
                rows[metrics].append(result)
                print(json.dumps(result), flush=True)

        def mean(metrics: bool, key: str, rows: dict = rows) -> float:
            return sum(row[key] for row in rows[metrics]) / rounds

        clean = all(not row["lost"] and not row["reordered"] for group in rows.values()
                    for row in group)
        on, off = mean(True, "deliveries_per_s"), mean(False, "deliveries_per_s")
        cpu_on, cpu_off = mean(True, "cpu_us_per_delivery"), mean(False, "cpu_us_per_delivery")
        print(f"(a) metrics cost at {rate:g} msg/s per sender, mean of {rounds}: {on:.0f} "
              f"deliveries/s with metrics, {off:.0f} without ({100 * (1 - on / off):+.1f} %); "
              f"p99 {mean(True, 'p99_ms'):.1f} vs {mean(False, 'p99_ms'):.1f} ms; server CPU "
              f"per delivery {cpu_on:.2f} vs {cpu_off:.2f} us "
              f"({100 * (cpu_on / cpu_off - 1):+.1f} %); "
              f"{'nothing lost or reordered' if clean else 'LOSS OR REORDERING'}", flush=True)


def scenario_b(duration: float) -> dict:
    server = Server("gtserver", fps=30.0)
    try:
        start, children = run_load(server.port, "gt", "pose", 100, 3, start_in=4.0,
                                   duration=duration, rate=30.0)
        time.sleep(max(0.0, start - time.time()) + 1.0)
        cpu0, t0 = server.cpu(), time.time()
        time.sleep(duration - 1.5)
        cpu_share = (server.cpu() - cpu0) / (time.time() - t0)
        reports = collect(children)
    finally:
        server.stop()
    rates = sorted(rate for r in reports for rate in r["tick_rates"])
    intervals = Counter()
    for report in reports:
        intervals.update({int(k): v for k, v in report["tick_intervals_ms"].items()})
    result = {"clients": len(rates), "tick_rate_min": rates[0], "tick_rate_median":
              rates[len(rates) // 2], "tick_rate_max": rates[-1],
              "tick_interval_p99_ms": percentile(intervals, 0.99),
              "tick_interval_p50_ms": percentile(intervals, 0.5),
              "server_cpu_share_of_core": cpu_share}
    print(json.dumps(result), flush=True)
    return result


def scenario_c(idle: float) -> dict:
    server = Server("gtserver", fps=1.0, changed=True)
    try:
        rss0 = server.rss()
        start, children = run_load(server.port, "gt", "idle", 2000, 4, start_in=3.0,
                                   duration=idle + 20.0)
        time.sleep(max(0.0, start - time.time()) + 20.0)
        rss1 = server.rss()
        cpu0, t0 = server.cpu(), time.time()
        time.sleep(idle)
        idle_cpu = (server.cpu() - cpu0) / (time.time() - t0)
        reports = collect(children)
    finally:
        server.stop()
    done = max(r["logins_done"] for r in reports)
    result = {"connections": 2000, "failed": sum(r["failed"] for r in reports),
              "failures": [r["failures"] for r in reports if r["failed"]],
              "all_logged_in_s": done - start,
              "rss_per_connection_kb": (rss1 - rss0) / 2000 / 1024,
              "idle_cpu_share_of_core": idle_cpu}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run")
    run.add_argument("--scenario", choices="abc", action="append")
    run.add_argument("--duration", type=float, default=4.0)
    run.add_argument("--metrics-cost", type=int, metavar="ROUNDS",
                     help="scenario a on gtserver with metrics on against metrics off, "
                          "ROUNDS alternating runs per --rate")
    run.add_argument("--rate", type=float, action="append",
                     help="chat messages per sender per second for --metrics-cost "
                          "(default 300 and 400)")
    server = sub.add_parser("serve")
    server.add_argument("--kind", choices=("gtserver", "bare"), required=True)
    server.add_argument("--fps", type=float, default=1.0)
    server.add_argument("--changed", action="store_true")
    client = sub.add_parser("load")
    for name, kind in (("port", int), ("first", int), ("connections", int), ("senders", int),
                       ("rate", float), ("duration", float), ("start", float)):
        client.add_argument("--" + name, type=kind, required=True)
    client.add_argument("--mode", choices=("gt", "bare"), required=True)
    client.add_argument("--scenario", choices=("chat", "pose", "idle"), required=True)
    arguments = sys.argv[1:] if sys.argv[1:2] and sys.argv[1] in ("run", "serve", "load") \
        else ["run", *sys.argv[1:]]
    options = parser.parse_args(arguments)
    if options.command == "serve":
        serve(options)
    elif options.command == "load":
        load(options)
    elif options.metrics_cost:
        metrics_cost(options.duration, options.rate or [300.0, 400.0], options.metrics_cost)
    else:
        for scenario in options.scenario or "abc":
            {"a": scenario_a, "b": scenario_b, "c": scenario_c}[scenario](options.duration)


if __name__ == "__main__":
    main()
