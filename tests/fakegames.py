"""Test-only games: one seat that may always move, and nothing to store."""

from __future__ import annotations

from zope.interface import implementer

from gtserver.interfaces import IGame


@implementer(IGame)
class OneSeatGame:
    """Never over, empty state; subclasses decide what ``move`` does."""

    min_players = max_players = 1
    players = 1

    def __init__(self, players=1, rng=None):
        pass

    def current(self):
        return [0]

    def is_over(self):
        return False

    def move(self, seat, **arguments):
        raise NotImplementedError

    def state(self, seat):
        return {}

    def outcome(self):
        return None

    def to_data(self):
        return {}

    @classmethod
    def restore(cls, data):
        return cls()
