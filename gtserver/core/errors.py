"""Typed errors of the core; each wire adapter maps them to its own replies."""


class CoreError(Exception):
    """Base of every error the core raises on purpose."""


class BadCredentials(CoreError):
    """Unknown user or wrong password."""


class NameTaken(CoreError):
    """The user name is already in use."""


class InvalidName(CoreError):
    """The user name does not follow the rules of the protocol in use."""


class UnknownSession(CoreError):
    """The session token is unknown or has expired."""


class Throttled(CoreError):
    """Too many failed attempts: try again later."""
