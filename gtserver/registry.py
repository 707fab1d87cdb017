"""Discovery of wire protocols and games through Twisted's plugin system."""

from __future__ import annotations

from twisted.plugin import getPlugins

from gtserver.interfaces import IGameFactory, IWireProtocol


def _plugin_package():
    import gtserver.plugins
    return gtserver.plugins


def wire_protocols() -> dict[str, IWireProtocol]:
    """Every installed wire protocol, by listener name."""
    return {plugin.name: plugin for plugin in getPlugins(IWireProtocol, _plugin_package())}


def games() -> dict[str, IGameFactory]:
    """Every installed game, by the name clients use."""
    return {plugin.name: plugin for plugin in getPlugins(IGameFactory, _plugin_package())}
