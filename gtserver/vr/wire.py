"""The VR rooms wire format: reply codes, texts and JSON frames (PROTOCOLS.md §1)."""

from __future__ import annotations

import json
from typing import Any

from gtserver import jsontext

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


class BadValue(Exception):
    """Valid JSON that gtserver does not relay or store (code 400).

    A lone UTF-16 surrogate (``"\\ud800"``) cannot be encoded as UTF-8, so it
    could be neither sent on to other clients nor written to the event log.
    ``NaN``, ``Infinity`` and numbers too large for a float (``1e400``) would be
    sent on as ``NaN``/``Infinity``, which standard JSON parsers refuse.
    """


def _bad_number(number: jsontext.NonFinite) -> BadValue:
    if number.constant:
        return BadValue(f"{number.text} is not a number JSON parsers accept")
    return BadValue(f"{number.text[:40]} is too large for a number JSON parsers accept")


def decode(payload: bytes) -> Any:
    """The JSON value of a text or binary frame.

    BadFrame if it is not JSON; BadValue if one of its strings (or keys)
    holds a lone surrogate or one of its numbers is not finite.
    """
    try:
        # What clients send, without detection.
        value = jsontext.loads(payload.decode("utf-8"))
    except jsontext.NonFinite as number:
        raise _bad_number(number) from None
    except (ValueError, RecursionError):
        pass
    else:
        # A surrogate can only come from a \u escape (UTF-8 cannot carry
        # one), so the walk is skipped for nearly every frame.
        if b"\\ud" in payload or b"\\uD" in payload:
            check_text(value)
        return value
    try:
        # UTF-16/32 or a BOM, or the error to report.
        value = jsontext.loads(payload)
    except jsontext.NonFinite as number:
        raise _bad_number(number) from None
    except (ValueError, UnicodeDecodeError) as error:
        raise BadFrame(str(error)) from None
    except RecursionError:
        raise BadFrame("nested too deeply") from None
    check_text(value)
    return value


def check_text(value: Any) -> None:
    """BadValue if a string or key anywhere in ``value`` holds a lone surrogate."""
    stack = [value]
    while stack:  # not recursive: a frame may be nested as deep as the decoder allows
        item = stack.pop()
        if type(item) is str:
            _check_string(item)
        elif type(item) is dict:
            for key, member in item.items():
                _check_string(key)
                stack.append(member)
        elif type(item) is list:
            stack.extend(item)


def _check_string(text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadValue("a string holds a lone UTF-16 surrogate") from None
