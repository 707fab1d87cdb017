"""The one store layer: every SQL statement of gtserver lives in this package.

:func:`open_store` picks the engine from a ``--db`` URL; query modules
(:mod:`gtserver.store.accounts`, :mod:`gtserver.store.events`, ...) hold the
transactions, written once for both engines.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from gtserver.store.base import (
    Conflict,
    Statement,
    Store,
    StoreError,
    StoreUnavailable,
    Unstorable,
    redact_url,
)

__all__ = ["Conflict", "Statement", "Store", "StoreError", "StoreUnavailable", "Unstorable",
           "open_store", "validate_url"]


class BadDatabaseURL(ValueError):
    """The ``--db`` value names no supported database."""


def validate_url(url: str) -> str:
    """Check a ``--db`` URL's form; return it unchanged or raise BadDatabaseURL."""
    if url.startswith("sqlite:"):
        if not url[len("sqlite:"):]:
            raise BadDatabaseURL(
                "sqlite: needs a path, e.g. sqlite:gtserver.sqlite or sqlite::memory:")
        return url
    if url.startswith(("postgresql://", "postgres://")):
        try:
            urlsplit(url).port  # noqa: B018 (parsing the port is the check)
        except ValueError as error:
            raise BadDatabaseURL(f"bad PostgreSQL URL {redact_url(url)}: {error}; "
                                 "use postgresql://user:password@host:port/database"
                                 ) from None
        return url
    raise BadDatabaseURL(
        f"unsupported database URL {url!r}: use sqlite:PATH, sqlite::memory: "
        "or postgresql://user:password@host:port/database")


#: Default of ``--db-timeout``: seconds a transaction may take.
DEFAULT_TIMEOUT = 10.0


def timeout_seconds(value: str) -> float:
    """A ``--db-timeout`` value: a positive number of seconds (ValueError if not)."""
    seconds = float(value)
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"must be a positive number of seconds, not {value}")
    return seconds


def open_store(url: str, reactor: Any = None, timeout: float | None = None) -> Store:
    """Make (but do not start) the store for a database URL.

    ``timeout``: seconds after which a transaction fails with StoreUnavailable
    (None: no limit).
    """
    validate_url(url)
    if url.startswith("sqlite:"):
        from gtserver.store.sqlite import SQLiteStore
        return SQLiteStore(url, url[len("sqlite:"):], reactor, timeout)
    try:
        import psycopg2  # noqa: F401
        import txpostgres  # noqa: F401
    except ImportError as error:
        raise BadDatabaseURL(
            "PostgreSQL support is not installed: pip install 'gtserver[postgresql]'") from error
    from gtserver.store.postgres import PostgresStore
    return PostgresStore(url, reactor, timeout=timeout)
