"""The ``eot`` listener: a pointer to :mod:`gtserver.eot.plugin`."""

from gtserver.eot.plugin import eot

__all__ = ["eot"]
