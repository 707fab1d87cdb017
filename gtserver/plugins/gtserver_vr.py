"""The ``vr`` listener: a pointer to :mod:`gtserver.vr.plugin`."""

from gtserver.vr.plugin import vr

__all__ = ["vr"]
