"""Benchmark of the EOT game API against a bare Twisted responder.

Not a test. Run from the checkout::

    python bench/eot.py                   # every scenario
    python bench/eot.py --scenario a      # throughput only (a, b1 or b2)
    python bench/eot.py --metrics-cost 5  # (a) with metrics on and off, alternating
    python bench/eot.py --scenario b2 --profile /tmp/release.prof

a. Echo ``move`` + ``state`` round trips with 1, 32 and 128 concurrent clients,
   against gtserver and against a bare Twisted responder (reads up to ``EOT\\0``,
   answers a fixed object, closes) measured in the same run: round trips per
   second (and the ratio gtserver / bare), p50/p99 latency per request, server
   CPU microseconds per request.
b. 10,000 parked ``state`` requests: server RSS before, while parked and after;
   the time to park them all; the time to release them all with one move each.

   b1. one Echo session per waiter: the release is 10,000 moves, i.e. 10,000
       more connections, so it measures connection handling as much as waking.
   b2. Chat sessions of 100 players (100 sessions): the release is 100 moves,
       each waking the 100 waiters of its session, so it measures the server's
       cost of answering parked requests.
c. Memory over many finished sessions: clients play 20,000 one-player Echo
   games to the end (join, state, a 2 KB message, state, "quit", state) in
   rounds, and the server's RSS is read after each round: with
   ``--eot-finished-grace`` shortened to 2 s; with a grace of an hour (so
   only the default ``--eot-sessions-max`` bounds them); and with a grace of
   an hour and no bound (finished sessions kept as long as the game
   timeout, as before they were released).
d. (``--scenario d`` only) Two nodes of a deployment (``--node``) on a
   throwaway PostgreSQL cluster (tests/pgcluster.py): scenario a with the
   sessions on node a, played through a and through b (each request
   forwarded to a), against one daemon without ``--node`` on PostgreSQL.

Servers and load clients are separate processes; the load is spread over
several client processes (asyncio, raw non-blocking sockets) so the client
side is not the bottleneck. Listen backlogs are 4096 and ``ulimit -n`` is
raised to the hard limit in every process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TERMINATOR = b"EOT\0"
BARE_REPLY = b'{"status": "ok", "data": {"echo": "hello", "current": [0], "gameover": false}}'


def raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---------------------------------------------------------------- servers


def install_profiler(path: str) -> None:
    """SIGUSR1 starts cProfile in this process, SIGUSR2 stops it and writes ``path``."""
    import cProfile
    profiler = cProfile.Profile()
    signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())

    def stop(*_) -> None:
        profiler.disable()
        profiler.dump_stats(path)
    signal.signal(signal.SIGUSR2, stop)


def serve(kind: str) -> None:
    """Run one server in this process; print its port, then serve until killed."""
    raise_file_limit()
    sys.path.insert(0, ROOT)
    profile_to = os.environ.get("EOT_BENCH_PROFILE")
    if profile_to:
        install_profiler(profile_to)
    from twisted.internet import reactor

    if kind == "bare":
        from twisted.internet.protocol import Factory, Protocol

        class Bare(Protocol):
            buffer = b""

            def dataReceived(self, data: bytes) -> None:
                self.buffer += data
                if self.buffer.find(TERMINATOR) >= 0:
                    self.transport.write(BARE_REPLY)
                    self.transport.loseConnection()

        factory = Factory.forProtocol(Bare)
        factory.noisy = False
        port = reactor.listenTCP(0, factory, interface="127.0.0.1", backlog=4096)
        print(f"PORT {port.getHost().port}", flush=True)
        reactor.run()
        return

    from gtserver.tap import Options, build_service
    arguments = ["--db", "sqlite:" + os.path.join(tempfile.mkdtemp(), "bench.sqlite"),
                 "--hash-cost", "4"]
    for name in Options.protocols:
        arguments += ["--port", f"{name}=off"]
    arguments += ["--port", "eot=tcp:0:interface=127.0.0.1:backlog=4096"]
    arguments += json.loads(os.environ.get("EOT_BENCH_SERVER_ARGS", "[]"))
    options = Options()
    options.parseOptions(arguments)
    service = build_service(options, reactor, freeze_heap=True)  # as the daemon does
    service.startService()

    def ready(_):
        listener = next(item for item in service.listeners if item.protocol_name == "eot")
        print(f"PORT {listener.port.getHost().port}", flush=True)

    service.started.addCallback(ready)
    reactor.run()


class Server:
    """A server subprocess with its CPU time and RSS readable from /proc."""

    def __init__(self, kind: str, arguments: list[str] | None = None,
                 metrics: bool = True) -> None:
        environment = dict(os.environ, EOT_BENCH_SERVER_ARGS=json.dumps(arguments or []))
        if not metrics:     # every instrument a no-op: the baseline of --metrics-cost
            environment["GTSERVER_METRICS"] = "off"
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", kind], stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=environment)
        line = self.process.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"{kind} server did not start")
        self.port = int(line.split()[1])

    def cpu(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def rss(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as file:
            for line in file:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def signal(self, number: int) -> None:
        """Send a profiling signal (only when profiling: the default action kills)."""
        if os.environ.get("EOT_BENCH_PROFILE"):
            self.process.send_signal(number)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


# ---------------------------------------------------------------- client side


async def request(port: int, payload: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, payload)
        chunks = []
        while True:
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        sock.close()


def encode(message: dict) -> bytes:
    return json.dumps(message).encode() + TERMINATOR


async def join_echo(port: int) -> dict:
    reply = json.loads(await request(port, encode(
        {"type": "join", "game": "Echo", "session": "auto", "players": 1, "name": ""})))
    data = reply["data"]
    return {"game": "Echo", "session": data["session"], "player_id": data["player_id"],
            "key": data["key"]}


async def throughput_worker(port: int, clients: int, seconds: float, bare: bool,
                            join_port: int | None = None) -> tuple:
    """``clients`` loops of move + state; returns (round trips, latencies).
    Players join on ``join_port`` (else ``port``), then play on ``port``."""
    latencies: list[float] = []
    rounds = 0
    deadline = time.perf_counter() + seconds

    async def one_client() -> None:
        nonlocal rounds
        player = {} if bare else await join_echo(join_port or port)
        move = encode({"type": "move", **player, "move": {"msg": "hello"}})
        state = encode({"type": "state", **player, "observer": False})
        while time.perf_counter() < deadline:
            for payload in (move, state):
                started = time.perf_counter()
                reply = await request(port, payload)
                latencies.append(time.perf_counter() - started)
                if not reply.startswith(b'{"status": "ok"'):
                    raise RuntimeError(reply[:200])
            rounds += 1

    await asyncio.gather(*(one_client() for _ in range(clients)))
    return rounds, latencies


def run_throughput_worker(port, clients, seconds, bare, results, join_port=None) -> None:
    raise_file_limit()
    results.put(asyncio.run(throughput_worker(port, clients, seconds, bare, join_port)))


def measure_throughput(server: Server, clients: int, seconds: float, bare: bool,
                       client_processes: int, join_on: Server | None = None,
                       cpu_of: tuple[Server, ...] = ()) -> dict:
    """Scenario a's loop against ``server``, players joined on ``join_on``
    (else ``server``); CPU is that of ``cpu_of`` (else ``server``) together."""
    cpu_of = cpu_of or (server,)
    join_port = join_on.port if join_on is not None else None
    processes = min(clients, client_processes)
    per_process = [clients // processes + (1 if i < clients % processes else 0)
                   for i in range(processes)]
    results: multiprocessing.Queue = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=run_throughput_worker,
                                       args=(server.port, count, seconds, bare, results,
                                             join_port))
               for count in per_process]
    cpu_before, started = sum(s.cpu() for s in cpu_of), time.perf_counter()
    for worker in workers:
        worker.start()
    outcomes = [results.get() for _ in workers]
    elapsed = time.perf_counter() - started
    cpu = sum(s.cpu() for s in cpu_of) - cpu_before
    for worker in workers:
        worker.join()
    rounds = sum(outcome[0] for outcome in outcomes)
    latencies = sorted(latency for outcome in outcomes for latency in outcome[1])
    requests = len(latencies)
    return {"clients": clients, "round_trips_per_s": rounds / seconds,
            "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
            "cpu_us_per_request": 1e6 * cpu / requests, "requests": requests,
            "elapsed_s": elapsed}


def scenario_a(seconds: float, client_counts: list[int], client_processes: int) -> None:
    print(f"a. Echo move+state round trips, {seconds:g} s per run, "
          f"{client_processes} load processes")
    print(f"{'clients':>7} {'server':>9} {'rt/s':>9} {'ratio':>6} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'CPU us/req':>10}")
    gtserver, bare = Server("gtserver"), Server("bare")
    try:
        for clients in client_counts:
            baseline = measure_throughput(bare, clients, seconds, True, client_processes)
            result = measure_throughput(gtserver, clients, seconds, False, client_processes)
            for name, row in (("bare", baseline), ("gtserver", result)):
                ratio = row["round_trips_per_s"] / baseline["round_trips_per_s"]
                print(f"{clients:>7} {name:>9} {row['round_trips_per_s']:>9.0f} {ratio:>6.2f} "
                      f"{row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f} "
                      f"{row['cpu_us_per_request']:>10.1f}", flush=True)
    finally:
        gtserver.stop()
        bare.stop()


def metrics_cost(seconds: float, client_counts: list[int], client_processes: int,
                 rounds: int) -> None:
    """Scenario a against two gtserver daemons, metrics on and every instrument
    a no-op (``GTSERVER_METRICS=off``), measured in alternation (the order
    swapped every round) so that a busy machine disturbs both alike."""
    print(f"a, metrics cost. Echo move+state round trips, {seconds:g} s per run, "
          f"{rounds} rounds per client count")
    print(f"{'clients':>7} {'metrics':>7} {'rt/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'CPU us/req':>10}")
    servers = {"off": Server("gtserver", metrics=False), "on": Server("gtserver")}
    try:
        for clients in client_counts:
            rows: dict[str, list[dict]] = {"off": [], "on": []}
            for number in range(rounds):
                for name in (("off", "on") if number % 2 == 0 else ("on", "off")):
                    row = measure_throughput(servers[name], clients, seconds, False,
                                             client_processes)
                    rows[name].append(row)
                    print(f"{clients:>7} {name:>7} {row['round_trips_per_s']:>9.0f} "
                          f"{row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f} "
                          f"{row['cpu_us_per_request']:>10.1f}", flush=True)
            rate = {name: sum(r["round_trips_per_s"] for r in rows[name]) / rounds
                    for name in rows}
            cpu = {name: sum(r["cpu_us_per_request"] for r in rows[name]) / rounds
                   for name in rows}
            paired = sorted(on["round_trips_per_s"] / off["round_trips_per_s"]
                            for on, off in zip(rows["on"], rows["off"], strict=True))
            print(f"{clients:>7} clients, mean of {rounds}: {rate['on']:.0f} rt/s with metrics, "
                  f"{rate['off']:.0f} without ({100 * (1 - rate['on'] / rate['off']):+.1f} % "
                  f"cost; median of the paired rounds {100 * (1 - median(paired)):+.1f} %); "
                  f"CPU {cpu['on']:.1f} vs {cpu['off']:.1f} us/request "
                  f"({100 * (cpu['on'] / cpu['off'] - 1):+.1f} %)", flush=True)
    finally:
        for server in servers.values():
            server.stop()


def scenario_d(seconds: float, client_counts: list[int], client_processes: int) -> None:
    """Two nodes of one deployment on a throwaway PostgreSQL, against a single
    daemon on PostgreSQL: Echo sessions homed on node a, played through a
    (local) and through b (every request forwarded to a over the bus)."""
    sys.path.insert(0, ROOT)
    from tests.pgcluster import shared_cluster
    cluster = shared_cluster()
    print(f"d. Echo move+state round trips on PostgreSQL, {seconds:g} s per run, "
          f"{client_processes} load processes; CPU of every server together")
    print(f"{'clients':>7} {'played on':>28} {'rt/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'CPU us/req':>10}")
    single = Server("gtserver", ["--db", cluster.create_database()])
    deployment = cluster.create_database()
    a = Server("gtserver", ["--db", deployment, "--node", "a"])
    b = Server("gtserver", ["--db", deployment, "--node", "b"])
    try:
        time.sleep(2.0)             # the nodes have seen each other
        for clients in client_counts:
            runs = (("one daemon (no --node)", single, None, (single,)),
                    ("node a, sessions on a", a, None, (a, b)),
                    ("node b, sessions on a", b, a, (a, b)))
            for label, server, join_on, cpu_of in runs:
                row = measure_throughput(server, clients, seconds, False, client_processes,
                                         join_on=join_on, cpu_of=cpu_of)
                print(f"{clients:>7} {label:>28} {row['round_trips_per_s']:>9.0f} "
                      f"{row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f} "
                      f"{row['cpu_us_per_request']:>10.1f}", flush=True)
    finally:
        for server in (single, a, b):
            server.stop()


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


# ---------------------------------------------------------------- parked waiters


class Exchanges:
    """Many request/answer exchanges at once on one epoll loop (cheaper than asyncio).

    ``start(payload, keep=False)`` connects and sends; a kept connection is
    not read until :meth:`collect` is asked for it (it stays parked).
    """

    def __init__(self, port: int, in_flight: int) -> None:
        self.address = ("127.0.0.1", port)
        self.in_flight = in_flight
        self.poll = select.epoll()
        self.sockets: dict[int, tuple] = {}     # fd -> (socket, payload, chunks, keep)
        self.kept: list[socket.socket] = []
        self.answers: list[bytes] = []
        self.opened = 0     # connections opened by run() and not finished yet

    def run(self, payloads: list[bytes], keep: bool = False) -> None:
        """Send every payload; unless ``keep``, read every answer too."""
        queue = list(reversed(payloads))
        while queue or self.sockets:
            while queue and self.opened < self.in_flight:
                self._open(queue.pop(), keep)
            for fd, events in self.poll.poll(1.0):
                self._event(fd, events)

    def collect(self, sockets: list[socket.socket]) -> None:
        """Read the answers of kept connections (while ``run`` may send more)."""
        for sock in sockets:
            self.sockets[sock.fileno()] = (sock, b"", [], None)
            self.poll.register(sock.fileno(), select.EPOLLIN)

    def _open(self, payload: bytes, keep: bool) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(self.address)
        self.sockets[sock.fileno()] = (sock, payload, [], keep)
        self.poll.register(sock.fileno(), select.EPOLLOUT)
        self.opened += 1

    def _event(self, fd: int, events: int) -> None:
        sock, payload, chunks, keep = self.sockets[fd]
        if payload:
            sock.sendall(payload)
            if keep:
                self.poll.unregister(fd)
                del self.sockets[fd]
                self.kept.append(sock)
                self.opened -= 1
                return
            self.sockets[fd] = (sock, b"", chunks, keep)
            self.poll.modify(fd, select.EPOLLIN)
            return
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk, chunks[:] = b"", [b"RESET"]
        if chunk:
            chunks.append(chunk)
            return
        self.poll.unregister(fd)
        del self.sockets[fd]
        sock.close()
        self.answers.append(b"".join(chunks))
        if keep is not None:
            self.opened -= 1


def park_worker(port: int, count: int, per_session: int, tag: str, pipe) -> None:
    sessions = asyncio.run(setup_sessions(port, count, per_session, tag))
    viewers = [player for players in sessions for player in players]
    pipe.send("ready")
    pipe.recv()                                         # "park"
    exchanges = Exchanges(port, 500)
    exchanges.run([encode({"type": "state", **viewer["fields"], "observer": False})
                   for viewer in viewers], keep=True)
    pipe.send("sent")
    pipe.recv()                                         # "release"
    exchanges.collect(exchanges.kept)
    exchanges.run([encode({"type": "move", **players[0]["fields"],
                           "move": players[0]["release"]})
                   for players in sessions])
    answers = exchanges.answers
    if (len(answers) != len(viewers) + len(sessions)
            or not all(b'"ok"' in answer for answer in answers)):
        failed = [answer for answer in answers if b'"ok"' not in answer]
        raise RuntimeError(f"{len(failed)} of {len(answers)} requests failed, "
                           f"e.g. {failed[:3]}")
    pipe.send("released")


async def setup_sessions(port: int, count: int, per_session: int, tag: str) -> list[list]:
    """``count`` viewers in sessions of ``per_session`` players, all past their first state.

    One player per session: Echo sessions, released by ``msg="hello"``.
    More: Chat sessions; player 0 has a name and is released by posting.
    """
    semaphore = asyncio.Semaphore(max(200, per_session))
    game = "Echo" if per_session == 1 else "Chat"

    async def join(token: str) -> dict:
        async with semaphore:
            reply = json.loads(await request(port, encode(
                {"type": "join", "game": game, "session": token,
                 "players": per_session, "name": ""})))
        data = reply["data"]
        return {"fields": {"game": game, "session": data["session"],
                           "player_id": data["player_id"], "key": data["key"]},
                "release": {"msg": "hello"} if game == "Echo" else {"message": "hello"}}

    async def first_state(player: dict) -> None:
        async with semaphore:
            await request(port, encode({"type": "state", **player["fields"],
                                        "observer": False}))

    async def one_session(index: int) -> list[dict]:
        token = "auto" if game == "Echo" else f"bench-{tag}-{index}"
        players = await asyncio.gather(*(join(token) for _ in range(per_session)))
        players.sort(key=lambda player: player["fields"]["player_id"])
        if game == "Chat":
            await request(port, encode({"type": "move", **players[0]["fields"],
                                        "move": {"name": "speaker"}}))
        await asyncio.gather(*(first_state(player) for player in players))
        return players

    return await asyncio.gather(*(one_session(index)
                                  for index in range(count // per_session)))


def run_park_worker(port, count, per_session, tag, pipe) -> None:
    raise_file_limit()
    park_worker(port, count, per_session, tag, pipe)


def scenario_b(waiters: int, per_session: int = 1, processes: int = 4) -> None:
    if per_session == 1:
        print(f"b1. {waiters} parked state requests, one Echo session each "
              f"(released by {waiters} moves)")
    else:
        print(f"b2. {waiters} parked state requests in {waiters // per_session} Chat "
              f"sessions of {per_session} players (released by "
              f"{waiters // per_session} moves)")
    sessions = waiters // per_session
    server = Server("gtserver")
    try:
        rss_start = server.rss()
        pipes, workers = [], []
        for index in range(processes):
            parent, child = multiprocessing.Pipe()
            share = sessions // processes + (1 if index < sessions % processes else 0)
            worker = multiprocessing.Process(
                target=run_park_worker,
                args=(server.port, share * per_session, per_session, str(index), child))
            worker.start()
            pipes.append(parent)
            workers.append(worker)
        for pipe in pipes:
            assert pipe.recv() == "ready"
        time.sleep(1.0)
        rss_before = server.rss()
        started = time.perf_counter()
        for pipe in pipes:
            pipe.send("park")
        for pipe in pipes:
            assert pipe.recv() == "sent"
        # A probe request queued behind every parked one: once it is answered,
        # the server has read (and parked) all of them.
        asyncio.run(request(server.port, encode({"type": "join", "game": "NoGame",
                                                 "session": "x", "players": 1})))
        park_time = time.perf_counter() - started
        time.sleep(1.0)
        rss_parked = server.rss()
        server.signal(signal.SIGUSR1)       # profile the release (--profile)
        cpu_before, started = server.cpu(), time.perf_counter()
        for pipe in pipes:
            pipe.send("release")
        for pipe in pipes:
            assert pipe.recv() == "released"
        release_time = time.perf_counter() - started
        release_cpu = server.cpu() - cpu_before
        server.signal(signal.SIGUSR2)
        for worker in workers:
            worker.join()
        time.sleep(1.0)
        rss_after = server.rss()
        per_waiter = (rss_parked - rss_before) / waiters
        print(f"  server RSS: at start {rss_start / 2**20:.1f} MiB, "
              f"with the sessions {rss_before / 2**20:.1f} MiB, "
              f"parked {rss_parked / 2**20:.1f} MiB, after {rss_after / 2**20:.1f} MiB")
        print(f"  RSS per parked waiter: {per_waiter / 1024:.2f} KiB")
        print(f"  time to park all: {park_time:.2f} s")
        print(f"  time to release all ({sessions} moves): {release_time:.2f} s "
              f"(server CPU {release_cpu:.2f} s)", flush=True)
    finally:
        server.stop()


async def play_finished_echo_games(port: int, games: int, concurrency: int) -> None:
    """``games`` one-player Echo games played to the end, ``concurrency`` at a time."""
    message = "m" * 2048

    async def one_game() -> None:
        player = await join_echo(port)
        state = encode({"type": "state", **player, "observer": False})
        await request(port, state)
        for text in (message, "quit"):
            await request(port, encode({"type": "move", **player, "move": {"msg": text}}))
            await request(port, state)

    async def worker(count: int) -> None:
        for _ in range(count):
            await one_game()

    share, extra = divmod(games, concurrency)
    await asyncio.gather(*(worker(share + (1 if index < extra else 0))
                           for index in range(concurrency)))


def scenario_c(games: int, rounds: int = 5, concurrency: int = 32) -> None:
    print(f"c. RSS over {games} finished Echo sessions, in {rounds} rounds")
    configurations = (
        ("grace 2 s", ["--eot-finished-grace", "2"]),
        ("grace 1 h, default --eot-sessions-max 10000",
         ["--eot-finished-grace", "3600"]),
        ("grace 1 h, no session bound (as before)",
         ["--eot-finished-grace", "3600", "--eot-sessions-max", "1000000"]),
    )
    for label, arguments in configurations:
        server = Server("gtserver", arguments)
        try:
            figures = [server.rss()]
            started = time.perf_counter()
            for _ in range(rounds):
                asyncio.run(play_finished_echo_games(server.port, games // rounds,
                                                     concurrency))
                figures.append(server.rss())
            elapsed = time.perf_counter() - started
            time.sleep(3.0)             # past the short grace: the last round released
            figures.append(server.rss())
            mib = " -> ".join(f"{value / 2**20:.1f}" for value in figures)
            print(f"  {label}: RSS MiB at start, after each round, 3 s later: {mib} "
                  f"({games / elapsed:.0f} games/s)", flush=True)
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", choices=("gtserver", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--scenario", choices=("a", "b1", "b2", "c", "d"), action="append")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, action="append",
                        help="concurrent clients in scenario a (default 1, 32, 128)")
    parser.add_argument("--client-processes", type=int, default=4,
                        help="load processes in scenario a")
    parser.add_argument("--waiters", type=int, default=10_000)
    parser.add_argument("--per-session", type=int, default=100,
                        help="players per Chat session in scenario b2")
    parser.add_argument("--games", type=int, default=20_000,
                        help="finished sessions in scenario c")
    parser.add_argument("--metrics-cost", type=int, metavar="ROUNDS",
                        help="scenario a with metrics on against metrics off, ROUNDS "
                             "alternating runs per client count (default clients: 32)")
    parser.add_argument("--profile", metavar="FILE",
                        help="write a cProfile of the server during the b releases")
    options = parser.parse_args()
    if options.serve:
        serve(options.serve)
        return
    raise_file_limit()
    if options.profile:
        os.environ["EOT_BENCH_PROFILE"] = os.path.abspath(options.profile)
    if options.metrics_cost:
        metrics_cost(options.seconds, options.clients or [32], options.client_processes,
                     options.metrics_cost)
        return
    scenarios = options.scenario or ["a", "b1", "b2", "c"]
    if "a" in scenarios:
        scenario_a(options.seconds, options.clients or [1, 32, 128],
                   options.client_processes)
    if "b1" in scenarios:
        scenario_b(options.waiters, 1)
    if "b2" in scenarios:
        scenario_b(options.waiters, options.per_session)
    if "c" in scenarios:
        scenario_c(options.games)
    if "d" in scenarios:
        scenario_d(options.seconds, options.clients or [1, 32], options.client_processes)


if __name__ == "__main__":
    main()
