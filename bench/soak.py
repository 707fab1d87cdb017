"""Memory soak: a real ``twistd gtserver`` under mixed bot traffic on all three listeners.

Not a test. Run from the checkout::

    python bench/soak.py                  # 30 minutes
    python bench/soak.py --minutes 3      # a quick look

The daemon runs from this checkout on SQLite in a temporary directory (or
``--db URL``), with the default password hash cost, listening on loopback
ports. The bots of ``gtserver-bots`` (run in this process) chat, press
buttons and send poses in VR rooms, play random ultimate tic-tac-toe matches,
and play TicTacToe, Echo and Chat on the game API, reconnecting (and so
logging in again) every ``--reconnect-every`` seconds. The daemon's resident
set size (VmRSS in /proc/PID/status) is sampled every ``--interval`` seconds.

Printed at the end: RSS at the start, after the warm-up, at the end, the
peak, and the least-squares slope in MB/min of the samples after the
warm-up, with the bots' summaries. A flat soak has a slope near 0.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

TWISTD = ("import sys; from twisted.scripts.twistd import run; "
          "sys.argv[0] = 'twistd'; run()")
LISTENING = re.compile(r"listener (vr|uttt|eot) \(.*?\) on tcp:127\.0\.0\.1:(\d+)")


def rss_mb(pid: int) -> float:
    """The resident set size of process ``pid`` in MB (VmRSS)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def slope_per_minute(samples: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(seconds, MB)`` samples, in MB per minute."""
    if len(samples) < 2:
        return None
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_m = sum(m for _, m in samples) / n
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    if spread == 0:
        return None
    return sum((t - mean_t) * (m - mean_m) for t, m in samples) / spread * 60


def start_daemon(directory: str, db: str, hash_cost: int | None
                 ) -> tuple[subprocess.Popen, dict[str, int], str]:
    """Start twistd gtserver; returns the process, the listeners' ports and its log path."""
    log_path = os.path.join(directory, "daemon.log")
    arguments = [sys.executable, "-c", TWISTD, "--nodaemon", "--pidfile=", "gtserver",
                 "--db", db]
    if hash_cost is not None:
        arguments += ["--hash-cost", str(hash_cost)]
    for name in ("vr", "uttt", "eot"):
        arguments += ["--port", f"{name}=tcp:0:interface=127.0.0.1"]
    environment = {**os.environ, "PYTHONPATH": ROOT, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(arguments, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, cwd=directory, env=environment)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with open(log_path, errors="replace") as log:
            text = log.read()
        if "gtserver ready" in text:
            ports = {name: int(port) for name, port in LISTENING.findall(text)}
            if set(ports) == {"vr", "uttt", "eot"}:
                return daemon, ports, log_path
        if daemon.poll() is not None:
            break
        time.sleep(0.2)
    daemon.kill()
    raise SystemExit(f"the daemon did not start; its log:\n{text}")


def bot_runs(arguments: argparse.Namespace, ports: dict[str, int]) -> list[list[str]]:
    """gtserver-bots command lines (without the program name) for the mixed load."""
    seconds = str(arguments.minutes * 60)
    common = ["--rate", str(arguments.rate), "--duration", seconds, "--seed", "7"]
    churn = ["--reconnect-every", str(arguments.reconnect_every)]
    eot_each = max(1, arguments.eot_bots // 3)
    runs = [
        ["--listener", "vr", "--port", str(ports["vr"]), "--bots", str(arguments.vr_bots),
         "--group", "4", "--name-prefix", "soakvr", *churn, *common],
        ["--listener", "uttt", "--port", str(ports["uttt"]),
         "--bots", str(arguments.uttt_bots), "--name-prefix", "soakuttt", *churn, *common],
    ]
    for game in ("TicTacToe", "Echo", "Chat"):
        runs.append(["--listener", "eot", "--port", str(ports["eot"]), "--bots", str(eot_each),
                     "--game", game, "--group", "2", "--name-prefix", f"soak{game.lower()}",
                     *common])
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=2.0, help="minutes (default 2)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--vr-bots", type=int, default=8)
    parser.add_argument("--uttt-bots", type=int, default=6)
    parser.add_argument("--eot-bots", type=int, default=6,
                        help="split over TicTacToe, Echo and Chat")
    parser.add_argument("--rate", type=float, default=2.0, help="actions/s per bot")
    parser.add_argument("--reconnect-every", type=float, default=60.0,
                        help="seconds; vr and uttt bots reconnect and log in again")
    parser.add_argument("--db", default=None, help="database URL (default: SQLite in a "
                        "temporary directory)")
    parser.add_argument("--hash-cost", type=int, default=None,
                        help="the daemon's --hash-cost (default: its own default)")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    arguments = parser.parse_args()

    directory = tempfile.mkdtemp(prefix="gtserver-soak-")
    db = arguments.db or "sqlite:" + os.path.join(directory, "soak.sqlite")
    daemon, ports, log_path = start_daemon(directory, db, arguments.hash_cost)
    try:
        result = run(arguments, daemon.pid, ports)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            exit_code = daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            exit_code = daemon.wait()
    with open(log_path, errors="replace") as log:
        daemon_log = log.read()
    shutil.rmtree(directory, ignore_errors=True)
    report(arguments, result, exit_code, daemon_log)


def run(arguments: argparse.Namespace, pid: int, ports: dict[str, int]) -> dict:
    from twisted.internet import reactor
    from twisted.internet.defer import DeferredList, ensureDeferred
    from twisted.internet.task import LoopingCall

    from gtserver.bots import Options, run_bots

    samples: list[tuple[float, float]] = []
    result: dict = {"samples": samples, "summaries": []}

    async def soak(reactor) -> None:
        started = reactor.seconds()

        def sample() -> None:
            elapsed = reactor.seconds() - started
            samples.append((elapsed, rss_mb(pid)))
            print(f"  {elapsed / 60:6.2f} min  RSS {samples[-1][1]:7.1f} MB", flush=True)

        sampler = LoopingCall(sample)
        sampler.clock = reactor
        sampler.start(arguments.interval, now=True)
        runs = []
        for command in bot_runs(arguments, ports):
            options = Options()
            options.parseOptions(command)
            runs.append((options, ensureDeferred(run_bots(reactor, options))))
        outcomes = await DeferredList([d for _, d in runs], consumeErrors=True)
        sampler.stop()
        sample()
        for (options, _), (ok, value) in zip(runs, outcomes, strict=True):
            label = options["listener"] + ("" if options["listener"] != "eot"
                                           else f" {options['game']}")
            result["summaries"].append((label, options["bots"],
                                        value if ok else {"failure": str(value)}))

    failures = []
    done = ensureDeferred(soak(reactor))
    done.addErrback(failures.append)
    done.addBoth(lambda _: reactor.stop())
    reactor.run()
    if failures:
        failures[0].raiseException()
    return result


def report(arguments: argparse.Namespace, result: dict, exit_code: int, log: str) -> None:
    samples = result["samples"]
    warm = [(t, m) for t, m in samples if t >= arguments.warmup * 60]
    after_warmup = warm[0] if warm else None
    slope = slope_per_minute(warm)
    figures = {
        "minutes": arguments.minutes,
        "rss_start_mb": round(samples[0][1], 1),
        "rss_after_warmup_mb": None if after_warmup is None else round(after_warmup[1], 1),
        "rss_end_mb": round(samples[-1][1], 1),
        "rss_peak_mb": round(max(m for _, m in samples), 1),
        "slope_after_warmup_mb_per_min": None if slope is None else round(slope, 3),
        "samples": len(samples),
        "daemon_exit_code": exit_code,
        "daemon_tracebacks": log.count("Traceback"),
        "daemon_warnings": len(re.findall(r"#warn\]", log)),
        "bots": {label: summary for label, _bots, summary in result["summaries"]},
    }
    print()
    print(f"soak: {arguments.minutes:g} min, samples every {arguments.interval:g} s, "
          f"warm-up {arguments.warmup:g} min")
    print(f"  RSS start          {figures['rss_start_mb']:7.1f} MB")
    if after_warmup is not None:
        print(f"  RSS after warm-up  {figures['rss_after_warmup_mb']:7.1f} MB "
              f"(at {after_warmup[0] / 60:.1f} min)")
    print(f"  RSS end            {figures['rss_end_mb']:7.1f} MB")
    print(f"  RSS peak           {figures['rss_peak_mb']:7.1f} MB")
    if slope is not None:
        print(f"  slope after warm-up {slope:+.3f} MB/min over {len(warm)} samples")
    print(f"  daemon exit code {exit_code}, {figures['daemon_tracebacks']} tracebacks, "
          f"{figures['daemon_warnings']} warnings in its log")
    for label, bots, summary in result["summaries"]:
        if "failure" in summary:
            print(f"  {label}: failed: {summary['failure']}")
            continue
        print(f"  {label:14} {bots:3} bots: {summary['actions']} actions, "
              f"{summary['replies']} replies, {summary['errors']} errors, "
              f"{summary['games']} games, {summary['logins']} logins/joins, "
              f"p50 {summary['latency_p50_ms']} ms, p99 {summary['latency_p99_ms']} ms")
    if arguments.json:
        print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
