"""Benchmark of a deployment of several nodes: 1 node against 2 (not a test).

Starts a throwaway PostgreSQL cluster (tests/pgcluster.py), then for each
node count a fresh database and real ``twistd gtserver --node`` daemons on
it, each with its own vr and uttt ports; the load processes connect client
number i to node i mod N, so with 2 nodes half the members of a room, and
half the players of the cross-node matches, are on the other node. The
offered load is the same for 1 and 2 nodes.

    python bench/cluster.py                        # every scenario, 1 and 2 nodes
    python bench/cluster.py --scenario chat --nodes 2 --duration 5

Scenarios (bench/README.md has the targets and results):

bus    The bus alone (gtserver/store/notify.py): node a's bus in one process
       sends node b's, in another, small messages at rising rates: one-way
       latency p50/p99 (the cross-node hop), messages per notification and
       per statement (coalescing), CPU per message of each side and of
       PostgreSQL.
chat   VR chat fan-out: 100 members of the lobby, 10 of them sending chat at
       rising rates: deliveries/s, p50/p99 latency (sending to a member's
       socket), loss and reordering, server CPU per delivery, and the p99 of
       local deliveries (sender and receiver on one node) against cross-node
       ones. The best rate with p99 under 100 ms and nothing lost, per node
       count, gives the capacity ratio.
pose   VR ticks: 200 members sending poses at 30 Hz to nodes at --vr-fps 30:
       pose deliveries/s, tick rate per client, age of a pose when it reaches
       another member (p50/p99, local and cross-node), server CPU per delivery.
uttt   Ultimate tic-tac-toe: 200 games in parallel (named challenges), half of
       them between players on different nodes, paced to a total offered
       rate: moves/s, p50/p99 from sending a move to the opponent's socket
       receiving its match_update (local and cross-node), server CPU per move.

Server CPU is the sum over the nodes (from /proc), with the PostgreSQL
server's own CPU shown apart. The nodes, PostgreSQL and the load processes
share this machine's cores: compare the rows of one run with each other.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TWISTD = ("import sys; from twisted.scripts.twistd import run; "
          "sys.argv[0] = 'twistd'; run()")


# ---------------------------------------------------------------- deployment


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Node:
    """One ``twistd gtserver --node`` child process."""

    def __init__(self, name: str, url: str, directory: str, options: list[str]) -> None:
        from gtserver.tap import Options

        self.name = name
        self.ports = {"vr": free_port(), "uttt": free_port()}
        self.log = os.path.join(directory, f"{name}.log")
        arguments = ["--db", url, "--node", name, "--hash-cost", "4",
                     "--registrations-per-address", "1000000", "--vr-any-password",
                     "--vr-max-rate", "100000", *options]
        for listener in Options.protocols:
            arguments += ["--port", f"{listener}=off"]
        for listener, port in self.ports.items():
            arguments += ["--port", f"{listener}=tcp:{port}:interface=127.0.0.1:backlog=4096"]
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", TWISTD, "--nodaemon", "--pidfile=", "gtserver",
                 *arguments], cwd=directory, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": ROOT})

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            with open(self.log) as log:
                if "gtserver ready" in log.read():
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        with open(self.log) as log:
            raise SystemExit(f"node {self.name} did not start:\n{log.read()[-3000:]}")

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()


class Deployment:
    """``count`` nodes on a fresh database of ``cluster``."""

    def __init__(self, cluster, count: int, directory: str, options: list[str]) -> None:
        self.cluster = cluster
        url = cluster.create_database()
        self.nodes = [Node(f"n{i + 1}", url, directory, options) for i in range(count)]
        try:
            for node in self.nodes:
                node.wait_ready()
        except BaseException:
            self.stop()
            raise
        time.sleep(1.5)  # every node has seen the others (leases renewed every second)

    def ports(self, listener: str) -> list[int]:
        return [node.ports[listener] for node in self.nodes]

    def cpu(self) -> tuple[float, float]:
        """CPU seconds so far of the nodes together, and of PostgreSQL's processes."""
        return (sum(node.cpu() for node in self.nodes),
                sum(cpu_seconds(pid) for pid in self.cluster.server_pids()))

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


# ---------------------------------------------------------------- load processes


def percentile(histogram: Counter, fraction: float, unit: float) -> float:
    total = sum(histogram.values())
    if not total:
        return float("nan")
    goal, seen = fraction * total, 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= goal:
            return value * unit
    return max(histogram) * unit


def vr_load(options: argparse.Namespace) -> None:
    """Load process of the chat and pose scenarios: clients ``first`` ...
    ``first + connections - 1``, client i on ``ports[i % len(ports)]``."""
    from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
    from twisted.internet import reactor, task
    from twisted.internet.defer import Deferred, DeferredList, ensureDeferred

    ports = [int(port) for port in options.ports.split(",")]
    nodes = len(ports)
    report = {"latency": {"local": Counter(), "cross": Counter()}, "received": 0,
              "reordered": 0, "sent": 0, "tick_rates": [], "failed": 0}
    last_seq: dict[tuple[int, int], int] = {}
    clients = []

    class Client(WebSocketClientProtocol):
        def onOpen(self):
            self.index = self.factory.index
            self.node = self.index % nodes
            self.observer = self.index % 10 == 0
            self.ticks: list[float] = []
            self.sendMessage(json.dumps({"system": "login", "options": {
                "user": f"u{self.index}", "pass": "x"}}).encode())

        def onClose(self, wasClean, code, reason):
            if not self.factory.ready.called:
                self.factory.ready.errback(ConnectionError(f"closed before login: {reason}"))

        def onMessage(self, payload, isBinary):
            if not self.factory.ready.called:
                if b'"info":"user"' in payload:  # the lobby's member list
                    self.factory.ready.callback(self)
                return
            if options.scenario == "pose":
                self.pose_frame(payload)
            else:
                self.chat_frame(payload)

        def chat_frame(self, payload):
            now = time.time()
            for entry in json.loads(payload).get("payload", ()):
                if entry.get("type") != "msg":
                    continue
                sender, seq, stamp = (float(part) for part in entry["data"].split(":"))
                sender, seq = int(sender), int(seq)
                key = (self.index, sender)
                if seq <= last_seq.get(key, -1):
                    report["reordered"] += 1
                last_seq[key] = seq
                report["received"] += 1
                where = "local" if sender % nodes == self.node else "cross"
                report["latency"][where][int((now - stamp) * 10000)] += 1

        def pose_frame(self, payload):
            now = time.time()
            if b'"transform"' not in payload or not \
                    options.start + 0.5 <= now < options.start + options.duration:
                return
            report["received"] += payload.count(b'"transform"')
            if not self.observer:
                return
            self.ticks.append(now)
            for entry in json.loads(payload)["payload"]:
                sender = int(entry["user"][1:])
                if entry.get("type") != "transform" or sender == self.index:
                    continue
                where = "local" if sender % nodes == self.node else "cross"
                age = now - (options.base + entry["data"]["pos"]["z"])
                report["latency"][where][int(age * 10000)] += 1

    class Factory(WebSocketClientFactory):
        def clientConnectionFailed(self, connector, reason):
            if not self.ready.called:
                self.ready.errback(reason.value)

    def connect(index):
        port = ports[index % nodes]
        factory = Factory(f"ws://127.0.0.1:{port}/")
        # The clients would spend most of their time checking UTF-8 otherwise.
        factory.setProtocolOptions(openHandshakeTimeout=60, utf8validateIncoming=False)
        factory.protocol = Client
        factory.index = index
        factory.ready = Deferred()
        reactor.connectTCP("127.0.0.1", port, factory, timeout=60)
        return factory.ready

    async def main(_reactor):
        ready = [connect(options.first + n) for n in range(options.connections)]
        outcomes = await DeferredList(ready, consumeErrors=True)
        clients.extend(client for ok, client in outcomes if ok)
        report["failed"] = len(ready) - len(clients)
        await task.deferLater(reactor, max(0.0, options.start - time.time()), lambda: None)
        if options.scenario == "chat":
            await send_chat()
        else:
            await send_poses()
        await task.deferLater(reactor, 1.5, lambda: None)  # the last frames
        for client in clients:
            ticks = client.ticks
            if len(ticks) > 2:
                report["tick_rates"].append((len(ticks) - 1) / (ticks[-1] - ticks[0]))
        report["latency"] = {where: dict(histogram)
                             for where, histogram in report["latency"].items()}
        print(json.dumps(report), flush=True)
        for client in clients:
            client.transport.abortConnection()

    async def send_chat():
        senders = [client for client in clients if client.index < options.senders]
        seqs = {client.index: 0 for client in senders}
        began = time.time()

        def burst():
            due = int((time.time() - began) * options.rate)
            for client in senders:
                while seqs[client.index] < due:
                    data = f"{client.index}:{seqs[client.index]}:{time.time():.6f}"
                    client.sendMessage(json.dumps(
                        {"room": "lobby", "type": "msg", "data": data}).encode())
                    seqs[client.index] += 1
                    report["sent"] += 1

        loop = task.LoopingCall(burst)
        loop.start(0.005)
        await task.deferLater(reactor, options.duration, lambda: None)
        loop.stop()

    async def send_poses():
        def send_all():
            stamp = time.time() - options.base
            for client in clients:
                client.sendMessage(json.dumps({"room": "lobby", "type": "transform", "data": {
                    "pos": {"x": client.index, "y": 1.5, "z": stamp},
                    "rot": {"x": 0.0, "y": 0.0, "z": 0.0}}}).encode())
                report["sent"] += 1

        loop = task.LoopingCall(send_all)
        loop.start(1.0 / options.rate)
        await task.deferLater(reactor, options.duration, lambda: None)
        loop.stop()

    task.react(lambda r: ensureDeferred(main(r)))


def uttt_placement(game: int, nodes: int) -> tuple[int, int]:
    """The nodes of game ``game``'s two players: on one node for games
    0, 1, 4, 5, ..., on different nodes for games 2, 3, 6, 7, ... (with 2 nodes)."""
    first = game % nodes
    return first, (game + game // nodes) % nodes


def uttt_load(options: argparse.Namespace) -> None:
    """Load process of the uttt scenario: games ``part``, ``part + parts``, ...
    of ``games``, each move on a fixed schedule (``games / pace`` seconds apart)."""
    from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
    from twisted.internet import reactor, task
    from twisted.internet.defer import Deferred, ensureDeferred, gatherResults

    from bench.uttt import no_delay, scripts

    ports = [int(port) for port in options.ports.split(",")]
    nodes = len(ports)
    interval = options.games / options.pace
    scripted = scripts(40)
    report = {"latency": {"local": Counter(), "cross": Counter()}, "moves": 0, "updates": 0,
              "refused": 0}
    measuring = {"on": False}

    class Player(WebSocketClientProtocol):
        pair = None

        def onOpen(self):
            no_delay(self.transport)
            self.send("login", {"name": self.factory.user, "pw": "benchpw"})

        def onMessage(self, payload, isBinary):
            message = json.loads(payload)
            if message["type"] == "login_response" and not self.factory.ready.called:
                self.factory.ready.callback(self)
            elif message["type"] == "match_update" and self.pair is not None:
                report["updates"] += measuring["on"]
                self.pair.update(self, message["data"])
            elif message["type"] == "match_request_response" and \
                    not message["data"]["success"]:
                report["refused"] += 1

        def send(self, kind, data):
            self.sendMessage(json.dumps({"type": kind, "data": data}).encode())

    class Pair:
        def __init__(self, game, players, where):
            self.game, self.players, self.where = game, players, where
            for player in players:
                player.pair = self
            self.match_id, self.moves, self.index = None, [], 0
            self.due = 0.0

        def start(self):
            self.match_id, self.index = None, 0
            self.moves = scripted[self.game % len(scripted)]
            self.game += 7
            self.due = time.perf_counter()
            self.players[0].send("match_request", {"player": self.players[1].factory.user})

        def update(self, receiver, data):
            state = data["match_state"]
            if self.match_id is None:
                if receiver is self.players[0] and state["last_move"] is None:
                    self.match_id = data["id"]
                    self.move()
                return
            if data["id"] != self.match_id or self.index >= len(self.moves):
                return
            if receiver is self.players[self.index % 2]:
                return  # the mover's own echo
            if state["last_move"] != self.moves[self.index]:
                return
            if measuring["on"]:
                report["moves"] += 1
                histogram = report["latency"][self.where]
                histogram[int((time.perf_counter() - self.sent) * 10000)] += 1
            self.index += 1
            wait = max(0.0, self.due - time.perf_counter())
            reactor.callLater(wait, self.start if self.index == len(self.moves) else self.move)

        def move(self):
            if self.index >= len(self.moves):
                return
            self.sent = time.perf_counter()
            self.due += interval
            move = self.moves[self.index]
            self.players[self.index % 2].send(
                "move", {"id": self.match_id, **{k: str(v) for k, v in move.items()}})

    def connect(user, port):
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/")
        factory.protocol = Player
        factory.user = user
        factory.ready = Deferred()
        reactor.connectTCP("127.0.0.1", port, factory, timeout=60)
        return factory.ready

    async def main(_reactor):
        pairs = []
        for game in range(options.part, options.games, options.parts):
            homes = uttt_placement(game, nodes)
            players = await gatherResults(
                [connect(f"{options.prefix}{game}{seat}", ports[homes[seat]])
                 for seat in (0, 1)])
            pairs.append(Pair(game, players, "local" if homes[0] == homes[1] else "cross"))
        await task.deferLater(reactor, max(0.0, options.start - time.time()), lambda: None)
        for pair in pairs:  # the games' schedules spread over one interval
            reactor.callLater(interval * pair.game / options.games, pair.start)
        await task.deferLater(reactor, 2.0, lambda: None)  # warm up
        measuring["on"] = True
        await task.deferLater(reactor, options.duration, lambda: None)
        measuring["on"] = False
        for pair in pairs:
            pair.moves = []
            if pair.match_id is not None:
                pair.players[0].send("end_match", {"id": pair.match_id})
        await task.deferLater(reactor, 1.0, lambda: None)
        report["latency"] = {where: dict(histogram)
                             for where, histogram in report["latency"].items()}
        print(json.dumps(report), flush=True)
        for pair in pairs:
            for player in pair.players:
                player.transport.abortConnection()

    task.react(lambda r: ensureDeferred(main(r)))


def bus_load(options: argparse.Namespace) -> None:
    """One node's bus in this process, on database ``url``: the receiver
    (node ``b``) records each message's age; the sender (``a``) sends
    ``rate`` messages/s to ``b`` in bursts every 5 ms. Prints a JSON report."""
    from twisted.internet import reactor, task
    from twisted.internet.defer import ensureDeferred

    from gtserver.store import open_store

    report = {"latency": {"cross": Counter()}, "received": 0, "sent": 0}

    def received(sender, body):
        report["received"] += 1
        report["latency"]["cross"][int((time.time() - body[1]) * 10000)] += 1

    async def main(_reactor):
        store = open_store(options.url, reactor)
        await store.start()
        bus = store.bus(options.role)
        bus.subscribe("bench", received)
        bus.startService()
        await bus.whenStarted()
        print("ready", flush=True)
        await task.deferLater(reactor, max(0.0, options.start - time.time()), lambda: None)
        if options.role == "a":
            began = time.time()

            def burst():
                due = int((time.time() - began) * options.rate)
                while report["sent"] < due:
                    bus.send("b", "bench", [report["sent"], time.time(), "x" * options.size])
                    report["sent"] += 1

            loop = task.LoopingCall(burst)
            loop.start(0.005)
            await task.deferLater(reactor, options.duration, lambda: None)
            loop.stop()
        else:
            await task.deferLater(reactor, options.duration + 1.0, lambda: None)
        await bus.stopService()
        await store.close()
        report["stats"] = bus.stats
        report["latency"] = {"cross": dict(report["latency"]["cross"])}
        print(json.dumps(report), flush=True)

    task.react(lambda r: ensureDeferred(main(r)))


def scenario_bus(cluster, duration: float, rates: list[float], size: int = 40) -> list[dict]:
    """The bus alone between two processes: a cross-node hop's latency and
    cost as the message rate rises (coalescing at work)."""
    rows = []
    for rate in rates:
        url = cluster.create_database()
        start = time.time() + 3.0
        children = load_processes([
            ["bus-load", "--role", role, "--url", url, "--rate", str(rate),
             "--duration", str(duration), "--start", repr(start), "--size", str(size)]
            for role in ("b", "a")])
        for child in children:
            if child.stdout.readline().strip() != "ready":
                raise SystemExit("a bus process failed")
        time.sleep(max(0.0, start - time.time()))
        cpu0 = [cpu_seconds(child.pid) for child in children]
        db0 = sum(cpu_seconds(pid) for pid in cluster.server_pids())
        time.sleep(duration)
        cpu = [cpu_seconds(child.pid) - before for child, before in zip(children, cpu0,
                                                                         strict=True)]
        db = sum(cpu_seconds(pid) for pid in cluster.server_pids()) - db0
        receiver, sender = (json.loads(child.communicate(timeout=120)[0].strip()
                                       .splitlines()[-1]) for child in children)
        stats = sender["stats"]
        row = {"scenario": "bus", "rate": rate, "size": size, "sent": sender["sent"],
               "received": receiver["received"], "lost": sender["sent"] - receiver["received"],
               "messages_per_notification": stats["messages"] / max(stats["notifications"], 1),
               "messages_per_statement": stats["messages"] / max(stats["statements"], 1),
               "p50_ms": percentile(Counter({int(k): v for k, v in receiver["latency"][
                   "cross"].items()}), 0.5, 0.1),
               "p99_ms": percentile(Counter({int(k): v for k, v in receiver["latency"][
                   "cross"].items()}), 0.99, 0.1),
               "sender_cpu_us_per_message": cpu[1] / max(sender["sent"], 1) * 1e6,
               "receiver_cpu_us_per_message": cpu[0] / max(receiver["received"], 1) * 1e6,
               "db_cpu_us_per_message": db / max(sender["sent"], 1) * 1e6}
        show(row)
        rows.append(row)
    return rows


# ---------------------------------------------------------------- runs


def load_processes(arguments: list[list[str]]) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, __file__, *command], stdout=subprocess.PIPE,
                             text=True, cwd=ROOT) for command in arguments]


def measure(deployment: Deployment, children: list[subprocess.Popen], start: float,
            window: float, settle: float = 0.0) -> tuple[list[dict], float, float]:
    """Wait for ``start`` (+ ``settle``), read the CPU used over ``window``
    seconds, then collect the load processes' reports."""
    time.sleep(max(0.0, start + settle - time.time()))
    nodes0, db0 = deployment.cpu()
    time.sleep(window)
    nodes1, db1 = deployment.cpu()
    reports = []
    for child in children:
        out, _ = child.communicate(timeout=600)
        if child.returncode:
            raise SystemExit(f"a load process failed ({child.returncode})")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports, nodes1 - nodes0, db1 - db0


def show(row: dict) -> None:
    print(json.dumps({key: round(value, 3) if isinstance(value, float) else value
                      for key, value in row.items()}), flush=True)


def latencies(reports: list[dict]) -> dict[str, Counter]:
    merged = {"local": Counter(), "cross": Counter()}
    for report in reports:
        for where, histogram in report["latency"].items():
            merged[where].update({int(k): v for k, v in histogram.items()})
    return merged


def latency_figures(merged: dict[str, Counter]) -> dict:
    everything = merged["local"] + merged["cross"]
    figures = {"p50_ms": percentile(everything, 0.5, 0.1),
               "p99_ms": percentile(everything, 0.99, 0.1)}
    for where in ("local", "cross"):
        figures[f"{where}_p99_ms"] = percentile(merged[where], 0.99, 0.1)
        figures[f"{where}_deliveries"] = sum(merged[where].values())
    return figures


def chat_round(cluster, count: int, directory: str, rate: float, duration: float,
               members: int = 100, senders: int = 10, processes: int = 2) -> dict:
    deployment = Deployment(cluster, count, directory, ["--vr-fps", "0.01"])
    try:
        start = time.time() + 4.0
        per = -(-members // processes)
        children = load_processes([
            ["vr-load", "--scenario", "chat", "--ports", ",".join(map(str, deployment.ports(
                "vr"))), "--first", str(first), "--connections", str(min(per, members - first)),
             "--senders", str(senders), "--rate", str(rate), "--duration", str(duration),
             "--start", repr(start)] for first in range(0, members, per)])
        reports, cpu, db_cpu = measure(deployment, children, start, duration + 1.0)
    finally:
        deployment.stop()
    sent = sum(report["sent"] for report in reports)
    received = sum(report["received"] for report in reports)
    return {"scenario": "chat", "nodes": count, "rate_per_sender": rate,
            "deliveries_per_s": received / duration, "expected": sent * members,
            "lost": sent * members - received,
            "reordered": sum(report["reordered"] for report in reports),
            "failed_logins": sum(report["failed"] for report in reports),
            **latency_figures(latencies(reports)),
            "cpu_us_per_delivery": cpu / max(received, 1) * 1e6,
            "db_cpu_us_per_delivery": db_cpu / max(received, 1) * 1e6}


def scenario_chat(cluster, counts: list[int], directory: str, duration: float,
                  rates: list[float]) -> list[dict]:
    rows, best = [], {}
    for count in counts:
        for rate in rates:
            row = chat_round(cluster, count, directory, rate, duration)
            show(row)
            rows.append(row)
            if row["p99_ms"] >= 100 or row["lost"] or row["reordered"]:
                break
            best[count] = row
    for count, row in sorted(best.items()):
        print(f"chat, {count} node(s): best with p99 < 100 ms and nothing lost: "
              f"{row['deliveries_per_s']:.0f} deliveries/s at {row['rate_per_sender']:g} "
              f"msg/s per sender (p99 {row['p99_ms']:.1f} ms; local p99 "
              f"{row['local_p99_ms']:.1f} ms, cross-node {row['cross_p99_ms']:.1f} ms; "
              f"{row['cpu_us_per_delivery']:.2f} us server CPU per delivery)", flush=True)
    if 1 in best and 2 in best:
        print(f"chat: 2 nodes / 1 node: "
              f"{best[2]['deliveries_per_s'] / best[1]['deliveries_per_s']:.2f}", flush=True)
    return rows


def scenario_pose(cluster, counts: list[int], directory: str, duration: float,
                  members: int = 200, fps: float = 30.0, processes: int = 2) -> list[dict]:
    rows = []
    for count in counts:
        deployment = Deployment(cluster, count, directory, ["--vr-fps", str(fps)])
        try:
            start = time.time() + 5.0
            per = -(-members // processes)
            children = load_processes([
                ["vr-load", "--scenario", "pose", "--ports", ",".join(map(str, deployment.ports(
                    "vr"))), "--first", str(first), "--connections",
                 str(min(per, members - first)), "--rate", str(fps),
                 "--duration", str(duration), "--start", repr(start), "--base", repr(start)]
                for first in range(0, members, per)])
            reports, cpu, db_cpu = measure(deployment, children, start, duration - 1.0,
                                           settle=1.0)
        finally:
            deployment.stop()
        received = sum(report["received"] for report in reports)  # over duration - 0.5 s
        tick_rates = sorted(rate for report in reports for rate in report["tick_rates"])
        window_share = (duration - 1.0) / (duration - 0.5)
        row = {"scenario": "pose", "nodes": count, "members": members, "fps": fps,
               "deliveries_per_s": received / (duration - 0.5),
               "expected_per_s": members * members * fps,
               "failed_logins": sum(report["failed"] for report in reports),
               "tick_rate_min": tick_rates[0] if tick_rates else float("nan"),
               "tick_rate_median": tick_rates[len(tick_rates) // 2] if tick_rates
               else float("nan"),
               **latency_figures(latencies(reports)),
               "server_cpu_share": cpu / (duration - 1.0),
               "db_cpu_share": db_cpu / (duration - 1.0),
               "cpu_us_per_delivery": cpu / max(received * window_share, 1) * 1e6}
        show(row)
        rows.append(row)
    return rows


def scenario_uttt(cluster, counts: list[int], directory: str, duration: float,
                  paces: list[float], games: int = 200, processes: int = 2) -> list[dict]:
    rows = []
    for count in counts:
        for pace in paces:
            deployment = Deployment(cluster, count, directory, [])
            try:
                start = time.time() + 8.0
                prefix = f"b{int(pace)}n{count}g"
                children = load_processes([
                    ["uttt-load", "--ports", ",".join(map(str, deployment.ports("uttt"))),
                     "--games", str(games), "--part", str(part), "--parts", str(processes),
                     "--pace", str(pace), "--duration", str(duration), "--start", repr(start),
                     "--prefix", prefix] for part in range(processes)])
                reports, cpu, db_cpu = measure(deployment, children, start, duration,
                                               settle=2.0)
            finally:
                deployment.stop()
            moves = sum(report["moves"] for report in reports)
            row = {"scenario": "uttt", "nodes": count, "offered_moves_per_s": pace,
                   "moves_per_s": moves / duration,
                   "updates_per_s": sum(report["updates"] for report in reports) / duration,
                   "refused": sum(report["refused"] for report in reports),
                   **latency_figures(latencies(reports)),
                   "cpu_us_per_move": cpu / max(moves, 1) * 1e6,
                   "db_cpu_us_per_move": db_cpu / max(moves, 1) * 1e6}
            show(row)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run")
    run.add_argument("--scenario", choices=("bus", "chat", "pose", "uttt"), action="append")
    run.add_argument("--nodes", type=int, nargs="+", default=[1, 2])
    run.add_argument("--duration", type=float, default=5.0)
    run.add_argument("--rate", type=float, action="append",
                     help="chat messages/s per sender (default 50 100 200 400 600 800 1000 1500)")
    run.add_argument("--pace", type=float, action="append",
                     help="uttt offered moves/s in total (default 500 1000 1500)")
    vr = sub.add_parser("vr-load")
    for name, kind in (("first", int), ("connections", int), ("senders", int),
                       ("rate", float), ("duration", float), ("start", float),
                       ("base", float)):
        vr.add_argument("--" + name, type=kind, default=0)
    vr.add_argument("--ports", required=True)
    vr.add_argument("--scenario", choices=("chat", "pose"), required=True)
    uttt = sub.add_parser("uttt-load")
    for name, kind in (("games", int), ("part", int), ("parts", int), ("pace", float),
                       ("duration", float), ("start", float)):
        uttt.add_argument("--" + name, type=kind, required=True)
    uttt.add_argument("--ports", required=True)
    uttt.add_argument("--prefix", required=True)
    bus = sub.add_parser("bus-load")
    for name, kind in (("rate", float), ("duration", float), ("start", float), ("size", int)):
        bus.add_argument("--" + name, type=kind, required=True)
    bus.add_argument("--role", choices=("a", "b"), required=True)
    bus.add_argument("--url", required=True)
    arguments = sys.argv[1:] if sys.argv[1:2] and sys.argv[1] in (
        "run", "vr-load", "uttt-load", "bus-load") else ["run", *sys.argv[1:]]
    options = parser.parse_args(arguments)
    if options.command == "vr-load":
        return vr_load(options)
    if options.command == "uttt-load":
        return uttt_load(options)
    if options.command == "bus-load":
        return bus_load(options)

    from tests.pgcluster import PostgresCluster, find_bindir

    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("the PostgreSQL server binaries (initdb, pg_ctl) are needed")
    cluster = PostgresCluster(bindir)
    try:
        cluster.start()
        with tempfile.TemporaryDirectory(prefix="gtserver-bench-cluster-") as directory:
            for scenario in options.scenario or ("bus", "chat", "pose", "uttt"):
                if scenario == "bus":
                    scenario_bus(cluster, options.duration, [100, 1000, 10_000, 50_000])
                elif scenario == "chat":
                    scenario_chat(cluster, options.nodes, directory, options.duration,
                                  options.rate or [50, 100, 200, 400, 600, 800, 1000, 1500])
                elif scenario == "pose":
                    scenario_pose(cluster, options.nodes, directory, options.duration)
                else:
                    scenario_uttt(cluster, options.nodes, directory, options.duration,
                                  options.pace or [500, 1000, 1500])
    finally:
        cluster.destroy()
    return None


if __name__ == "__main__":
    main()
