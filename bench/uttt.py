"""Benchmark of the ultimate tic-tac-toe listener (not a test).

Runs the daemon in a child process and drives it with Autobahn WebSocket
clients in ``--clients`` load processes (2 by default), which split the games
between them and start together; the server's CPU use over each measuring
window is read from /proc:

  (a) throughput: USERS registered users, logged in once, pair up and play
      scripted legal games back to back (named challenges) for DURATION
      seconds, each next move sent as soon as the opponent sees the last one:
      moves/s and games/s;
  (b) latency: the same games, paced so the offered load is PACE moves/s in
      total over GAMES games in parallel (each game on a fixed schedule, the
      schedules spread evenly): p50/p99 time from sending a move to the
      opponent's socket receiving its match_update;
  (c) password logins per second, with the hash parameters.

A bare baseline is measured in the same run: a minimal Autobahn server that
answers the same frames with same-sized match_update frames but has no core,
no rules and no store. The ratio gtserver/baseline shows what the core costs
on top of WebSocket and JSON handling.

    python bench/uttt.py --db sqlite
    python bench/uttt.py --db postgresql     # needs the PostgreSQL binaries
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)


# --------------------------------------------------------------------------
# servers (child processes)

def serve_gtserver(port: int, db: str, hash_cost: int, node: str | None = None) -> None:
    from twisted.internet import reactor

    from gtserver.tap import Options, build_service

    # Every bench user registers from 127.0.0.1: lift the per-address budget.
    arguments = ["--db", db, "--hash-cost", str(hash_cost),
                 "--registrations-per-address", "1000000"]
    if node is not None:        # a node of a deployment (bench/cluster_uttt.py)
        arguments += ["--node", node]
    for name in Options.protocols:
        arguments += ["--port", f"{name}=off"]
    arguments += ["--port", f"uttt=tcp:{port}:interface=127.0.0.1"]
    options = Options()
    options.parseOptions(arguments)
    service = build_service(options, reactor, freeze_heap=True)  # as the daemon does
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


def serve_baseline(port: int) -> None:
    """Same frames in and out, nothing behind them."""
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
    from twisted.internet import reactor

    state = {"complete_field": [[0] * 9 for _ in range(9)],
             "global_field": [[0] * 3 for _ in range(3)], "last_move": None,
             "game_over": False, "is_draw": False, "player_won": None,
             "active_player": "", "current_player": "", "player_a": "", "player_b": ""}
    users: dict[str, list] = {}
    matches: dict[str, tuple[str, str]] = {}

    def update(match_id: str, last_move: dict | None) -> bytes:
        return json.dumps({"type": "match_update", "data": {
            "id": match_id, "revoke_time": "2030-01-01 00:00:00", "ranked": True,
            "match_state": dict(state, last_move=last_move)}}).encode()

    class Bare(WebSocketServerProtocol):
        name = None

        def onConnect(self, request):
            no_delay(self.transport)

        def onClose(self, wasClean, code, reason):
            if self in users.get(self.name, ()):
                users[self.name].remove(self)

        def onMessage(self, payload, isBinary):
            message = json.loads(payload)
            kind, data = message["type"], message["data"]
            if kind == "login":
                self.name = data["name"]
                users.setdefault(self.name, []).append(self)
                self.reply("login_response", {"success": True, "id": "x" * 43,
                                              "registered": True, "msg": "ok"})
            elif kind == "match_request":
                match_id = os.urandom(12).hex()
                matches[match_id] = (self.name, data["player"])
                frame = update(match_id, None)
                for name in matches[match_id]:
                    for peer in users.get(name, ()):
                        peer.sendMessage(frame)
                self.reply("match_request_response", {"success": True, "msg": "ok"})
            elif kind == "move":
                last = {key: int(data[key]) for key in ("sub_x", "sub_y", "x", "y")}
                frame = update(data["id"], last)
                first, second = matches[data["id"]]
                if self.name == second:
                    first, second = second, first
                for name in (first, second):
                    for peer in users.get(name, ()):
                        peer.sendMessage(frame)

        def reply(self, kind, data):
            self.sendMessage(json.dumps({"type": kind, "data": data}).encode())

    factory = WebSocketServerFactory()
    factory.protocol = Bare
    reactor.listenTCP(port, factory, interface="127.0.0.1")
    reactor.run()


def no_delay(transport) -> None:
    """Send small frames at once (Autobahn's own attempt at this has no effect)."""
    if hasattr(transport, "setTcpNoDelay"):
        transport.setTcpNoDelay(True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_child(arguments: list[str], port: int) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), *arguments],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 30
    while time.time() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return child
        if child.poll() is not None:
            raise SystemExit("server failed: " + child.stderr.read().decode()[-2000:])
        time.sleep(0.1)
    child.kill()
    raise SystemExit("server did not start")


def stop_child(child: subprocess.Popen) -> None:
    child.terminate()
    try:
        child.wait(15)
    except subprocess.TimeoutExpired:
        child.kill()


# --------------------------------------------------------------------------
# scripted games

def scripts(count: int, seed: int = 1) -> list[list[dict]]:
    from gtserver.games.ultimate import UltimateTicTacToe

    rng = random.Random(seed)
    games = []
    for _ in range(count):
        game = UltimateTicTacToe()
        moves = []
        while not game.is_over():
            choices = [(sx, sy, x, y) for sx, sy in game.open_boards()
                       for y in range(3) for x in range(3)
                       if not game.field[sy * 3 + y][sx * 3 + x]]
            move = rng.choice(choices)
            game.move(game.to_move, *move)
            moves.append(dict(zip(("sub_x", "sub_y", "x", "y"), move, strict=True)))
        games.append(moves)
    return games


# --------------------------------------------------------------------------
# load generator (this process)

def run_load(port: int | list[int], users: int, duration: float, pace: float | None,
             password: str, prefix: str, part: int = 0, parts: int = 1,
             go_file: str | None = None, split: bool = True) -> dict:
    """Log in the users of the games numbered PART, PART+PARTS, ... (of
    USERS/2 games), say "ready", wait for GO_FILE, play for DURATION
    seconds; returns the figures.

    With several ports (the nodes of a deployment), the two players of game
    N log in on ports N and N+1 (modulo their number): on different nodes;
    unless not ``split``: then both on port N.

    PACE (seconds) is the interval between the moves of one game: each game
    sends its moves on a fixed schedule (a move is never sent before the
    opponent has seen the previous one), and the games' schedules are spread
    evenly over the interval, so the offered load is steady rather than
    200 moves at the same instant.
    """
    from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
    from twisted.internet.endpoints import TCP4ClientEndpoint

    games = scripts(40)
    figures = {"moves": 0, "games": 0, "latencies": [], "refused": 0, "late_echoes": 0,
               "starts": [], "requests_refused": 0, "by_mover": [[], []]}
    ports = [port] if isinstance(port, int) else list(port)
    measuring = {"on": False}

    class Player(WebSocketClientProtocol):
        pair = None
        name = ""
        #: Open matches the server reported at login (left by an earlier run).
        leftovers: set[str]

        def onOpen(self):
            no_delay(self.transport)
            self.factory.opened.callback(self)

        def onMessage(self, payload, isBinary):
            message = json.loads(payload)
            kind = message["type"]
            if kind == "login_response":
                self.leftovers = set()
                self.factory.logged_in.callback(message["data"])
            elif kind == "match_update" and self.pair is not None:
                self.pair.update(self, message["data"])
            elif kind == "match_update":
                data = message["data"]
                if data["match_state"]["game_over"]:
                    self.leftovers.discard(data["id"])
                else:
                    self.leftovers.add(data["id"])
            elif kind == "match_request_response" and not message["data"]["success"]:
                figures["requests_refused"] += 1

        def send(self, kind, data):
            self.sendMessage(json.dumps({"type": kind, "data": data}).encode())

    class Pair:
        """Two players playing scripted games against each other, forever."""

        def __init__(self, first, second, number):
            self.players = (first, second)
            first.pair = second.pair = self
            self.number = number
            self.match_id = None
            self.moves: list[dict] = []
            self.index = 0
            self.sent_at = 0.0
            self.stopped = False

        def start(self):
            if self.stopped:
                return
            self.due = self.requested_at = time.perf_counter()
            self.match_id = None
            self.moves = games[self.number % len(games)]
            self.number += 7
            self.index = 0
            self.players[0].send("match_request", {"player": self.players[1].name})

        def update(self, receiver, data):
            if self.match_id is None:
                if receiver is self.players[0] and data["match_state"]["last_move"] is None:
                    self.match_id = data["id"]
                    if measuring["on"]:
                        figures["starts"].append(time.perf_counter() - self.requested_at)
                    self.next_move(self.match_id)
                return
            if (data["id"] != self.match_id or self.index >= len(self.moves)
                    or data["match_state"]["last_move"] is None):
                return
            mover = self.players[self.index % 2]
            if receiver is mover:
                return
            last_move = data["match_state"]["last_move"]
            if last_move != self.moves[self.index]:
                if self.index and last_move == self.moves[self.index - 1]:
                    # The receiver's own echo of the move before, read after
                    # the opponent's copy (which already advanced the game):
                    # frames on two sockets can be read in either order.
                    figures["late_echoes"] += measuring["on"]
                else:
                    figures["refused"] += measuring["on"]
                    print(f"move {self.index} of match {self.match_id} refused: "
                          f"{last_move} instead of {self.moves[self.index]}",
                          file=sys.stderr, flush=True)
                return
            now = time.perf_counter()
            if measuring["on"]:
                figures["moves"] += 1
                figures["latencies"].append(now - self.sent_at)
                figures["by_mover"][self.index % 2].append(now - self.sent_at)
            self.index += 1
            if self.index == len(self.moves):
                if measuring["on"]:
                    figures["games"] += 1
                reactor.callLater(max(0.0, self.due - now), self.start)
            elif pace:
                reactor.callLater(max(0.0, self.due - now), self.next_move, self.match_id)
            else:
                self.next_move(self.match_id)

        def next_move(self, match_id):
            """Send the next move of MATCH_ID (nothing once another match began)."""
            if self.stopped or match_id != self.match_id or self.index >= len(self.moves):
                return
            mover = self.players[self.index % 2]
            move = self.moves[self.index]
            self.sent_at = time.perf_counter()
            self.due += pace or 0.0               # a fixed schedule: late moves catch up
            mover.send("move", {"id": self.match_id, **{k: str(v) for k, v in move.items()}})

    async def connect(name, port):
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/")
        factory.protocol = Player
        factory.opened, factory.logged_in = Deferred(), Deferred()
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
        player = await factory.opened
        player.name = name
        player.send("login", {"name": name, "pw": password})
        response = await factory.logged_in
        if not response["success"]:
            raise RuntimeError(f"login of {name} failed: {response}")
        return player

    async def main():
        half = users // 2
        numbers = list(range(part, half, parts))
        names = [f"{prefix}{n:04d}" for n in numbers] + \
            [f"{prefix}{n + half:04d}" for n in numbers]
        where = [ports[n % len(ports)] for n in numbers] + \
            [ports[(n + int(split)) % len(ports)] for n in numbers]
        players = []
        for start in range(0, len(names), 20):
            players += await DeferredList(
                [ensureDeferred(connect(name, at)) for name, at in
                 zip(names[start:start + 20], where[start:start + 20], strict=True)],
                fireOnOneErrback=True, consumeErrors=True).addCallback(
                    lambda results: [value for _ok, value in results])
        await sleep(0.5)
        for player in players:    # end what an interrupted earlier run left open
            for match_id in list(player.leftovers):
                player.send("end_match", {"id": match_id})
        for _ in range(100):
            if not any(player.leftovers for player in players):
                break
            await sleep(0.05)
        count = len(numbers)
        pairs = [Pair(players[i], players[i + count], n) for i, n in enumerate(numbers)]
        print("ready", flush=True)
        while go_file is not None and not os.path.exists(go_file):
            await sleep(0.002)
        for pair in pairs:
            if pace:    # spread the games' schedules evenly over one interval
                reactor.callLater(pace * pair.number / half, pair.start)
            else:
                pair.start()
        await sleep(2.0)                      # warm up
        measuring["on"] = True
        began, cpu = time.perf_counter(), time.process_time()
        await sleep(duration)
        measuring["on"] = False
        figures["elapsed"] = time.perf_counter() - began
        figures["client_cpu"] = time.process_time() - cpu
        for pair in pairs:                    # leave no open match behind
            if pair.match_id is not None and pair.index < len(pair.moves):
                pair.players[0].send("end_match", {"id": pair.match_id})
            pair.moves, pair.stopped = [], True
        await sleep(1.0)
        for player in players:
            player.pair = None
            player.transport.abortConnection()
        await sleep(0.5)

    def sleep(seconds):
        d = Deferred()
        reactor.callLater(seconds, d.callback, None)
        return d

    outcome = {}

    def finished(result):
        outcome["error"] = result if hasattr(result, "getTraceback") else None
        reactor.stop()

    reactor.callWhenRunning(lambda: ensureDeferred(main()).addBoth(finished))
    reactor.run()
    if outcome.get("error") is not None:
        raise SystemExit(outcome["error"].getTraceback())
    return {key: figures[key] for key in ("moves", "games", "latencies", "refused", "elapsed",
                                           "client_cpu", "starts", "requests_refused",
                                           "late_echoes", "by_mover")}


def summarise(parts: list[dict], server_cpu: float | None = None) -> dict:
    """One result from the figures of every load process."""
    latencies = sorted(value for part in parts for value in part["latencies"])
    starts = sorted(value for part in parts for value in part["starts"])
    elapsed = max(part["elapsed"] for part in parts)

    def percentile(p, values=latencies):
        return values[min(len(values) - 1, int(p * len(values)))] * 1000 if values \
            else float("nan")

    return {"moves_per_s": sum(part["moves"] for part in parts) / elapsed,
            "games_per_s": sum(part["games"] for part in parts) / elapsed,
            "p50_ms": percentile(0.50), "p99_ms": percentile(0.99),
            "start_p50_ms": percentile(0.50, starts), "start_p99_ms": percentile(0.99, starts),
            "refused": sum(part["refused"] for part in parts),
            "late_echoes": sum(part["late_echoes"] for part in parts),
            "requests_refused": sum(part["requests_refused"] for part in parts),
            "client_cpu": sum(part["client_cpu"] for part in parts) / elapsed,
            "server_cpu": server_cpu / elapsed if server_cpu is not None else float("nan")}


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_logins(port: int, prefix: str, count: int, concurrency: int, password: str) -> float:
    """Password logins of existing users per second (each opens its own socket)."""
    from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
    from twisted.internet.endpoints import TCP4ClientEndpoint

    class Login(WebSocketClientProtocol):
        def onOpen(self):
            no_delay(self.transport)
            self.sendMessage(json.dumps({"type": "login", "data": {
                "name": self.factory.user, "pw": password}}).encode())

        def onMessage(self, payload, isBinary):
            message = json.loads(payload)
            if message["type"] == "login_response" and not self.factory.done.called:
                self.factory.done.callback(message["data"]["success"])
                self.transport.abortConnection()

    def one(name):
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/")
        factory.protocol, factory.user, factory.done = Login, name, Deferred()
        TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
        return factory.done

    result = {}

    def go():
        semaphore = DeferredSemaphore(concurrency)
        began = time.perf_counter()
        d = gatherResults([semaphore.run(one, f"{prefix}{n % 400:04d}") for n in range(count)])

        def done(successes):
            result["rate"] = count / (time.perf_counter() - began)
            result["ok"] = all(successes)
            reactor.stop()

        d.addCallbacks(done, lambda failure: (result.update(error=failure), reactor.stop()))

    reactor.callWhenRunning(go)
    reactor.run()
    if "error" in result or not result.get("ok"):
        raise SystemExit(f"logins failed: {result}")
    return result["rate"]


# --------------------------------------------------------------------------

def database_url(kind: str, directory: str) -> str:
    if kind == "sqlite":
        return "sqlite:" + os.path.join(directory, "bench.sqlite")
    from tests.pgcluster import shared_cluster
    return shared_cluster().create_database()


def in_child(arguments: list[str]) -> list[str]:
    return [sys.executable, os.path.abspath(__file__), *arguments]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--latency-duration", type=float, default=10.0)
    parser.add_argument("--pace", type=float, default=1500.0,
                        help="offered moves/s in total for the latency run (b)")
    parser.add_argument("--hash-cost", type=int, default=14)
    parser.add_argument("--logins", type=int, default=100)
    parser.add_argument("--clients", type=int, default=2,
                        help="load-generating processes for runs (a) and (b)")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--part", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--go-file", help=argparse.SUPPRESS)
    options = parser.parse_args()

    if options.phase == "serve":
        return serve_gtserver(options.port, options.url, options.hash_cost)
    if options.phase == "baseline":
        return serve_baseline(options.port)
    if options.phase in ("load", "paced", "logins"):
        # Each load phase runs in a fresh process: a Twisted reactor runs once.
        pace = None
        if options.phase == "paced":
            pace = (options.users // 2) / options.pace
        if options.phase == "logins":
            rate = run_logins(options.port, "bench", options.logins, 8, "benchpw")
            print(json.dumps({"logins_per_s": rate}))
        else:
            duration = options.duration if pace is None else options.latency_duration
            print(json.dumps(run_load(options.port, options.users, duration, pace,
                                      "benchpw", "bench", options.part, options.clients,
                                      options.go_file)))
        return None

    def arguments_for(name: str, port: int) -> list[str]:
        return ["--phase", name, "--port", str(port), "--users", str(options.users),
                "--duration", str(options.duration), "--clients", str(options.clients),
                "--latency-duration", str(options.latency_duration),
                "--pace", str(options.pace), "--logins", str(options.logins)]

    def phase(name: str, port: int, server_pid: int) -> dict:
        if name == "logins":
            output = subprocess.run(in_child(arguments_for(name, port)), cwd=ROOT, check=True,
                                    capture_output=True, text=True)
            return json.loads(output.stdout.strip().splitlines()[-1])
        return load_phase(name, port, server_pid)

    def load_phase(name: str, port: int, server_pid: int) -> dict:
        """Run the load processes together; measure the server's CPU meanwhile."""
        go_file = os.path.join(directory, f"go-{name}-{port}")
        children = [subprocess.Popen(
            in_child([*arguments_for(name, port), "--part", str(part), "--go-file", go_file]),
            cwd=ROOT, stdout=subprocess.PIPE, text=True) for part in range(options.clients)]
        for child in children:
            if child.stdout.readline().strip() != "ready":
                raise SystemExit(f"load process failed: {child.wait()}")
        open(go_file, "w").close()
        time.sleep(2.0)                       # the load processes' warm-up
        cpu = process_cpu(server_pid)
        time.sleep(options.duration if name == "load" else options.latency_duration)
        cpu = process_cpu(server_pid) - cpu
        loads.append(os.getloadavg()[0])
        parts = []
        for child in children:
            output, _ = child.communicate()
            if child.returncode:
                raise SystemExit(f"load process failed: {child.returncode}")
            parts.append(json.loads(output.strip().splitlines()[-1]))
        return summarise(parts, cpu)

    loads: list[float] = []

    with tempfile.TemporaryDirectory(prefix="gtserver-bench-") as directory:
        url = database_url(options.db, directory)
        print(f"database: {options.db}; {options.users} users, {options.users // 2} games "
              f"in parallel; hash scrypt n=2^{options.hash_cost} r=8 p=1")

        bare = bare_paced = None
        if not options.skip_baseline:
            port = free_port()
            baseline = start_child(["--phase", "baseline", "--port", str(port)], port)
            try:
                bare = phase("load", port, baseline.pid)
                bare_paced = phase("paced", port, baseline.pid)
            finally:
                stop_child(baseline)

        port = free_port()
        server = start_child(["--phase", "serve", "--port", str(port), "--url", url,
                              "--hash-cost", str(options.hash_cost)], port)
        try:
            loaded = phase("load", port, server.pid)
            paced = phase("paced", port, server.pid)
            logins = phase("logins", port, server.pid)
        finally:
            stop_child(server)

    def row(label: str, figures: dict | None) -> str:
        if figures is None:
            return f"{label:<28} (skipped)"
        return (f"{label:<28} {figures['moves_per_s']:>9.0f} {figures['games_per_s']:>8.1f} "
                f"{figures['p50_ms']:>8.2f} {figures['p99_ms']:>8.2f} "
                f"{figures['server_cpu']:>7.0%} {figures['client_cpu']:>7.0%}")

    print(f"{'run':<28} {'moves/s':>9} {'games/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'server':>7} {'clients':>7}")
    print(row("baseline, flat out", bare))
    print(row("gtserver, flat out", loaded))
    print(row(f"baseline, paced {options.pace:.0f}/s", bare_paced))
    print(row(f"gtserver, paced {options.pace:.0f}/s", paced))
    for label, figures in (("flat out", loaded), ("paced", paced)):
        print(f"gtserver {label}: match_request to the match's first match_update "
              f"p50 {figures['start_p50_ms']:.1f} ms, p99 {figures['start_p99_ms']:.1f} ms")
    print("(server, clients: CPU used over the window, 100% = one core; "
          f"{options.clients} load processes)")
    print("load average (1 min) at the end of each run: "
          + ", ".join(f"{value:.2f}" for value in loads))
    if bare is not None:
        print(f"gtserver/baseline moves/s: {loaded['moves_per_s'] / bare['moves_per_s']:.2f}")
    print(f"password logins/s: {logins['logins_per_s']:.1f} "
          f"(scrypt n=2^{options.hash_cost} r=8 p=1, 8 concurrent)")
    if loaded["refused"] or paced["refused"]:
        print(f"refused moves (should be 0): {loaded['refused'] + paced['refused']}")
    if loaded["late_echoes"] or paced["late_echoes"]:
        print("own move echoes read after the opponent's copy (harmless, not refusals): "
              f"{loaded['late_echoes'] + paced['late_echoes']}")
    if loaded["requests_refused"] or paced["requests_refused"]:
        print("refused match requests (should be 0): "
              f"{loaded['requests_refused'] + paced['requests_refused']}")
    return None


if __name__ == "__main__":
    main()
