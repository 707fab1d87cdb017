"""The VR rooms wire format: reply codes, texts and JSON frames (PROTOCOLS.md §1)."""

from __future__ import annotations

import json
from typing import Any

OK = 200
ACCESS_GRANTED = 202
LISTING = 212
HELP = 214
PONG = 220
BAD_REQUEST = 400
UNAUTHORIZED = 401
ACCESS_DENIED = 403
INVALID_STRUCTURE = 406
CONFLICT = 409
INTERNAL_ERROR = 500
NOT_RECOGNIZED = 501

TEXTS = {
    OK: "Ok.",
    ACCESS_GRANTED: "Access granted.",
    LISTING: "Listing information.",
    HELP: "Help message.",
    PONG: "Pong.",
    BAD_REQUEST: "Bad request.",
    UNAUTHORIZED: "User unauthorized.",
    ACCESS_DENIED: "Access denied.",
    INVALID_STRUCTURE: "Data object has invalid structure.",
    CONFLICT: "Request conflicts current status.",
    INTERNAL_ERROR: "Internal server error.",
    NOT_RECOGNIZED: "Command not recognized.",
}

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_decode = json.JSONDecoder().decode


def encode(value: Any) -> bytes:
    return _encoder.encode(value).encode("utf-8")


def reply(code: int, time: float, detail: Any = None) -> bytes:
    """A system (below 400) or error (400 and up) reply frame."""
    return encode({
        "info": "system" if code < 400 else "error",
        "response": {"time": time, "code": code, "msg": TEXTS[code],
                     "detail": {} if detail is None else detail},
    })


def room_frame(room: str, events: list[dict]) -> bytes:
    """One frame of room events; ``payload`` is always an array."""
    return encode({"info": "user", "room": room, "payload": events})


def member_list_frame(room: str, entries: list[tuple[dict, dict]]) -> bytes:
    """:func:`room_frame` of a member list given as ``(entry, cache)`` pairs.

    Each entry is encoded once and kept in its cache, so a member list of
    thousands is joined from ready texts instead of being encoded per joiner.
    """
    texts = []
    for entry, cache in entries:
        text = cache.get(__name__)
        if text is None:
            text = cache[__name__] = _encoder.encode(entry)
        texts.append(text)
    return "".join(('{"info":"user","room":', _encoder.encode(room), ',"payload":[',
                    ",".join(texts), "]}")).encode("utf-8")


class BadFrame(Exception):
    """The frame is not valid JSON (code 406)."""


def decode(payload: bytes) -> Any:
    """The JSON value of a text or binary frame; BadFrame if it is not JSON."""
    try:
        return _decode(payload.decode("utf-8"))  # what clients send, without detection
    except (ValueError, RecursionError):
        pass
    try:
        return json.loads(payload)  # UTF-16/32 or a BOM, or the error to report
    except (ValueError, UnicodeDecodeError) as error:
        raise BadFrame(str(error)) from None
    except RecursionError:
        raise BadFrame("nested too deeply") from None
