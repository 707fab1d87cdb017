"""The plugin points of gtserver.

Wire protocols and games are found with :func:`twisted.plugin.getPlugins` in
the :mod:`gtserver.plugins` package. The built-in ones register there exactly
as a third-party distribution would, by shipping a module in
``gtserver/plugins/`` that provides one of these interfaces.

Either kind of plugin may also have a ``migrations`` attribute: tables of its
own, as ``(version, statements)`` pairs in a namespace of its own (see
:func:`gtserver.store.schema.check_plugin_migrations`), applied at start.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IWireProtocol(Interface):
    """A wire protocol that can be served on ``--port NAME=ENDPOINT``."""

    name = Attribute("Listener name used with --port, e.g. 'eot'.")
    description = Attribute("One line for --help and the start-up log.")
    default_endpoints = Attribute(
        "Endpoint strings served when --port does not name this protocol.")
    options = Attribute(
        "Extra command-line parameters: a list of (long name, default, help, "
        "coerce) tuples, optionally with a fifth item, a tuple of other (old) "
        "names accepted for the same option. This table is the one place of "
        "their defaults and checks: settings() reads the parsed values.")
    flags = Attribute("Extra command-line flags: a list of (long name, help) tuples, "
                      "optionally with a third item, a tuple of other names.")

    def settings(options):
        """This protocol's settings (best a frozen dataclass), built once.

        @param options: the parsed command line, keyed by long option name
            (C{options["vr-fps"]}); each of this protocol's options and flags
            is there, at its default if the command line does not give it.
        """

    def build_factory(core, settings):
        """Return the IProtocolFactory served on every endpoint of this listener.

        @param core: the shared L{gtserver.core.Core}: typed getters of the
            shared services (C{core.accounts}, C{core.events}, C{core.match_store},
            C{core.ratings}, C{core.friends}, C{core.trusted_proxies}), the
            store, the clock and the reactor; C{core.attach(service)} starts and
            stops a service of this protocol's own with the core.
        @param settings: what L{settings} returned.
        """


class IGameFactory(Interface):
    """A kind of game, chosen by name by clients."""

    name = Attribute("Game name as clients send it, e.g. 'TicTacToe'.")
    min_players = Attribute("Smallest number of seats.")
    max_players = Attribute("Largest number of seats.")

    def new_game(players, rng):
        """A fresh L{IGame} for C{players} seats, drawing chance from C{rng}
        (a L{random.Random})."""

    def restore(data):
        """The L{IGame} that L{IGame.to_data} serialised as C{data}."""


class IConfigurableGameFactory(IGameFactory):
    """A game with command-line options (optional: a plain IGameFactory has none).

    The daemon lists every game's options in ``twistd gtserver --help`` and,
    once per service, replaces each such factory by the copy that
    :meth:`configured_from` returns for the values given; the installed plugin
    object is never changed.
    """

    options = Attribute(
        "Command-line parameters, in the format of IWireProtocol.options: "
        "(long name, default, help, coerce) tuples, optionally with a fifth item, "
        "a tuple of other (old) names. Long names are the full option names: start "
        "them with the game's name (``nim-pile-size``). Games may share an option "
        "by declaring the same tuple; each then receives its value.")

    def configured_from(values):
        """A configured copy of this factory.

        @param values: mapping of each of C{options}' long names to its value
            (the default when the option was not given).
        @raise ValueError: for values the game cannot take.
        """


class IGame(Interface):
    """The pure rules of one game in progress: no I/O, no clock."""

    players = Attribute("Number of seats; seats are numbered 0 to players - 1.")

    def current():
        """The seats that may move now, as a list; empty once the game is over."""

    def is_over():
        """True once the game has ended."""

    def move(seat, **arguments):
        """Apply a move of C{seat}; raise L{gtserver.games.IllegalMove} to refuse."""

    def state(seat):
        """The JSON-ready view of the game that C{seat} may see (a dict)."""

    def outcome():
        """Once over, a score per seat (1 win, 0.5 draw, 0 loss), else None."""

    def to_data():
        """A JSON-ready dict from which the factory's C{restore} rebuilds the game."""
