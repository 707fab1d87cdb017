"""Strict JSON for every listener: standard numbers only, and text that can be stored.

Python's :mod:`json` reads ``NaN``, ``Infinity`` and ``1e400`` (an infinite
float), which RFC 8259 does not allow and which standard parsers (a
browser's ``JSON.parse``, Unity's) refuse when gtserver relays or exports
them. :func:`loads` refuses them with :class:`NonFinite`, which each protocol
answers in its own words. :func:`unstorable` finds text that the event log
could not store (a NUL, which PostgreSQL refuses, or a lone UTF-16 surrogate,
which has no UTF-8 form).
"""

from __future__ import annotations

import json
import math
from typing import Any


class NonFinite(ValueError):
    """A number that is NaN, an infinity, or beyond the range of a double."""

    def __init__(self, text: str, constant: bool) -> None:
        super().__init__(text)
        #: The number as the request wrote it (``NaN``, ``1e400``, ...).
        self.text = text
        #: Whether it was one of the names ``NaN``, ``Infinity``, ``-Infinity``.
        self.constant = constant


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NonFinite(text, constant=False)
    return value


def _refuse_constant(name: str) -> float:
    raise NonFinite(name, constant=True)


# Built once: json.loads with hooks would build a decoder for every call.
_decode = json.JSONDecoder(parse_float=_finite_float, parse_constant=_refuse_constant).decode


def loads(data: str | bytes) -> Any:
    """``json.loads`` (bytes in UTF-8, UTF-16 or UTF-32, as it reads them),
    refusing non-finite numbers with :class:`NonFinite`.

    Raises ValueError (JSONDecodeError, UnicodeDecodeError) for what is not
    JSON, and RecursionError for nesting deeper than the decoder allows.
    """
    if isinstance(data, (bytes, bytearray)):
        data = data.decode(json.detect_encoding(data), "surrogatepass")
    elif data.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", data, 0)
    return _decode(data)


def unstorable(value: Any, skip: str | None = None) -> str | None:
    """Why some string in ``value`` (keys included) cannot be stored, or None.

    In a dict at the top, the field ``skip`` is not looked at. Not recursive:
    a value may be nested as deep as the decoder allows.
    """
    if isinstance(value, dict):
        pending = [item for key, item in value.items() if key != skip] + list(value)
    else:
        pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\0" in item:
                return "it contains a NUL character (\\u0000)"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "it contains an unpaired UTF-16 surrogate"
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return None


def may_hold_unstorable(raw: bytes) -> bool:
    """Whether JSON bytes could decode to a NUL or a lone surrogate.

    ASCII without NUL bytes is UTF-8 JSON and holds such characters only as
    escapes (``\\u0000``, ``\\ud800``); anything else (other bytes, the UTF-16
    or UTF-32 that :func:`loads` also reads) needs :func:`unstorable`.
    """
    return b"\\u" in raw or b"\0" in raw or not raw.isascii()
