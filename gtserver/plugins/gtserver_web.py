"""The ``web`` listener: a pointer to :mod:`gtserver.web.plugin`."""

from gtserver.web.plugin import web

__all__ = ["web"]
