"""Builds the EOT listener's factory from the daemon's configuration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gtserver.eot.lobby import TableService
from gtserver.eot.protocol import EOTFactory


def build_factory(core: Any, config: Mapping[str, Any]) -> EOTFactory:
    tables = core.component(TableService)
    return EOTFactory(tables, core.clock,
                      request_size_max=int(config.get("eot_request_size_max", 1_000_000)),
                      connection_timeout=float(config.get("eot_connection_timeout", 60.0)))
