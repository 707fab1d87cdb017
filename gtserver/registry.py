"""Discovery of wire protocols and games through Twisted's plugin system.

Every plugin found is checked with :func:`zope.interface.verify.verifyObject`
against the interface it claims, and names must be unique: a plugin that does
not meet its interface, or a second plugin with a name already taken, is a
:class:`PluginError` naming the modules involved. Refusing is better than
skipping here: a game or listener that silently vanished (or was silently
replaced by another module's) would only show as clients' errors later.
"""

from __future__ import annotations

from typing import Any

from twisted.plugin import getCache
from zope.interface import Invalid
from zope.interface.interface import InterfaceClass
from zope.interface.verify import verifyObject

from gtserver.interfaces import IGameFactory, IWireProtocol


class PluginError(ValueError):
    """An installed plugin is broken or clashes with another one."""


def _plugin_package():
    import gtserver.plugins
    return gtserver.plugins


def find_plugins(interface: InterfaceClass, kind: str, package: Any = None
                 ) -> dict[str, Any]:
    """Every plugin providing ``interface`` in ``package``, by its ``name``.

    ``kind`` ("wire protocol", "game") names the plugins in error messages.
    Raises PluginError for a plugin that fails ``verifyObject`` or whose name
    another plugin already has.
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
            try:
                verifyObject(interface, plugin)
            except Invalid as error:
                raise PluginError(f"{kind} plugin {origin} does not provide "
                                  f"{interface.__name__}: {error}") from None
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
    return find_plugins(IGameFactory, "game")
