"""``gtserver-admin``: installation chores.

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
from collections.abc import Sequence
from types import ModuleType

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


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gtserver-admin",
                                     description="Installation chores of gtserver.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "build-plugin-cache",
        help="write Twisted's plugin caches of twistd and gtserver (run after every "
             "install or upgrade, so that a read-only installation need not write them)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    argument_parser().parse_args(argv)
    problems = build_plugin_cache()
    if problems:
        for problem in problems:
            print(f"gtserver-admin: {problem}", file=sys.stderr)
        raise SystemExit(1)
    for package in plugin_packages():
        for directory in plugin_directories(package):
            print(f"plugin cache up to date: {os.path.join(directory, CACHE)}")


if __name__ == "__main__":
    main()
