"""Discovery of wire protocols and games through Twisted's plugin system.

Every plugin found is checked with :func:`zope.interface.verify.verifyObject`
against the interface it claims, and names must be unique: a plugin that does
not meet its interface, or a second plugin with a name already taken, is a
:class:`PluginError` naming the modules involved. Refusing is better than
skipping here: a game or listener that silently vanished (or was silently
replaced by another module's) would only show as clients' errors later.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.plugin import getCache
from zope.interface import Invalid
from zope.interface.interface import InterfaceClass
from zope.interface.verify import verifyObject

from gtserver.interfaces import IConfigurableGameFactory, IGameFactory, IWireProtocol
from gtserver.store.schema import PluginMigrations, check_plugin_migrations


class PluginError(ValueError):
    """An installed plugin is broken or clashes with another one."""


def _plugin_package():
    import gtserver.plugins
    return gtserver.plugins


def find_plugins(interface: InterfaceClass, kind: str, package: Any = None,
                 extensions: tuple[InterfaceClass, ...] = ()) -> dict[str, Any]:
    """Every plugin providing ``interface`` in ``package``, by its ``name``.

    ``kind`` ("wire protocol", "game") names the plugins in error messages.
    Raises PluginError for a plugin that fails ``verifyObject`` (for
    ``interface``, and for each of ``extensions`` that it claims) or whose
    name another plugin already has.
    """
    found: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for dropin in getCache(package or _plugin_package()).values():
        for cached in dropin.plugins:
            origin = f"{dropin.moduleName}.{cached.name}"
            try:
                plugin = interface(cached, None)
            except Exception as error:  # the module's own import error, whatever it is
                raise PluginError(f"{kind} plugin {origin} cannot be loaded: "
                                  f"{type(error).__name__}: {error}") from error
            if plugin is None:
                continue
            for claimed in (interface, *extensions):
                if not claimed.providedBy(plugin):
                    continue
                try:
                    verifyObject(claimed, plugin)
                except Invalid as error:
                    raise PluginError(f"{kind} plugin {origin} does not provide "
                                      f"{claimed.__name__}: {error}") from None
            name = plugin.name
            if found.get(name) is plugin:
                continue            # one object under two names of a module
            if name in found:
                first, second = sorted((origins[name], origin))
                raise PluginError(f"two {kind} plugins are named {name!r}: "
                                  f"{first} and {second}; remove or rename one")
            found[name], origins[name] = plugin, origin
    return found


def wire_protocols() -> dict[str, IWireProtocol]:
    """Every installed wire protocol, by listener name."""
    return find_plugins(IWireProtocol, "wire protocol")


def games() -> dict[str, IGameFactory]:
    """Every installed game, by the name clients use."""
    return find_plugins(IGameFactory, "game", extensions=(IConfigurableGameFactory,))


def _game_options_of(factory: Any) -> tuple[tuple, ...]:
    if not IConfigurableGameFactory.providedBy(factory):
        return ()
    return tuple(factory.options)


def game_options(installed: Mapping[str, Any]) -> list[tuple]:
    """The command-line options of the games ``installed``, each once.

    Each entry is an option tuple whose help starts with the games that take
    it (``[games PrisonersDilemma, StagHunt] ...``). Games may share an option
    by declaring the same tuple; two different options of one name are a
    PluginError.
    """
    entries: dict[str, tuple] = {}
    takers: dict[str, list[str]] = {}
    for name in sorted(installed):
        for entry in _game_options_of(installed[name]):
            long_name = entry[0]
            if long_name in entries and entries[long_name] != tuple(entry):
                raise PluginError(f"games {', '.join(takers[long_name])} and {name} declare "
                                  f"different options named --{long_name}")
            entries[long_name] = tuple(entry)
            takers.setdefault(long_name, []).append(name)
    options = []
    for long_name, (_, default, help_text, coerce, *aliases) in entries.items():
        label = ("game " if len(takers[long_name]) == 1 else "games ") + \
            ", ".join(takers[long_name])
        options.append((long_name, default, f"[{label}] {help_text}", coerce, *aliases))
    return options


def configured_games(values: Mapping[str, Any], installed: Mapping[str, Any] | None = None
                     ) -> dict[str, IGameFactory]:
    """The game table of one service: each game with options replaced by its copy
    configured from ``values`` (parsed options by long name; an option absent
    from them takes its default). The installed plugin objects are not changed.
    """
    if installed is None:
        installed = games()
    table = {}
    for name, factory in installed.items():
        options = _game_options_of(factory)
        if options:
            factory = factory.configured_from(
                {entry[0]: values.get(entry[0], entry[1]) for entry in options})
        table[name] = factory
    return table


def plugin_migrations(protocols: Mapping[str, Any], installed_games: Mapping[str, Any]
                      ) -> dict[str, PluginMigrations]:
    """The migrations the plugins declare (their optional ``migrations``
    attribute), by namespace: ``protocol:NAME`` and ``game:NAME``. A malformed
    declaration is a PluginError naming the plugin."""
    found: dict[str, PluginMigrations] = {}
    for kind, plugins in (("protocol", protocols), ("game", installed_games)):
        for name in sorted(plugins):
            declared = getattr(plugins[name], "migrations", ())
            if not declared:
                continue
            try:
                found[f"{kind}:{name}"] = check_plugin_migrations(declared)
            except ValueError as error:
                raise PluginError(f"{kind} plugin {name!r} declares bad migrations: "
                                  f"{error}") from None
    return found
