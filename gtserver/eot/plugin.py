"""The ``eot`` listener: the turn-based game API (JSON requests ending in EOT\\0)."""

from twisted.plugin import IPlugin
from zope.interface import implementer

from gtserver.interfaces import IWireProtocol


def payoffs(text: str) -> str:
    """Check ``--pd-payoffs``: four numbers T,R,P,S."""
    parts = text.split(",")
    try:
        [float(part) for part in parts]
    except ValueError:
        parts = []
    if len(parts) != 4:
        raise ValueError(f"--pd-payoffs wants four numbers T,R,P,S, got {text!r}")
    return text


def positive(text: str) -> int:
    """An integer option that must be at least 1."""
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


@implementer(IPlugin, IWireProtocol)
class EOTGameAPI:
    name = "eot"
    description = "turn-based game API, one JSON request per TCP connection"
    default_endpoints = ("tcp:4711",)
    options = [
        ("eot-request-size-max", 1_000_000, "Largest request in bytes (EOT\\0 included).",
         int),
        ("eot-connection-timeout", 60.0,
         "Seconds a connection may take to deliver its whole request, and again "
         "to read its answer.", float),
        ("eot-join-timeout", 300.0,
         "Seconds a join waits for the session to fill before it is refused.", float),
        ("eot-game-timeout", 3600.0,
         "Seconds without requests after which a session ends.", float),
        ("eot-finished-grace", 60.0,
         "Seconds without requests after which a session whose game is over, and "
         "whose players have all seen the end, is released (a restart within "
         "them keeps it).", float),
        ("eot-sessions-max", 10_000,
         "Sessions kept in memory at most; a new one ends the one idle the longest.",
         positive),
        ("eot-chat-line-max", 4096,
         "Longest Chat name or message, in UTF-8 bytes.", positive),
        ("eot-chat-history-max", 256 * 1024,
         "Chat history kept per session (names and texts), in UTF-8 bytes.", positive),
        ("pd-rounds", 5, "Rounds of PrisonersDilemma and StagHunt.", positive),
        ("pd-payoffs", "5,3,1,0", "PrisonersDilemma payoffs T,R,P,S.", payoffs),
    ]
    flags: list = []

    def build_factory(self, core, config):
        from gtserver.eot.configure import build_factory
        return build_factory(core, config)


eot = EOTGameAPI()
