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
from gtserver.core.passwords import PasswordHasher
from gtserver.registry import wire_protocols
from gtserver.service import (
    GtserverService,
    ListenerService,
    exit_after_shutdown,
    exit_zero_on_sigterm,
)
from gtserver.store import (
    DEFAULT_TIMEOUT,
    BadDatabaseURL,
    open_store,
    timeout_seconds,
    validate_url,
)

OFF = "off"


class BaseOptions(usage.Options):
    synopsis = "[--port NAME=ENDPOINT ...] [--db URL] [options]"
    longdesc = (
        "Runs the gtserver game server: every installed wire protocol on its "
        "endpoints, sharing one store of accounts, matches and research events. "
        "ENDPOINT is any Twisted server endpoint string: tcp:PORT, "
        "ssl:PORT:privateKey=KEY.pem:certKey=CERT.pem, unix:PATH, "
        "systemd:domain=INET:index=N.")

    optParameters: list[list[Any]] = [
        ["db", None, "sqlite:gtserver.sqlite",
         "Database URL: sqlite:PATH, sqlite::memory: or "
         "postgresql://user:password@host:port/database."],
        ["db-timeout", None, DEFAULT_TIMEOUT,
         "Seconds a database operation may take before it fails as unavailable.",
         timeout_seconds],
        ["account-idle-days", None, 45.0, "Delete accounts idle this many days.", float],
        ["session-idle-days", None, 20.0, "Expire sessions idle this many days.", float],
        ["temporary-idle", None, 3600.0,
         "Expire temporary users and sessions idle this many seconds.", float],
        ["expiry-interval", None, 3600.0, "Seconds between expiry checks.", float],
        ["hash-cost", None, 14, "scrypt password hash cost, as log2(n).", int],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["port"] = []

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
        try:
            validate_url(self["db"])
        except BadDatabaseURL as error:
            raise usage.UsageError(str(error)) from None
        if not 4 <= self["hash-cost"] <= 20:
            raise usage.UsageError("--hash-cost must be between 4 and 20")
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


def make_options_class(protocols: dict[str, Any] | None = None) -> type[BaseOptions]:
    """An Options class with the parameters and flags of every installed protocol
    (or of ``protocols``, a mapping of listener name to IWireProtocol)."""
    if protocols is None:
        protocols = wire_protocols()
    parameters = list(BaseOptions.optParameters)
    flags: list[list[Any]] = []
    for name in sorted(protocols):
        plugin = protocols[name]
        for long_name, default, help_text, coerce in getattr(plugin, "options", ()):
            parameters.append([long_name, None, default, f"[{name}] {help_text}", coerce])
        for long_name, help_text in getattr(plugin, "flags", ()):
            flags.append([long_name, None, f"[{name}] {help_text}"])
    listing = "; ".join(
        f"{name} ({protocols[name].description}, default "
        f"{' '.join(protocols[name].default_endpoints) or 'off'})"
        for name in sorted(protocols))
    return type("Options", (BaseOptions,), {
        "optParameters": parameters, "optFlags": flags, "protocols": protocols,
        "longdesc": BaseOptions.longdesc + " Listeners: " + listing + "."})


Options = make_options_class()


def config_from_options(options: usage.Options) -> dict[str, Any]:
    """The options as a plain mapping, dashes in names turned into underscores."""
    return {str(key).replace("-", "_"): value for key, value in options.items()}


def build_service(options: usage.Options, reactor: Any = None,
                  on_fatal: Any = None, freeze_heap: bool = False) -> GtserverService:
    """The daemon's service tree for parsed options."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor
        reactor = default_reactor
    config = config_from_options(options)
    store = open_store(config["db"], reactor, timeout=config["db_timeout"])
    lifetimes = Lifetimes(account=config["account_idle_days"] * DAY,
                          session=config["session_idle_days"] * DAY,
                          temporary=config["temporary_idle"],
                          check_interval=config["expiry_interval"])
    core = Core(store, reactor, config, PasswordHasher(log2_n=config["hash_cost"]), lifetimes)
    listeners = []
    protocols = options.protocols
    for name, endpoint_strings in sorted(options["listeners"].items()):
        if not endpoint_strings:
            continue
        plugin = protocols[name]
        factory = plugin.build_factory(core, config)
        listeners.extend(ListenerService(name, plugin.description, endpoint, factory, reactor)
                         for endpoint in endpoint_strings)
    return GtserverService(store, core, listeners, on_fatal=on_fatal, freeze_heap=freeze_heap)


def makeService(options: usage.Options) -> GtserverService:
    """Entry point of the twistd plugin."""
    from twisted.internet import reactor
    exit_zero_on_sigterm(reactor)
    return build_service(options, reactor, on_fatal=exit_after_shutdown(reactor),
                         freeze_heap=True)
