"""The daemon's own settings: storage, account lifetimes, login limits, hashing.

Built once from the parsed command line (:meth:`CoreSettings.from_options`);
the defaults are those of the dataclasses below, which the option table of
``twistd gtserver`` shows as its defaults too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gtserver.core.accounts import DAY, Lifetimes
from gtserver.core.login import LoginLimits
from gtserver.store import DEFAULT_TIMEOUT

DEFAULT_DB = "sqlite:gtserver.sqlite"


@dataclass(frozen=True)
class CoreSettings:
    db: str = DEFAULT_DB
    #: Seconds a database operation may take before it fails as unavailable.
    db_timeout: float = DEFAULT_TIMEOUT
    lifetimes: Lifetimes = Lifetimes()
    login: LoginLimits = LoginLimits()
    #: scrypt cost as log2(n), and the threads that hash.
    hash_cost: int = 14
    hash_threads: int = 1
    #: Reverse proxies whose X-Forwarded-For header names the client.
    trusted_proxies: tuple[str, ...] = ()
    #: This node's name in a deployment of several (None: a single daemon).
    node: str | None = None
    #: Seconds a node's lease outlives its last renewal, and between renewals.
    lease_ttl: float = 5.0
    lease_renew: float = 1.0

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> CoreSettings:
        """From ``twistd gtserver``'s parsed options (keys as on the command line)."""
        return cls(
            db=options["db"],
            db_timeout=options["db-timeout"],
            lifetimes=Lifetimes(account=options["account-idle-days"] * DAY,
                                session=options["session-idle-days"] * DAY,
                                temporary=options["temporary-idle"],
                                check_interval=options["expiry-interval"]),
            login=LoginLimits(
                failures_per_account=options["login-failures-per-account"],
                failures_per_address=options["login-failures-per-address"],
                window=options["login-window"],
                registrations_per_address=options["registrations-per-address"],
                registration_window=options["registration-window"]),
            hash_cost=options["hash-cost"],
            hash_threads=options["hash-threads"],
            trusted_proxies=tuple(options["trusted-proxy"]),
            node=options.get("node") or None,
            lease_ttl=options["lease-ttl"],
            lease_renew=options["lease-renew"])
