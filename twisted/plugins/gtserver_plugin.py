"""twistd plugin: ``twistd gtserver``.

Kept to a lazy pointer so that listing twistd's plugins imports nothing of
gtserver; :mod:`gtserver.tap` is loaded only when the plugin is used.
"""

from twisted.application.service import ServiceMaker

gtserver = ServiceMaker(
    "gtserver",
    "gtserver.tap",
    "Multi-protocol game server for game-theory experiments and multiplayer games",
    "gtserver",
)
