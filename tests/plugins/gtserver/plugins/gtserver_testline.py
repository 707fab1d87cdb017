"""Registers the tests' line protocol when this directory is on sys.path
(the way a third-party package adds a listener)."""

from tests.lineprotocol import line_plugin

testline = line_plugin
