"""The ultimate tic-tac-toe WebSocket listener, registered as a wire-protocol plugin."""

from twisted.plugin import IPlugin
from zope.interface import implementer

from gtserver.interfaces import IWireProtocol


def _positive(kind):
    def coerce(text):
        value = kind(text)
        if not value > 0:
            raise ValueError("must be above 0")
        return value
    coerce.coerceDoc = "Above 0."
    return coerce


@implementer(IPlugin, IWireProtocol)
class UltimateTicTacToeListener:
    name = "uttt"
    description = "ultimate tic-tac-toe, WebSocket"
    default_endpoints = ("tcp:5556",)
    options = [
        ("uttt-match-idle-days", 7.0,
         "Days without a move after which a match is lost by the player to move.", float),
        ("uttt-max-open-matches", 5, "Open matches a user may have at once.", int),
        ("uttt-expiry-interval", 3600.0, "Seconds between idle-match checks.", float),
        ("uttt-login-failures", None,
         "Wrong passwords for one account (counted over every listener) after which uttt "
         "refuses its logins; default --login-failures-per-account", _positive(int)),
        ("uttt-login-window", None,
         "Seconds those wrong passwords count for uttt; default --login-window",
         _positive(float)),
    ]
    flags = []

    def build_factory(self, core, config):
        from gtserver.uttt.adapter import UtttServerFactory
        return UtttServerFactory(core, config)


uttt = UltimateTicTacToeListener()
