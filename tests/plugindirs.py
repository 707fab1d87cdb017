"""Temporary plugin directories, laid out like a third-party distribution."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import textwrap
from typing import Any

from twisted.plugin import pluginPackagePaths

import gtserver.plugins


def install_plugins(testcase: Any, modules: dict[str, str]) -> str:
    """Write ``modules`` (name: source) into a fresh ``gtserver/plugins/`` directory
    (no ``__init__.py`` anywhere) on ``sys.path``, as a third-party package would
    ship them; removed again at the test's cleanup. Returns the directory root."""
    root = tempfile.mkdtemp(prefix="gtserver-plugin-")
    plugin_dir = os.path.join(root, "gtserver", "plugins")
    os.makedirs(plugin_dir)
    for name, source in modules.items():
        with open(os.path.join(plugin_dir, f"{name}.py"), "w", encoding="utf-8") as file:
            file.write(textwrap.dedent(source))
    sys.path.append(root)
    # What gtserver/plugins/__init__.py does when a fresh process imports it.
    added = [path for path in pluginPackagePaths("gtserver.plugins")
             if path not in gtserver.plugins.__path__]
    gtserver.plugins.__path__.extend(added)

    def uninstall() -> None:
        sys.path.remove(root)
        for path in added:
            gtserver.plugins.__path__.remove(path)
        for name in modules:
            sys.modules.pop(f"gtserver.plugins.{name}", None)
        shutil.rmtree(root, ignore_errors=True)

    testcase.addCleanup(uninstall)
    return root
