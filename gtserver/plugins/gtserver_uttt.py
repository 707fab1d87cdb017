"""The ``uttt`` listener: a pointer to :mod:`gtserver.uttt.plugin`."""

from gtserver.uttt.plugin import uttt

__all__ = ["uttt"]
