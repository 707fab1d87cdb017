"""Benchmark of ultimate tic-tac-toe on one daemon vs two nodes of a
deployment (not a test).

Both on one PostgreSQL database (the test suite's throwaway cluster). The
load is bench/uttt.py's: USERS registered users pair up and play scripted
games back to back (named challenges), in ``--clients`` load processes.

  one node    a single daemon (no ``--node``), every player on it;
  two nodes, players split
              ``--node a`` and ``--node b``; the two players of every game
              are on different nodes (the challenger's node is the match's
              home, games alternate between the homes), so every move
              crosses the bus: a move by the home's player is broadcast to
              the other node, a move by the other player is forwarded to
              the home and its update broadcast back;
  two nodes, games local
              both players of a game on one node (half the games on each):
              nothing needs the bus, but every change is still broadcast.

For each: (a) moves/s flat out, (b) p50/p99 from sending a move to the
opponent's socket receiving its match_update at PACE moves/s offered, split
by mover (the home's player: one bus hop to the opponent; the other: two),
and the servers' CPU per move (all nodes together, 100% = one core).

    python bench/cluster_uttt.py [--users 200] [--pace 500]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import uttt as single  # noqa: E402  (bench/uttt.py)


def child(arguments: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), *arguments],
                            cwd=ROOT, **kwargs)


def start_server(url: str, node: str | None, hash_cost: int) -> tuple[subprocess.Popen, int]:
    port = single.free_port()
    arguments = ["--phase", "serve", "--port", str(port), "--url", url,
                 "--hash-cost", str(hash_cost)]
    if node is not None:
        arguments += ["--node", node]
    server = child(arguments, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        with single.socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return server, port
        if server.poll() is not None:
            raise SystemExit("server failed: " + server.stderr.read().decode()[-3000:])
        time.sleep(0.1)
    server.kill()
    raise SystemExit("server did not start")


def load(name: str, ports: list[int], servers: list[subprocess.Popen], options: Any,
         directory: str, split: bool) -> dict:
    """Run the load processes together; the servers' CPU meanwhile."""
    go_file = os.path.join(directory, f"go-{name}-{ports[0]}")
    duration = options.duration if name == "load" else options.latency_duration
    children = [child(["--phase", name, "--ports", ",".join(map(str, ports)),
                       "--users", str(options.users), "--duration", str(duration),
                       "--pace", str(options.pace), "--clients", str(options.clients),
                       "--part", str(part), "--go-file", go_file,
                       *([] if split else ["--same-node"])],
                      stdout=subprocess.PIPE, text=True) for part in range(options.clients)]
    for process in children:
        if process.stdout.readline().strip() != "ready":
            raise SystemExit(f"load process failed: {process.wait()}")
    open(go_file, "w").close()
    time.sleep(2.0)                                  # the load processes' warm-up
    before = [single.process_cpu(server.pid) for server in servers]
    time.sleep(duration)
    cpu = sum(single.process_cpu(server.pid) - was
              for server, was in zip(servers, before, strict=True))
    parts = []
    for process in children:
        output, _ = process.communicate()
        if process.returncode:
            raise SystemExit(f"load process failed: {process.returncode}")
        parts.append(json.loads(output.strip().splitlines()[-1]))
    figures = single.summarise(parts, cpu)
    for mover in (0, 1):
        values = sorted(v for part in parts for v in part["by_mover"][mover])
        figures[f"p99_mover{mover}_ms"] = (values[min(len(values) - 1, int(0.99 * len(values)))]
                                           * 1000 if values else float("nan"))
        figures[f"p50_mover{mover}_ms"] = (values[len(values) // 2] * 1000 if values
                                           else float("nan"))
    return figures


def run_setup(label: str, nodes: list[str | None], options: Any, directory: str,
              split: bool = True) -> dict:
    from tests.pgcluster import shared_cluster
    url = shared_cluster().create_database()
    servers, ports = [], []
    try:
        for node in nodes:
            server, port = start_server(url, node, options.hash_cost)
            servers.append(server)
            ports.append(port)
        time.sleep(2.0)                               # every node sees the others
        results = {"label": label,
                   "flat": load("load", ports, servers, options, directory, split),
                   "paced": load("paced", ports, servers, options, directory, split)}
    finally:
        for server in servers:
            single.stop_child(server)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--latency-duration", type=float, default=10.0)
    parser.add_argument("--pace", type=float, default=500.0,
                        help="offered moves/s in total for the latency run (b)")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--hash-cost", type=int, default=4)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--node", help=argparse.SUPPRESS)
    parser.add_argument("--part", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--go-file", help=argparse.SUPPRESS)
    parser.add_argument("--same-node", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()

    if options.phase == "serve":
        profile = os.environ.get("BENCH_PROFILE")    # a directory for cProfile output
        if not profile:
            return single.serve_gtserver(options.port, options.url, options.hash_cost,
                                         options.node)
        import cProfile

        from twisted.internet import reactor
        profiler = cProfile.Profile()
        path = os.path.join(profile, f"node-{options.node or 'single'}.prof")

        def stop() -> None:
            profiler.disable()
            profiler.dump_stats(path)

        reactor.addSystemEventTrigger("before", "shutdown", stop)
        profiler.enable()
        return single.serve_gtserver(options.port, options.url, options.hash_cost,
                                     options.node)
    if options.phase in ("load", "paced"):
        pace = (options.users // 2) / options.pace if options.phase == "paced" else None
        ports = [int(port) for port in options.ports.split(",")]
        print(json.dumps(single.run_load(ports, options.users, options.duration, pace,
                                         "benchpw", "bench", options.part, options.clients,
                                         options.go_file, not options.same_node)))
        return None

    print(f"{options.users} users, {options.users // 2} games in parallel, PostgreSQL, "
          f"{os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="gtserver-bench-") as directory:
        setups = [run_setup("one daemon", [None], options, directory),
                  run_setup("two nodes, players split", ["a", "b"], options, directory),
                  run_setup("two nodes, games local", ["a", "b"], options, directory,
                            split=False)]
    print(f"{'setup':<26} {'moves/s':>8} {'CPU/move':>9} | paced {options.pace:.0f}/s: "
          f"{'p50':>6} {'p99':>6} {'p99 home mover':>15} {'p99 other mover':>16} {'CPU':>5}")
    for setup in setups:
        flat, paced = setup["flat"], setup["paced"]
        print(f"{setup['label']:<26} {flat['moves_per_s']:>8.0f} "
              f"{flat['server_cpu'] / flat['moves_per_s'] * 1000:>7.2f}ms | "
              f"{'':>12}{paced['p50_ms']:>6.2f} {paced['p99_ms']:>6.2f} "
              f"{paced['p99_mover0_ms']:>15.2f} {paced['p99_mover1_ms']:>16.2f} "
              f"{paced['server_cpu']:>5.0%}")
        for run in (flat, paced):
            if run["refused"] or run["requests_refused"]:
                print(f"  {setup['label']}: {run['refused']} moves and "
                      f"{run['requests_refused']} match requests refused")
    print("(latencies in ms, from sending a move to the opponent's socket receiving it; "
          "CPU: all server processes, 100% = one core; paced moves/s: "
          + ", ".join(f"{s['paced']['moves_per_s']:.0f}" for s in setups) + ")")


if __name__ == "__main__":
    main()
