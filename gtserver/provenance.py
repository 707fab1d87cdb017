"""Provenance: what a daemon run was (recorded in ``runs`` at every start).

A run's description says which software produced the events of that run:
gtserver's version (and the source commit of a checkout), Python, Twisted,
Autobahn, the database server, every installed game and protocol plugin with
its version, the node's name in a deployment of several (``--node``; None
for a single daemon), and the daemon's effective options with secrets removed, plus
the sha256 of those options' canonical JSON (equal hashes: same settings).

Secrets never recorded (docs/export.md): the password of a ``--db`` URL
(also when the URL comes from ``--db-file``, whose path is recorded), and
the value of every option whose name contains ``password``, ``secret`` or
``token`` (``--web-token-file``, which holds the token read from the file)
unless it is unset or a number (flags such as ``--vr-any-password`` are 0 or
1): it is recorded as ``***``, so the run shows that it was set.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import sys
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from gtserver import __version__
from gtserver.store import Store, redact_url
from gtserver.store import runs as queries

#: Stands for a secret option's value in a recorded run.
REDACTED = "***"

#: Words in an option's name that make its (non-file, non-flag) value a secret.
SECRET_WORDS = ("password", "secret", "token")

#: Options whose value is a database URL, recorded without its password.
URL_OPTIONS = ("db",)


_PASSWORD_PARAMETER = re.compile(r"(?i)([?&]password=)[^&]*")


def redact_database_url(url: str) -> str:
    """A database URL without its password (``user:password@`` or ``?password=``)."""
    return _PASSWORD_PARAMETER.sub(lambda found: found.group(1) + REDACTED, redact_url(url))


def redact_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options as JSON-ready values, secrets removed (see the module doc)."""
    redacted: dict[str, Any] = {}
    for name in sorted(options):
        value = json_ready(options[name])
        if name in URL_OPTIONS and isinstance(value, str):
            value = redact_database_url(value)
        elif is_secret(name, options[name]):
            value = REDACTED
        redacted[name] = value
    return redacted


def is_secret(name: str, value: Any) -> bool:
    """Whether option ``name`` holding ``value`` is recorded as :data:`REDACTED`."""
    return (value is not None and not isinstance(value, (bool, int, float))
            and any(word in name for word in SECRET_WORDS))


def json_ready(value: Any) -> Any:
    """``value`` as JSON values: tuples as lists, mapping keys as text, the
    rest that JSON cannot hold as its ``repr``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [json_ready(item) for item in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    return repr(value)


def canonical_json(value: Any) -> str:
    """The one JSON text of ``value``: keys sorted, no spaces, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def options_sha256(redacted: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(redacted).encode("ascii")).hexdigest()


def source_commit(package_file: str | None = None) -> str | None:
    """The commit checked out where gtserver is imported from, read from
    ``.git`` without running git; None when it is not a git checkout."""
    package = os.path.dirname(os.path.abspath(package_file or sys.modules["gtserver"].__file__))
    git = os.path.join(os.path.dirname(package), ".git")
    try:
        if os.path.isfile(git):  # a worktree or submodule: "gitdir: PATH"
            with open(git, encoding="utf-8") as pointer:
                target = pointer.read().strip().removeprefix("gitdir:").strip()
            git = os.path.join(os.path.dirname(git), target)
        if not os.path.isdir(git):
            return None
        common = git
        if os.path.isfile(os.path.join(git, "commondir")):
            with open(os.path.join(git, "commondir"), encoding="utf-8") as pointer:
                common = os.path.join(git, pointer.read().strip())
        with open(os.path.join(git, "HEAD"), encoding="utf-8") as head:
            reference = head.read().strip()
        if not reference.startswith("ref:"):
            return reference or None  # a detached HEAD holds the commit itself
        return _resolve_ref(reference[4:].strip(), (git, common))
    except OSError:
        return None


def _resolve_ref(name: str, directories: tuple[str, ...]) -> str | None:
    for directory in directories:
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as loose:
                return loose.read().strip() or None
        except OSError:
            pass
    for directory in directories:
        try:
            with open(os.path.join(directory, "packed-refs"), encoding="utf-8") as packed:
                for line in packed:
                    commit, _, packed_name = line.strip().partition(" ")
                    if packed_name == name:
                        return commit
        except OSError:
            pass
    return None


def module_version(module: str) -> str | None:
    """The version of the distribution that installed ``module``'s top package
    (gtserver's own version for gtserver's modules), else the top package's
    ``__version__``, else None."""
    top = module.split(".", 1)[0]
    if top == "gtserver":
        return __version__
    for distribution in _distributions().get(top, ()):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    version = getattr(sys.modules.get(top), "__version__", None)
    return str(version) if version is not None else None


_DISTRIBUTIONS: Mapping[str, list[str]] | None = None


def _distributions() -> Mapping[str, list[str]]:
    global _DISTRIBUTIONS
    if _DISTRIBUTIONS is None:
        _DISTRIBUTIONS = metadata.packages_distributions()
    return _DISTRIBUTIONS


def plugin_description(kind: str, name: str, plugin: Any) -> dict[str, Any]:
    """One installed plugin: its kind, name, module and version (the plugin's
    own ``version`` attribute if it has one, else its distribution's)."""
    implementation = getattr(plugin, "game_class", None) or type(plugin)
    module = getattr(implementation, "__module__", None) or type(plugin).__module__
    version = getattr(plugin, "version", None)
    return {"kind": kind, "name": name, "module": module,
            "version": str(version) if version is not None else module_version(module)}


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        module = sys.modules.get(name)
        return getattr(module, "__version__", None)


def describe_run(options: Mapping[str, Any], protocols: Mapping[str, Any],
                 games: Mapping[str, Any]) -> dict[str, Any]:
    """The run's description, but for its start time and database version
    (which :func:`record_run` adds)."""
    import autobahn

    import twisted

    redacted = redact_options(options)
    return {
        "gtserver_version": __version__,
        "source_commit": source_commit(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "twisted": twisted.__version__,
        "autobahn": autobahn.__version__,
        "platform": platform.platform(),
        "plugins": [plugin_description("protocol", name, protocols[name])
                    for name in sorted(protocols)]
                   + [plugin_description("game", name, games[name]) for name in sorted(games)],
        "node": options.get("node"),
        "options": redacted,
        "options_sha256": options_sha256(redacted),
    }


async def record_run(store: Store, description: Mapping[str, Any], started: float) -> int:
    """Add the database version and the start time, store the run; returns its id."""
    details = dict(description, started=started,
                   database={"engine": store.engine,
                             "version": await store.run(queries.database_version,
                                                        store.engine)})
    return await store.run(queries.insert_run, started, details["gtserver_version"],
                           details["source_commit"], details["options_sha256"],
                           canonical_json(details))
