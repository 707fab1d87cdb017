"""Games as pure rules: no I/O, no clock, only moves and states.

A game is a class providing :class:`gtserver.interfaces.IGame`; its factory
(:class:`gtserver.interfaces.IGameFactory`) is registered as a plugin in
:mod:`gtserver.plugins`. :class:`GameFactory` turns a game class into such a
factory.
"""

from gtserver.games.base import GameFactory, IllegalMove

__all__ = ["GameFactory", "IllegalMove"]
