"""``gtserver-admin``: installation chores.

``gtserver-admin set-password`` sets the web monitor's admin password: its
scrypt hash goes into the store (the ``settings`` table), the password is
read from ``--password-file``, else asked twice on a terminal, else read as
one line of standard input.

``gtserver-admin build-plugin-cache`` writes Twisted's plugin caches
(``dropin.cache``) of ``twisted.plugins`` (where twistd finds ``gtserver``)
and ``gtserver.plugins`` (listeners and games). Twisted writes them on first
use if it can; a daemon whose installation is read-only (systemd's
``ProtectSystem=strict``) cannot, and would warn "Unable to write to plugin
cache" at every start. Run it after every install or upgrade, as the user
who owns the installation.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, TextIO

CACHE = "dropin.cache"


def plugin_packages() -> list[ModuleType]:
    import gtserver.plugins
    import twisted.plugins
    return [twisted.plugins, gtserver.plugins]


def plugin_directories(package: ModuleType) -> dict[str, list[str]]:
    """The directories of a plugin package whose modules Twisted loads (a
    module shadowed by one of the same name earlier on the path is not),
    with those modules' file names: the directories Twisted caches."""
    from twisted.python.modules import getModule

    found: dict[str, list[str]] = {}
    for module in getModule(package.__name__).iterModules():
        path = module.filePath
        found.setdefault(path.parent().path, []).append(path.basename())
    return found


def stale_caches(package: ModuleType) -> list[str]:
    """Why the plugin caches of ``package`` would be rewritten on next use
    (Twisted's own rule: a cache missing, unreadable, lacking a module, or
    not newer than every module); empty when they are all fresh."""
    problems = []
    for directory, modules in plugin_directories(package).items():
        cache = os.path.join(directory, CACHE)
        try:
            written = os.path.getmtime(cache)
            with open(cache, "rb") as source:
                cached = pickle.load(source)
        except Exception as error:
            problems.append(f"{cache}: {error}")
            continue
        for module in modules:
            if module.rsplit(".", 1)[0] not in cached:
                problems.append(f"{cache}: {module} is missing (does it import?)")
            elif os.path.getmtime(os.path.join(directory, module)) >= written:
                problems.append(f"{cache}: older than {module}")
    return problems


def build_plugin_cache() -> list[str]:
    """Have Twisted write every plugin cache; the problems that remain."""
    from twisted.plugin import IPlugin, getPlugins

    problems = []
    for package in plugin_packages():
        list(getPlugins(IPlugin, package))
        problems += stale_caches(package)
    return problems


#: Shortest admin password accepted.
MIN_PASSWORD = 8


def read_password(path: str | None, stdin: TextIO, ask: Callable[[str], str]) -> str:
    """The new admin password: the first line of ``path``, else asked twice
    (``ask``, on a terminal), else one line of ``stdin``. ValueError if it is
    empty, too short, or the two answers differ."""
    if path is not None:
        try:
            with open(path, encoding="utf-8") as source:
                password = source.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"cannot read --password-file {path}: {error}") from None
    elif stdin.isatty():
        password = ask("New admin password: ")
        if ask("Again: ") != password:
            raise ValueError("the two passwords differ")
    else:
        password = stdin.readline().rstrip("\r\n")
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"the password must have at least {MIN_PASSWORD} characters")
    return password


async def set_password(reactor: Any, url: str, password: str, log2_n: int) -> None:
    """Store the hash of the web monitor's admin password in the database at ``url``."""
    from gtserver.core.passwords import PasswordHasher
    from gtserver.store import open_store
    from gtserver.store import settings as queries
    from gtserver.web.auth import PASSWORD_SETTING

    store = open_store(url, reactor)
    hasher = PasswordHasher(log2_n=log2_n, reactor=reactor)
    try:
        await store.start()
        encoded = await hasher.hash(password)
        await store.run(queries.put_setting, PASSWORD_SETTING, encoded, reactor.seconds())
    finally:
        hasher.stop()
        await store.close()


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gtserver-admin",
                                     description="Installation chores of gtserver.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "build-plugin-cache",
        help="write Twisted's plugin caches of twistd and gtserver (run after every "
             "install or upgrade, so that a read-only installation need not write them)")
    password = commands.add_parser(
        "set-password",
        help="set the web monitor's admin password (its hash is kept in the database)")
    database = password.add_mutually_exclusive_group()
    database.add_argument("--db", default="sqlite:gtserver.sqlite",
                          help="database URL, as for the daemon (default: %(default)s)")
    database.add_argument("--db-file", metavar="PATH",
                          help="file holding the database URL, as for the daemon")
    password.add_argument("--password-file", metavar="PATH",
                          help="read the password from the first line of this file "
                               "(default: ask on the terminal, else read standard input)")
    password.add_argument("--hash-cost", type=int, default=14,
                          help="scrypt cost as log2(n), 4 to 20 (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    options = argument_parser().parse_args(argv)
    if options.command == "set-password":
        main_set_password(options)
        return
    problems = build_plugin_cache()
    if problems:
        for problem in problems:
            print(f"gtserver-admin: {problem}", file=sys.stderr)
        raise SystemExit(1)
    for package in plugin_packages():
        for directory in plugin_directories(package):
            print(f"plugin cache up to date: {os.path.join(directory, CACHE)}")


def main_set_password(options: argparse.Namespace) -> None:
    import getpass

    from twisted.internet import task
    from twisted.internet.defer import ensureDeferred

    from gtserver.option_types import read_database_url
    from gtserver.store import BadDatabaseURL, validate_url

    try:
        if not 4 <= options.hash_cost <= 20:
            raise ValueError("--hash-cost must be between 4 and 20")
        url = read_database_url(options.db_file) if options.db_file else options.db
        validate_url(url)
        password = read_password(options.password_file, sys.stdin, getpass.getpass)
    except (ValueError, BadDatabaseURL) as error:
        print(f"gtserver-admin: {error}", file=sys.stderr)
        raise SystemExit(2) from None

    async def run(reactor: Any) -> None:
        await set_password(reactor, url, password, options.hash_cost)
        print("gtserver-admin: admin password of the web monitor set")

    task.react(lambda reactor: ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main()
