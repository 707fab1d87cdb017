"""Plugin package of gtserver: wire protocols and games.

Any distribution may add modules to ``gtserver/plugins/`` (without an
``__init__.py`` of its own); :func:`twisted.plugin.getPlugins` finds every
object there that provides :class:`gtserver.interfaces.IWireProtocol` or
:class:`gtserver.interfaces.IGameFactory`.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))  # noqa: F821  (set by the import system)
__all__: list[str] = []
