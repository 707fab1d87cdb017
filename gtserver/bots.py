"""``gtserver-bots``: scripted random players for any gtserver listener.

Pilots a session before participants come, and puts a load on a server::

    gtserver-bots --listener vr --bots 20 --rate 2 --duration 60
    gtserver-bots --listener uttt --port 5556 --bots 10 --rate 1 --duration 300
    gtserver-bots --listener eot --game TicTacToe --bots 8 --rate 5 --duration 30

Each bot acts about ``--rate`` times a second until ``--duration`` seconds
have passed, then everything stops and a summary is printed (``--json`` for
one JSON object): actions sent, replies received, errors, and the latency
of the actions that have an answer (p50, p99).

- ``vr``: bots log in (``--password``; an unknown name registers, a server
  in ``--vr-any-password`` mode takes any), join a room of ``--group`` bots
  and chat (latency: until their own line comes back), press buttons, send
  poses and ping.
- ``uttt``: bots log in (registering) or use temporary sessions
  (``--temporary``), queue for a random opponent, play random legal moves to
  the end (latency: until the mover's match_update), then queue again.
- ``eot``: bots join ``auto`` sessions of ``--game`` and call ``state()``
  every round: TicTacToe bots pair up and play random free cells; Echo bots
  echo words and end with ``quit``; Chat bots, ``--group`` to a session,
  take a name and post lines. A finished game is followed by a new session.

Bots only ever connect to the host given (127.0.0.1 by default).
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import DeferredList, ensureDeferred
from twisted.internet.task import deferLater, react
from twisted.python import usage

from gtserver.client import IllegalMove
from gtserver.eot.client import AsyncGameClient
from gtserver.uttt.client import MoveRefused, UtttClient, UtttError, legal_moves
from gtserver.vr.client import VRClient, VRError
from gtserver.wsclient import ConnectionClosed

LISTENERS = {"vr": 42069, "uttt": 5556, "eot": 4711}
#: Seconds an action may wait for its answer. Not cut short by the deadline,
#: so that every action sent is answered (or counted as an error).
ANSWER_TIMEOUT = 10.0
#: Longest pause, in seconds, before a failed bot starts over.
MAX_BACKOFF = 30.0
EOT_GAMES = ("TicTacToe", "Echo", "Chat")
WORDS = ("cooperate", "defect", "hello", "ready", "again", "nice move", "ok", "wait")


@dataclass
class Tally:
    """What every bot of a run did, added up."""

    actions: int = 0
    replies: int = 0
    errors: int = 0
    games: int = 0
    logins: int = 0
    latencies: list[float] = field(default_factory=list)
    error_kinds: Counter = field(default_factory=Counter)
    sent: Counter = field(default_factory=Counter)

    def act(self, kind: str) -> None:
        self.actions += 1
        self.sent[kind] += 1

    def answered(self, started: float, now: float) -> None:
        self.replies += 1
        self.latencies.append(now - started)

    def failed(self, error: BaseException) -> None:
        self.errors += 1
        self.error_kinds[type(error).__name__] += 1

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {"actions": self.actions, "replies": self.replies, "errors": self.errors,
                "games": self.games, "logins": self.logins,
                "latency_p50_ms": _percentile_ms(ordered, 0.50),
                "latency_p99_ms": _percentile_ms(ordered, 0.99),
                "error_kinds": dict(self.error_kinds), "sent": dict(self.sent)}


def _percentile_ms(ordered: list[float], fraction: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000, 3)


class Options(usage.Options):
    synopsis = "Usage: gtserver-bots --listener vr|uttt|eot [options]"
    longdesc = ("Random bots for a gtserver listener: they act about --rate times a second "
                "each, stop after --duration seconds and print a summary. See docs/clients.md.")
    optParameters = [
        ["listener", "l", None, "Which protocol to speak: vr, uttt or eot."],
        ["host", None, "127.0.0.1", "Server address."],
        ["port", "p", None, "Listener port (vr 42069, uttt 5556, eot 4711).", int],
        ["url", None, None, "ws:// or wss:// address (vr, uttt), instead of host and port."],
        ["bots", "n", 4, "How many bots.", int],
        ["rate", "r", 1.0, "Actions a second per bot.", float],
        ["duration", "d", 10.0, "Seconds to run.", float],
        ["game", "g", "TicTacToe", f"eot game: {', '.join(EOT_GAMES)}."],
        ["group", None, 4, "Bots per VR room or per Chat session.", int],
        ["seed", None, None, "Seed of the bots' random choices.", int],
        ["name-prefix", None, "bot", "Bot names are this prefix and a number."],
        ["password", None, "bot-password", "Password of the bots' accounts (vr, uttt)."],
        ["reconnect-every", None, 0.0,
         "Seconds after which a vr/uttt bot reconnects (0: never).", float],
    ]
    optFlags = [
        ["temporary", None, "uttt: temporary sessions instead of accounts."],
        ["json", None, "Print the summary as one JSON object."],
    ]

    def postOptions(self) -> None:
        if self["listener"] not in LISTENERS:
            raise usage.UsageError("--listener must be vr, uttt or eot")
        if not 1 <= self["bots"] <= 10_000:
            raise usage.UsageError("--bots must be 1 to 10000")
        if not 0 < self["rate"] <= 1000:
            raise usage.UsageError("--rate must be above 0 and at most 1000")
        if not 0 < self["duration"] <= 7 * 86400:
            raise usage.UsageError("--duration must be above 0 and at most a week")
        if not 1 <= self["group"] <= 100:
            raise usage.UsageError("--group must be 1 to 100")
        if self["listener"] == "eot" and self["game"] not in EOT_GAMES:
            raise usage.UsageError(f"--game must be one of {', '.join(EOT_GAMES)}")
        if self["reconnect-every"] < 0:
            raise usage.UsageError("--reconnect-every must not be negative")
        if self["port"] is None:
            self["port"] = LISTENERS[self["listener"]]
        if self["url"] is None:
            self["url"] = f"ws://{self['host']}:{self['port']}/"


class Run:
    """One run: the shared tally, the deadline and pacing for every bot."""

    def __init__(self, reactor: Any, options: Any) -> None:
        self.reactor = reactor
        self.options = options
        self.tally = Tally()
        self.rng = random.Random(options["seed"])
        self.deadline = reactor.seconds() + options["duration"]
        self.interval = 1.0 / options["rate"]

    def now(self) -> float:
        return self.reactor.seconds()

    def left(self) -> float:
        return self.deadline - self.now()

    def over(self) -> bool:
        return self.left() <= 0

    def wait(self, cap: float = 10.0) -> float:
        """How long an answer may take: never past the deadline."""
        return max(0.05, min(cap, self.left()))

    async def pause(self, seconds: float | None = None) -> None:
        """Sleep one pacing interval (jittered), or ``seconds``, never past the deadline."""
        if seconds is None:
            seconds = self.interval * self.rng.uniform(0.5, 1.5)
        seconds = min(seconds, self.left())
        if seconds > 0:
            await deferLater(self.reactor, seconds, lambda: None)

    def name(self, index: int) -> str:
        return f"{self.options['name-prefix']}{index}"

    async def play(self) -> dict[str, Any]:
        bot = {"vr": vr_bot, "uttt": uttt_bot, "eot": eot_bot}[self.options["listener"]]
        await DeferredList([ensureDeferred(self._guarded(bot, index))
                            for index in range(self.options["bots"])])
        return self.tally.summary()

    async def _guarded(self, bot: Any, index: int) -> None:
        # Stagger the start so N bots do not all log in at one instant.
        await self.pause(self.rng.uniform(0, min(1.0, self.options["duration"] / 10)))
        failures = 0
        while not self.over():
            started = self.now()
            try:
                await bot(self, index)
                return
            except Exception as error:   # a bot that fails starts over until the deadline
                if not self.over():          # what the deadline cuts short is no error
                    self.tally.failed(error)
            # Back off while failures repeat (a throttled login, a server away).
            failures = 1 if self.now() - started > MAX_BACKOFF else failures + 1
            await self.pause(min(MAX_BACKOFF, self.interval * 2 ** failures)
                             * self.rng.uniform(0.5, 1.0))


# vr

async def vr_bot(run: Run, index: int) -> None:
    options, tally = run.options, run.tally
    name = run.name(index)
    room = f"{options['name-prefix']}-room-{index // options['group']}"
    while not run.over():
        client = await VRClient.connect(options["url"], run.reactor, timeout=ANSWER_TIMEOUT)
        try:
            await client.login(name, options["password"])
            tally.logins += 1
            await client.join(room)
            connected = run.now()
            every = options["reconnect-every"]
            while not run.over() and not (every and run.now() - connected >= every):
                await run.pause()
                if run.over():
                    break
                await vr_action(run, client, room)
                client.pending()      # others' events: read, not kept
        finally:
            await _closed(client.close())


async def vr_action(run: Run, client: VRClient, room: str) -> None:
    tally, roll = run.tally, run.rng.random()
    started = run.now()
    try:
        if roll < 0.45:
            tally.act("msg")
            line = f"{run.rng.choice(WORDS)} #{tally.actions}"
            await client.msg(room, line)
            while (await client.next_event("msg", room=room, user=client.user,
                                           timeout=ANSWER_TIMEOUT)).data != line:
                pass
        elif roll < 0.85:
            tally.act("transform")
            await client.transform(room, pos=[run.rng.uniform(-2, 2) for _ in range(3)],
                                   rot=[run.rng.uniform(0, 360) for _ in range(3)])
            return   # no answer: the server broadcasts poses at its ticks
        elif roll < 0.95:
            tally.act("button")
            await client.button(room, run.rng.choice(("cooperate", "defect")))
            await client.next_event("button", room=room, user=client.user,
                                    timeout=ANSWER_TIMEOUT)
        else:
            tally.act("ping")
            await client.ping()
    except (VRError, TimeoutError) as error:
        tally.failed(error)
        return
    tally.answered(started, run.now())


# uttt

async def uttt_bot(run: Run, index: int) -> None:
    options, tally = run.options, run.tally
    name = run.name(index)
    session = None
    while not run.over():
        client = await UtttClient.connect(options["url"], run.reactor, timeout=ANSWER_TIMEOUT)
        try:
            if session is not None:
                greeting = await client.reconnect(session)
            elif options["temporary"]:
                greeting = await client.temp_session(name)
            else:
                greeting = await client.login(name, options["password"])
            session = greeting.session
            tally.logins += 1
            await uttt_games(run, client)
        finally:
            await _closed(client.close())


async def uttt_games(run: Run, client: UtttClient) -> None:
    """Play random matches until the deadline or the time to reconnect."""
    tally, every = run.tally, run.options["reconnect-every"]
    connected = run.now()
    queued = False
    while not run.over() and not (every and run.now() - connected >= every):
        client.pending()
        open_matches = client.open_matches()
        if open_matches:
            queued = False
        else:
            if not queued:
                tally.act("match_request")
                started = run.now()
                answer = await client.match_request(None)
                tally.answered(started, run.now())
                queued = answer != "match started"
                continue
            try:
                await client.next_match(timeout=run.wait())
            except TimeoutError:
                pass
            continue
        update = open_matches[0]
        if update["match_state"]["current_player"] != client.user:
            try:
                await client.next_match(update["id"], timeout=run.wait())
            except TimeoutError:
                pass
            continue
        await run.pause()
        if run.over():
            break
        moves = legal_moves(update)
        tally.act("move")
        started = run.now()
        try:
            update = await client.move(update["id"], *run.rng.choice(moves))
        except (MoveRefused, UtttError, TimeoutError) as error:
            tally.failed(error)
            continue
        tally.answered(started, run.now())
        if update["match_state"]["game_over"]:
            tally.games += 1


# eot

async def eot_bot(run: Run, index: int) -> None:
    options = run.options
    game_name = options["game"]
    players = {"TicTacToe": 2, "Echo": 1, "Chat": options["group"]}[game_name]
    while not run.over():
        game = AsyncGameClient(run.reactor, options["host"], options["port"], game_name,
                               session="auto", players=players, name=run.name(index),
                               request_timeout=run.wait(60.0))
        try:
            await game.join()
        except TimeoutError:
            continue   # nobody came to fill the session before the deadline
        run.tally.logins += 1
        play = {"TicTacToe": eot_tictactoe, "Echo": eot_echo, "Chat": eot_chat}[game_name]
        await play(run, game, index)


async def _eot_move(run: Run, game: AsyncGameClient, **arguments: Any) -> None:
    """A timed move, counted as an action."""
    run.tally.act("move")
    game.request_timeout = ANSWER_TIMEOUT
    started = run.now()
    try:
        await game.move(**arguments)
    except IllegalMove as error:
        run.tally.failed(error)
        return
    run.tally.answered(started, run.now())


async def _eot_state(run: Run, game: AsyncGameClient, after_move: bool = False
                     ) -> dict[str, Any]:
    """A state poll. Right after a move it answers at once; otherwise its long
    wait ends at the deadline."""
    game.request_timeout = ANSWER_TIMEOUT if after_move else run.wait(60.0)
    state = await game.state()
    run.tally.replies += 1
    return state


async def eot_tictactoe(run: Run, game: AsyncGameClient, index: int) -> None:
    state = await _eot_state(run, game)
    while not state["gameover"] and not run.over():
        if game.player_id not in state["current"]:
            state = await _eot_state(run, game)
            continue
        await run.pause()
        if run.over():
            return
        free = [cell for cell, owner in enumerate(state["board"]) if owner == -1]
        await _eot_move(run, game, position=run.rng.choice(free))
        state = await _eot_state(run, game, after_move=True)
        if state["gameover"]:
            run.tally.games += 1        # counted by the player who ended it


async def eot_echo(run: Run, game: AsyncGameClient, index: int) -> None:
    rounds = run.rng.randint(5, 20)
    for round_number in range(rounds):
        await run.pause()
        if run.over():
            return
        word = "quit" if round_number == rounds - 1 else run.rng.choice(WORDS)
        await _eot_move(run, game, msg=word)
        if (await _eot_state(run, game, after_move=True))["gameover"]:
            run.tally.games += 1
            return


async def eot_chat(run: Run, game: AsyncGameClient, index: int) -> None:
    await _eot_move(run, game, name=run.name(index))
    for _ in range(run.rng.randint(5, 15)):
        await _eot_state(run, game, after_move=True)
        await run.pause()
        if run.over():
            return
        line = f"{run.rng.choice(WORDS)} from {run.name(index)}"
        await _eot_move(run, game, message=line)
    run.tally.games += 1   # a chat never ends: the bot moves on to another session


async def _closed(closing: Any) -> None:
    try:
        await closing
    except ConnectionClosed:
        pass


# command line

def format_summary(options: Any, summary: dict[str, Any]) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} ms"
    target = options["url"] if options["listener"] != "eot" else \
        f"{options['host']}:{options['port']} ({options['game']})"
    lines = [
        f"gtserver-bots: {options['listener']} at {target}, {options['bots']} bots, "
        f"{options['rate']:g} actions/s each, {options['duration']:g} s",
        f"  actions sent  {summary['actions']}",
        f"  replies       {summary['replies']}",
        f"  errors        {summary['errors']}"
        + (f"  ({', '.join(f'{k} {v}' for k, v in sorted(summary['error_kinds'].items()))})"
           if summary["error_kinds"] else ""),
        f"  logins/joins  {summary['logins']}",
        f"  games ended   {summary['games']}",
        f"  latency p50   {ms(summary['latency_p50_ms'])}",
        f"  latency p99   {ms(summary['latency_p99_ms'])}",
    ]
    return "\n".join(lines)


async def run_bots(reactor: Any, options: Any) -> dict[str, Any]:
    """Run the bots ``options`` describe; returns the summary dict."""
    return await Run(reactor, options).play()


def main(argv: list[str] | None = None) -> None:
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as error:
        sys.exit(f"gtserver-bots: {error}\nTry gtserver-bots --help.")

    async def running(reactor: Any) -> None:
        summary = await run_bots(reactor, options)
        if options["json"]:
            print(json.dumps(summary, sort_keys=True))
        else:
            print(format_summary(options, summary))
        sys.stdout.flush()
    react(lambda reactor: ensureDeferred(running(reactor)))


if __name__ == "__main__":
    main()
