"""The ultimate tic-tac-toe WebSocket listener, registered as a wire-protocol plugin."""

from twisted.plugin import IPlugin
from zope.interface import implementer

from gtserver.interfaces import IWireProtocol
from gtserver.option_types import positive


@implementer(IPlugin, IWireProtocol)
class UltimateTicTacToeListener:
    name = "uttt"
    description = "ultimate tic-tac-toe, WebSocket"
    default_endpoints = ("tcp:5556",)
    options = [
        ("uttt-match-idle-days", 7.0,
         "Days without a move after which a match is lost by the player to move.",
         positive(float, "uttt-match-idle-days")),
        ("uttt-max-open-matches", 5, "Open matches a user may have at once.",
         positive(int, "uttt-max-open-matches")),
        ("uttt-expiry-interval", 3600.0, "Seconds between idle-match checks.",
         positive(float, "uttt-expiry-interval")),
        ("uttt-login-failures", 5,
         "Failed logins per name or per address before logins are throttled.",
         positive(int, "uttt-login-failures")),
        ("uttt-login-window", 300.0,
         "Seconds a failed login counts against its name and address.",
         positive(float, "uttt-login-window")),
    ]
    flags = []

    def build_factory(self, core, config):
        from gtserver.uttt.adapter import UtttServerFactory
        return UtttServerFactory(core, config)


uttt = UltimateTicTacToeListener()
