"""Value checks for option tables (``coerce`` functions of ``twistd gtserver``
options), shared by the daemon and the protocol plugins.

Each raises ValueError naming the option, which the command line reports as a
usage error before anything starts.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit


def positive(kind: type, option: str) -> Callable[[str], float]:
    """A finite number above 0 (lifetimes, intervals, timeouts, counts)."""

    def coerce(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value <= 0:
            number = "a whole number" if kind is int else "a number"
            raise ValueError(f"--{option} must be {number} above 0, got {text!r}")
        return value

    coerce.coerceDoc = "Above 0."  # type: ignore[attr-defined]
    return coerce


def read_database_url(path: str) -> str:
    """The database URL held in the file at ``path`` (``--db-file``): its text
    without surrounding white space. ValueError if it cannot be read or is
    empty, or if it holds a password and every user may read it."""
    try:
        with open(path, encoding="utf-8") as source:
            url = source.read().strip()
            mode = os.fstat(source.fileno()).st_mode
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read --db-file {path}: {error}") from None
    if not url:
        raise ValueError(f"--db-file {path} is empty: it should hold a database URL")
    if "\n" in url:
        raise ValueError(f"--db-file {path} should hold one line, a database URL")
    if mode & stat.S_IROTH and has_password(url):
        raise ValueError(f"--db-file {path} holds a password but every user may read it "
                         f"(mode {stat.S_IMODE(mode):04o}): chmod o-r {path}")
    return url


def has_password(url: str) -> bool:
    try:
        return urlsplit(url).password is not None
    except ValueError:
        return ":" in url.partition("://")[2].rpartition("@")[0]


def option_defaults(plugin: Any) -> dict[str, Any]:
    """What parsed options hold for ``plugin`` when the command line names none
    of its options: each option's default and each flag off, by long name."""
    values: dict[str, Any] = {entry[0]: entry[1] for entry in getattr(plugin, "options", ())}
    values.update((entry[0], 0) for entry in getattr(plugin, "flags", ()))
    return values


def default_settings(plugin: Any) -> Any:
    """``plugin``'s settings when the command line sets none of its options."""
    return plugin.settings(option_defaults(plugin))
