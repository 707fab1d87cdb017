"""gtserver: one Twisted daemon serving game-theory experiments and multiplayer games."""

__version__ = "0.1.0"
