"""``twistd gtserver``: command-line options and the service they describe.

The listeners are whatever wire protocols are installed as plugins; each may
add options of its own, so ``Options`` is built from the plugins found.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import endpoints
from twisted.python import usage

from gtserver import __version__
from gtserver.core import Core
from gtserver.core.accounts import DAY, Lifetimes
from gtserver.core.login import LoginOptions
from gtserver.core.settings import DEFAULT_DB, CoreSettings
from gtserver.logs import FORMATS, DaemonLog
from gtserver.option_types import positive, read_database_url
from gtserver.provenance import describe_run
from gtserver.registry import (
    PluginError,
    configured_games,
    game_options,
    games,
    plugin_migrations,
    wire_protocols,
)
from gtserver.service import (
    GtserverService,
    ListenerService,
    exit_after_shutdown,
    exit_zero_on_sigterm,
    reload_on_sighup,
)
from gtserver.store import (
    DEFAULT_TIMEOUT,
    BadDatabaseURL,
    open_store,
    timeout_seconds,
    validate_url,
)

OFF = "off"
LIFETIMES = Lifetimes()


def log_format(text: str) -> str:
    if text not in FORMATS:
        raise ValueError(f"--log-format must be one of {', '.join(FORMATS)}, got {text!r}")
    return text


class BaseOptions(LoginOptions):
    synopsis = "[--port NAME=ENDPOINT ...] [--db URL] [options]"
    longdesc = (
        "Runs the gtserver game server: every installed wire protocol on its "
        "endpoints, sharing one store of accounts, matches and research events. "
        "ENDPOINT is any Twisted server endpoint string: tcp:PORT, "
        "ssl:PORT:privateKey=KEY.pem:certKey=CERT.pem, unix:PATH, "
        "systemd:domain=INET:index=N.")

    optParameters: list[list[Any]] = [
        ["db", None, None,
         "Database URL: sqlite:PATH, sqlite::memory: or "
         f"postgresql://user:password@host:port/database [default: {DEFAULT_DB}]."],
        ["db-timeout", None, DEFAULT_TIMEOUT,
         "Seconds a database operation may take before it fails as unavailable.",
         timeout_seconds],
        ["db-file", None, None,
         "File holding the database URL instead of --db, so that a password is not "
         "on the command line (where ps shows it)."],
        ["account-idle-days", None, LIFETIMES.account / DAY,
         "Delete accounts idle this many days.", positive(float, "account-idle-days")],
        ["session-idle-days", None, LIFETIMES.session / DAY,
         "Expire sessions idle this many days.", positive(float, "session-idle-days")],
        ["temporary-idle", None, LIFETIMES.temporary,
         "Expire temporary users and sessions idle this many seconds.",
         positive(float, "temporary-idle")],
        ["expiry-interval", None, LIFETIMES.check_interval, "Seconds between expiry checks.",
         positive(float, "expiry-interval")],
        ["node", None, None,
         "This daemon's name in a deployment of several sharing one PostgreSQL "
         "database (see docs/cluster.md); none for a single daemon."],
        ["lease-ttl", None, CoreSettings.lease_ttl,
         "With --node: seconds a node's leases (its rooms, sessions, queue) outlive its "
         "last renewal, so how soon the other nodes take over from one that died.",
         positive(float, "lease-ttl")],
        ["lease-renew", None, CoreSettings.lease_renew,
         "With --node: seconds between renewals of a node's leases (under --lease-ttl).",
         positive(float, "lease-renew")],
        ["hash-cost", None, CoreSettings.hash_cost, "scrypt password hash cost, as log2(n).",
         int],
        ["hash-threads", None, CoreSettings.hash_threads,
         "Threads that compute password hashes (each needs 16 MiB at --hash-cost 14 "
         "while it hashes); more logins wait for one.", positive(int, "hash-threads")],
        ["log-format", None, "text",
         "text, or json: one JSON object a line (time, level, namespace, message, "
         "fields), written where twistd's --logfile says.", log_format],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["port"] = []
        self._refused = False

    def parseOptions(self, options: list[str] | None = None) -> None:
        try:
            super().parseOptions(options)
        except usage.UsageError:
            self._refused = True  # twistd prints getUsage() before the reason
            raise

    def getUsage(self, width: int | None = None) -> str:
        """The full help, or after a refused command line a one-line hint."""
        if self._refused:
            return "Run 'twistd gtserver --help' for the options."
        return super().getUsage(width)

    def opt_port(self, value: str) -> None:
        """NAME=ENDPOINT: serve protocol NAME on ENDPOINT (repeatable). Naming a protocol replaces its default endpoint, naming it again adds one, NAME=off disables it."""  # noqa: E501
        name, sep, endpoint = value.partition("=")
        if not sep or not name or not endpoint:
            raise usage.UsageError(f"--port wants NAME=ENDPOINT, got {value!r}")
        self["port"].append((name.strip(), endpoint.strip()))

    opt_p = opt_port

    def opt_version(self) -> None:
        """Print the version and exit."""
        print(f"gtserver {__version__}")
        raise SystemExit(0)

    def postOptions(self) -> None:
        if self["db-file"] is not None:
            if self["db"] is not None:
                raise usage.UsageError("give --db or --db-file, not both")
            try:
                self["db"] = read_database_url(self["db-file"])
            except ValueError as error:
                raise usage.UsageError(str(error)) from None
        elif self["db"] is None:
            self["db"] = DEFAULT_DB
        try:
            validate_url(self["db"])
        except BadDatabaseURL as error:
            raise usage.UsageError(str(error)) from None
        twistd = self.parent
        if self["log-format"] != "text" and twistd is not None and (
                twistd.get("logger") or twistd.get("syslog")):
            raise usage.UsageError("--log-format applies to twistd's --logfile, "
                                   "not to --logger or --syslog")
        if not 4 <= self["hash-cost"] <= 20:
            raise usage.UsageError("--hash-cost must be between 4 and 20")
        if self["node"] is not None and self["db"].startswith("sqlite:"):
            raise usage.UsageError("--node needs a PostgreSQL --db: SQLite serves a single "
                                   "node (see docs/cluster.md)")
        if self["lease-renew"] >= self["lease-ttl"]:
            raise usage.UsageError(
                f"--lease-renew ({self['lease-renew']:g} s) must be shorter than --lease-ttl "
                f"({self['lease-ttl']:g} s), or leases expire between renewals")
        self["listeners"] = resolve_listeners(self["port"], self.protocols)

    #: The installed wire protocols, set on the class built by make_options_class.
    protocols: dict[str, Any] = {}


def resolve_listeners(ports: list[tuple[str, str]], protocols: dict[str, Any]
                      ) -> dict[str, list[str]]:
    """Endpoint strings per protocol after applying ``--port`` to the defaults."""
    listeners = {name: list(plugin.default_endpoints) for name, plugin in protocols.items()}
    named: set[str] = set()
    for name, endpoint in ports:
        if name not in protocols:
            known = ", ".join(sorted(protocols)) or "none installed"
            raise usage.UsageError(f"unknown listener {name!r} in --port (known: {known})")
        if name not in named:
            listeners[name] = []
            named.add(name)
        if endpoint == OFF:
            listeners[name] = []
            continue
        check_endpoint(endpoint)
        listeners[name].append(endpoint)
    return listeners


def check_endpoint(description: str) -> None:
    """Raise UsageError unless ``description`` is a usable server endpoint."""
    from twisted.internet import reactor

    try:
        endpoints.serverFromString(reactor, description)
    except Exception as error:  # the parsers raise many kinds of errors
        raise usage.UsageError(f"bad endpoint {description!r}: {error}") from None


def make_options_class(protocols: dict[str, Any] | None = None,
                       installed_games: dict[str, Any] | None = None) -> type[BaseOptions]:
    """An Options class with the parameters and flags of every installed protocol
    (or of ``protocols``, a mapping of listener name to IWireProtocol) and of
    every installed game (or of ``installed_games``)."""
    if protocols is None:
        protocols = wire_protocols()
    if installed_games is None:
        installed_games = games()
    parameters = list(BaseOptions.optParameters)
    flags: list[list[Any]] = []
    aliases: dict[str, Any] = {}

    def add_alias(alias: str, handler: Any) -> None:
        if alias in aliases:
            raise ValueError(f"option alias {alias!r} is given twice")
        aliases[alias] = handler

    for name in sorted(protocols):
        plugin = protocols[name]
        for long_name, default, help_text, coerce, *old_names in getattr(plugin, "options", ()):
            parameters.append([long_name, None, default, f"[{name}] {help_text}", coerce])
            for alias in old_names[0] if old_names else ():
                add_alias(alias, parameter_alias(long_name, coerce))
        for long_name, help_text, *old_names in getattr(plugin, "flags", ()):
            flags.append([long_name, None, f"[{name}] {help_text}"])
            for alias in old_names[0] if old_names else ():
                add_alias(alias, flag_alias(long_name))
    add_game_options(parameters, add_alias, installed_games)
    taken = {entry[0] for entry in parameters + flags} | {"port", "p", "version", "help"}
    clashes = sorted(set(aliases) & taken)
    if clashes:
        raise ValueError(f"option aliases clash with options: {', '.join(clashes)}")
    listing = "; ".join(
        f"{name} ({protocols[name].description}, default "
        f"{' '.join(protocols[name].default_endpoints) or 'off'})"
        for name in sorted(protocols))
    handlers = {"opt_" + alias.replace("-", "_"): handler for alias, handler in aliases.items()}
    return type("Options", (BaseOptions,), {
        "optParameters": parameters, "optFlags": flags, "protocols": protocols,
        "longdesc": BaseOptions.longdesc + " Listeners: " + listing + ".", **handlers})


def add_game_options(parameters: list[list[Any]], add_alias: Any,
                     installed_games: dict[str, Any]) -> None:
    """Append the games' options (see :func:`gtserver.registry.game_options`)."""
    taken = {entry[0] for entry in parameters}
    for long_name, default, help_text, coerce, *old_names in game_options(installed_games):
        if long_name in taken:
            raise PluginError(f"game option --{long_name} clashes with an option of the "
                              "daemon or of a wire protocol")
        parameters.append([long_name, None, default, help_text, coerce])
        for alias in old_names[0] if old_names else ():
            add_alias(alias, parameter_alias(long_name, coerce))


def parameter_alias(long_name: str, coerce: Any) -> Any:
    """An ``opt_`` method: another name of parameter ``long_name``."""

    def handler(self: usage.Options, value: str) -> None:
        usage.CoerceParameter(self, coerce or str).dispatch(long_name, value)

    handler.__doc__ = f"Old name of --{long_name}."
    return handler


def flag_alias(long_name: str) -> Any:
    """An ``opt_`` method: another name of flag ``long_name``."""

    def handler(self: usage.Options) -> None:
        self[long_name] = 1

    handler.__doc__ = f"Old name of --{long_name}."
    return handler


def installed_options_class() -> type[BaseOptions]:
    """The Options of the installed plugins; if a plugin is broken or clashes
    with another, every command line (--help too) is refused with the reason."""
    try:
        return make_options_class()
    except (PluginError, ValueError) as error:
        reason = str(error)

    class Refused(BaseOptions):
        def parseOptions(self, options: list[str] | None = None) -> None:
            self._refused = True
            raise usage.UsageError(f"cannot start: {reason}")

    return Refused


Options = installed_options_class()


def set_up_plugins(options: usage.Options, store: Any) -> dict[str, Any]:
    """Give ``store`` the migrations of every installed plugin and return this
    service's game table: every game, configured once from ``options`` (a game
    installed since the options were parsed takes its options' defaults)."""
    installed_games = games()
    for namespace, migrations in plugin_migrations(options.protocols, installed_games).items():
        store.add_migrations(namespace, migrations)
    return configured_games(options, installed_games)


def build_service(options: usage.Options, reactor: Any = None,
                  on_fatal: Any = None, freeze_heap: bool = False) -> GtserverService:
    """The daemon's service tree for parsed options."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor
        reactor = default_reactor
    settings = CoreSettings.from_options(options)
    store = open_store(settings.db, reactor, timeout=settings.db_timeout)
    core = Core(store, reactor, settings, games=set_up_plugins(options, store), reactor=reactor)
    listeners = []
    protocols = options.protocols
    for name, endpoint_strings in sorted(options["listeners"].items()):
        if not endpoint_strings:
            continue
        plugin = protocols[name]
        factory = plugin.build_factory(core, plugin.settings(options))
        listeners.extend(ListenerService(name, plugin.description, endpoint, factory, reactor)
                         for endpoint in endpoint_strings)
    run = describe_run(options, protocols, core.games)
    return GtserverService(store, core, listeners, on_fatal=on_fatal, freeze_heap=freeze_heap,
                           run_description=run)


def makeService(options: usage.Options) -> GtserverService:
    """Entry point of the twistd plugin."""
    from twisted.internet import reactor
    exit_zero_on_sigterm(reactor)
    service = build_service(options, reactor, on_fatal=exit_after_shutdown(reactor),
                            freeze_heap=True)
    # twistd's own options (--logfile, --nodaemon), absent when run from a .tac file
    service.daemon_log = DaemonLog.from_twistd_options(options.parent, options["log-format"])
    reload_on_sighup(reactor, service)
    return service
