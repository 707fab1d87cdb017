"""Settings are built once from the parsed options, whose tables hold every
default: the built-in listeners' settings dataclasses and the core's."""

from __future__ import annotations

from twisted.trial import unittest

from gtserver.core.accounts import DAY
from gtserver.core.settings import CoreSettings
from gtserver.eot.plugin import eot
from gtserver.option_types import default_settings
from gtserver.uttt.plugin import uttt
from gtserver.vr.plugin import vr
from tests.support import parse_options


class CoreSettingsTests(unittest.TestCase):
    def test_the_command_line_defaults_are_the_dataclass_defaults(self):
        self.assertEqual(CoreSettings.from_options(parse_options()), CoreSettings())

    def test_values_from_the_command_line(self):
        settings = CoreSettings.from_options(parse_options(
            "--db", "sqlite::memory:", "--db-timeout", "2.5", "--account-idle-days", "2",
            "--login-window", "9", "--hash-cost", "5", "--hash-threads", "3",
            "--trusted-proxy", "10.0.0.0/8"))
        self.assertEqual((settings.db, settings.db_timeout, settings.lifetimes.account,
                          settings.login.window, settings.hash_cost, settings.hash_threads,
                          settings.trusted_proxies),
                         ("sqlite::memory:", 2.5, 2 * DAY, 9.0, 5, 3, ("10.0.0.0/8",)))


class ListenerSettingsTests(unittest.TestCase):
    def test_parsed_defaults_are_the_option_tables_defaults(self):
        options = parse_options()
        for plugin in (vr, uttt, eot):
            self.assertEqual(plugin.settings(options), default_settings(plugin), plugin.name)

    def test_vr(self):
        settings = vr.settings(parse_options("--fps", "30", "--vr-changed-poses-only",
                                             "--vr-csv-log", "/tmp/x.csv"))
        self.assertEqual((settings.rooms.fps, settings.rooms.history,
                          settings.rooms.changed_only, settings.csv_log,
                          settings.login_failures), (30.0, 50, True, "/tmp/x.csv", None))
        self.assertIsNone(default_settings(vr).csv_log)

    def test_uttt(self):
        settings = uttt.settings(parse_options("--uttt-match-idle-days", "0.5",
                                               "--uttt-login-failures", "3"))
        self.assertEqual((settings.matchmaking.match_idle, settings.login_failures,
                          settings.max_frame), (DAY / 2, 3, 1048576))

    def test_eot(self):
        settings = eot.settings(parse_options("--eot-join-timeout", "12",
                                              "--eot-sessions-max", "7"))
        self.assertEqual((settings.tables.join_timeout, settings.tables.tables_max,
                          settings.request_size_max), (12.0, 7, 1_000_000))
        self.assertEqual(default_settings(eot).tables.tables_max, 10_000)
