"""Command-line options of ``twistd gtserver``: listeners, database, limits."""

from __future__ import annotations

import os

from twisted.python import usage
from twisted.trial import unittest
from zope.interface import implementer

from gtserver.core.settings import CoreSettings
from gtserver.interfaces import IWireProtocol
from gtserver.tap import Options, make_options_class
from tests.lineprotocol import line_plugin
from tests.support import parse_options

REFERENCE_PORTS = {"vr": ["tcp:42069"], "uttt": ["tcp:5556"], "eot": ["tcp:4711"]}


@implementer(IWireProtocol)
class SecondPlugin:
    name = "second"
    description = "second test protocol"
    default_endpoints = ("tcp:0:interface=127.0.0.1", "unix:/tmp/gtserver-second.sock")
    options: list = []
    flags: list = []

    def settings(self, options):
        raise AssertionError("not built in option tests")

    def build_factory(self, core, settings):
        raise AssertionError("not built in option tests")


@implementer(IWireProtocol)
class RenamedPlugin(SecondPlugin):
    """Options renamed after release, their old names kept as aliases."""

    name = "renamed"
    options = [("renamed-rate", 1.5, "A rate.", float, ("rate", "old-rate")),
               ("renamed-label", "x", "A label.", None, ("label",)),
               ("renamed-plain", 3, "No aliases.", int)]
    flags = [("renamed-loud", "A flag.", ("loud",)), ("renamed-soft", "No aliases.")]


PROTOCOLS = {"testline": line_plugin, "second": SecondPlugin()}


def parse(*arguments: str):
    return parse_options(*arguments, protocols=PROTOCOLS)


class ListenerOptionTests(unittest.TestCase):
    def test_defaults(self):
        options = parse()
        self.assertEqual(options["listeners"], {
            "testline": ["tcp:0:interface=127.0.0.1"],
            "second": ["tcp:0:interface=127.0.0.1", "unix:/tmp/gtserver-second.sock"]})
        self.assertEqual(options["db"], "sqlite:gtserver.sqlite")

    def test_naming_replaces_the_default_and_naming_again_adds(self):
        options = parse("--port", "second=tcp:7000", "--port", "second=unix:/tmp/x.sock",
                         "-p", "testline=tcp:7001:interface=\\:\\:1")
        self.assertEqual(options["listeners"], {
            "testline": ["tcp:7001:interface=\\:\\:1"],
            "second": ["tcp:7000", "unix:/tmp/x.sock"]})

    def test_off_disables(self):
        options = parse("--port", "second=off")
        self.assertEqual(options["listeners"]["second"], [])
        self.assertEqual(options["listeners"]["testline"], ["tcp:0:interface=127.0.0.1"])
        options = parse("--port", "second=off", "--port", "second=tcp:7000")
        self.assertEqual(options["listeners"]["second"], ["tcp:7000"])

    def test_unknown_listener(self):
        error = self.assertRaises(usage.UsageError, parse, "--port", "nope=tcp:1")
        self.assertIn("unknown listener 'nope'", str(error))
        self.assertIn("second, testline", str(error))

    def test_malformed_port_values(self):
        for value in ("second", "=tcp:1", "second=", "second=tcp:notaport",
                      "second=bogus:1", "second=tcp:1:nosuchoption=2",
                      "second=ssl:0:privateKey=/nonexistent.pem",
                      "second=systemd:domain=INET:index=7"):
            self.assertRaises(usage.UsageError, parse, "--port", value)

    def test_the_listener_machinery_knows_no_protocol_names(self):
        self.assertRaises(usage.UsageError, parse, "--port", "vr=tcp:1")
        self.assertEqual(make_options_class({}).protocols, {})


class AliasTests(unittest.TestCase):
    protocols = {"renamed": RenamedPlugin()}

    def parse(self, *arguments: str):
        return parse_options(*arguments, protocols=self.protocols)

    def test_both_spellings_set_the_same_option(self):
        for spelling in ("--renamed-rate", "--rate", "--old-rate"):
            options = self.parse(spelling, "2.5")
            self.assertEqual(options["renamed-rate"], 2.5)
            self.assertNotIn("rate", options)
        self.assertEqual(self.parse("--label", "y")["renamed-label"], "y")
        self.assertEqual(self.parse("--loud")["renamed-loud"], 1)
        self.assertEqual(self.parse()["renamed-loud"], 0)
        self.assertEqual(self.parse()["renamed-rate"], 1.5)
        self.assertEqual(self.parse("--rate", "4", "--renamed-rate", "5")["renamed-rate"], 5.0)

    def test_an_alias_checks_its_value_as_the_option_does(self):
        error = self.assertRaises(usage.UsageError, self.parse, "--rate", "fast")
        self.assertIn("Parameter type enforcement failed", str(error))
        self.assertRaises(usage.UsageError, self.parse, "--rate")

    def test_help_names_the_aliases(self):
        text = " ".join(make_options_class(self.protocols)().getUsage().split())
        self.assertIn("--rate= Old name of --renamed-rate.", text)
        self.assertIn("--loud Old name of --renamed-loud.", text)

    def test_an_alias_may_not_shadow_an_option(self):
        clashing = RenamedPlugin()
        clashing.options = [("renamed-rate", 1.0, "A rate.", float, ("db",))]
        self.assertRaises(ValueError, make_options_class, {"renamed": clashing})
        other = RenamedPlugin()
        other.name = "other"
        other.options = [("other-rate", 1.0, "A rate.", float, ("rate",))]
        error = self.assertRaises(ValueError, make_options_class,
                                  {"renamed": RenamedPlugin(), "other": other})
        self.assertIn("'rate' is given twice", str(error))

    def test_the_builtin_renames(self):
        renamed = {"vr": [("--vr-fps", "--fps", "2.5", "vr-fps", 2.5)],
                   "eot": [("--eot-pd-rounds", "--pd-rounds", "7", "eot-pd-rounds", 7),
                           ("--eot-pd-payoffs", "--pd-payoffs", "6,4,2,1", "eot-pd-payoffs",
                            "6,4,2,1")]}
        for protocol, entries in renamed.items():
            if protocol not in Options.protocols:
                continue
            for new, old, text, key, value in entries:
                self.assertEqual(parse_options(new, text)[key], value)
                self.assertEqual(parse_options(old, text)[key], value)
        if "eot" in Options.protocols:
            self.assertRaises(usage.UsageError, parse_options, "--pd-payoffs", "1,2")


class OtherOptionTests(unittest.TestCase):
    def test_database_urls(self):
        for url in ("sqlite:data/gt.sqlite", "sqlite::memory:",
                    "postgresql://game:pw@db.example:5432/gt", "postgres://localhost/gt"):
            self.assertEqual(parse("--db", url)["db"], url)
        for url in ("sqlite:", "mysql://x/y", "gtserver.sqlite"):
            self.assertRaises(usage.UsageError, parse, "--db", url)

    def url_file(self, text: str, mode: int = 0o600) -> str:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(path, mode)
        return path

    def test_a_password_file_every_user_may_read_is_refused(self):
        readable = self.url_file("postgresql://game:pw@db.example/gt", 0o644)
        error = self.assertRaises(usage.UsageError, parse, "--db-file", readable)
        self.assertEqual(str(error), f"--db-file {readable} holds a password but every user "
                                     f"may read it (mode 0644): chmod o-r {readable}")
        for url, mode in (("postgresql://game:pw@db.example/gt", 0o640),
                          ("postgresql://game@db.example/gt", 0o644),
                          ("sqlite:data/gt.sqlite", 0o644)):
            self.assertEqual(parse("--db-file", self.url_file(url, mode))["db"], url)

    def test_database_url_from_a_file(self):
        for url in ("sqlite:data/gt.sqlite", "postgresql://game:pw@db.example:5432/gt"):
            options = parse("--db-file", self.url_file(f"  {url}\n"))
            self.assertEqual(options["db"], url)

    def test_bad_database_url_files(self):
        missing = self.mktemp()
        for path, reason in ((missing, f"cannot read --db-file {missing}: [Errno 2]"),
                             (self.url_file(" \n"), "is empty"),
                             (self.url_file("sqlite:a\nsqlite:b\n"), "one line"),
                             (self.url_file("mysql://x/y"), "unsupported database URL"),
                             (self.url_file("postgresql://u:pw@h:x/d"), "bad PostgreSQL URL")):
            error = self.assertRaises(usage.UsageError, parse, "--db-file", path)
            self.assertIn(reason, str(error))
            self.assertNotIn(":pw@", str(error))  # the temporary path may hold "pw"
        error = self.assertRaises(usage.UsageError, parse, "--db", "sqlite:x",
                                  "--db-file", self.url_file("sqlite:y"))
        self.assertIn("give --db or --db-file, not both", str(error))

    def test_malformed_postgresql_urls_are_refused_without_their_password(self):
        for url, reason in (("postgresql://u:pw@h:notaport/db", "Port could not be cast"),
                            ("postgresql://u:pw@h:70000/db", "Port out of range"),
                            ("postgres://u:pw@[::1/db", "Invalid IPv6 URL")):
            error = self.assertRaises(usage.UsageError, parse, "--db", url)
            self.assertIn("bad PostgreSQL URL", str(error))
            self.assertIn(reason, str(error))
            self.assertNotIn(":pw@", str(error))  # the temporary path may hold "pw"
    def test_database_timeout(self):
        self.assertEqual(parse()["db-timeout"], 10.0)
        self.assertEqual(parse("--db-timeout", "2.5")["db-timeout"], 2.5)
        for value in ("0", "-1", "soon", "inf", "nan"):
            self.assertRaises(usage.UsageError, parse, "--db-timeout", value)

    def test_lifetimes_and_hash_cost(self):
        options = parse("--account-idle-days", "10", "--session-idle-days", "2.5",
                        "--temporary-idle", "60", "--expiry-interval", "30", "--hash-cost", "12")
        self.assertEqual((options["account-idle-days"], options["session-idle-days"],
                          options["temporary-idle"], options["expiry-interval"],
                          options["hash-cost"]), (10.0, 2.5, 60.0, 30.0, 12))
        self.assertRaises(usage.UsageError, parse, "--hash-cost", "30")
        self.assertRaises(usage.UsageError, parse, "--temporary-idle", "soon")

    def test_lifetimes_intervals_and_timeouts_must_be_above_zero(self):
        names = ["account-idle-days", "session-idle-days", "temporary-idle", "expiry-interval"]
        installed = {"uttt": ["uttt-match-idle-days", "uttt-expiry-interval",
                              "uttt-max-open-matches", "uttt-login-failures",
                              "uttt-login-window"],
                     "eot": ["eot-request-size-max", "eot-connection-timeout",
                             "eot-join-timeout", "eot-game-timeout", "eot-pd-rounds",
                             "pd-rounds"],
                     "vr": ["vr-fps", "fps", "vr-login-window"]}
        for protocol, options in installed.items():
            if protocol in Options.protocols:
                names += options
        for name in names:
            for value in ("-1", "0", "-0.5", "nan", "inf", "-inf"):
                error = self.assertRaises(usage.UsageError, parse_options, f"--{name}", value)
                self.assertIn(name, str(error))
            parse_options(f"--{name}", "2")

    def test_log_format(self):
        self.assertEqual(parse()["log-format"], "text")
        self.assertEqual(parse("--log-format", "json")["log-format"], "json")
        error = self.assertRaises(usage.UsageError, parse, "--log-format", "xml")
        self.assertIn("--log-format must be one of text, json", str(error))

    def test_protocol_options_and_flags(self):
        options = parse("--testline-greeting", "hi", "--testline-quiet")
        self.assertEqual((options["testline-greeting"], options["testline-quiet"]), ("hi", 1))
        self.assertEqual(parse()["testline-greeting"], "hello")

    def test_help_documents_every_option(self):
        text = make_options_class(PROTOCOLS)().getUsage()
        for option in ("--port=", "--db=", "--account-idle-days=", "--session-idle-days=",
                       "--temporary-idle=", "--expiry-interval=", "--hash-cost=",
                       "--testline-greeting=", "--testline-quiet", "--version"):
            self.assertIn(option, text)
        self.assertIn("testline (test line protocol, default tcp:0:interface=127.0.0.1)",
                      " ".join(text.split()))

    def test_installed_protocols_use_their_reference_ports(self):
        listeners = Options()
        listeners.parseOptions([])
        installed = set(Options.protocols) & set(REFERENCE_PORTS)
        self.assertTrue(installed, "none of vr, uttt, eot is installed")
        for name in installed:
            self.assertEqual(listeners["listeners"][name], REFERENCE_PORTS[name])


class NodeOptionTests(unittest.TestCase):
    """``--node``: a deployment of several daemons sharing PostgreSQL."""

    POSTGRES = ("--db", "postgresql://game@db.example/gt")

    def test_a_single_daemon_by_default(self):
        options = parse(*self.POSTGRES)
        self.assertEqual((options["node"], options["lease-ttl"], options["lease-renew"]),
                         (None, 5.0, 1.0))
        self.assertIsNone(CoreSettings.from_options(options).node)

    def test_node_and_lease_times(self):
        options = parse(*self.POSTGRES, "--node", "web-1", "--lease-ttl", "3",
                        "--lease-renew", "0.25")
        settings = CoreSettings.from_options(options)
        self.assertEqual((settings.node, settings.lease_ttl, settings.lease_renew),
                         ("web-1", 3.0, 0.25))

    def test_sqlite_serves_a_single_node(self):
        for database in ("sqlite:gt.sqlite", "sqlite::memory:"):
            error = self.assertRaises(usage.UsageError, parse, "--db", database,
                                      "--node", "a")
            self.assertEqual(str(error), "--node needs a PostgreSQL --db: SQLite serves a "
                                         "single node (see docs/cluster.md)")
        self.assertRaises(usage.UsageError, parse, "--node", "a")  # the default is SQLite

    def test_lease_times_must_be_positive_and_renewal_shorter(self):
        for name in ("lease-ttl", "lease-renew"):
            for value in ("0", "-1", "nan", "soon"):
                error = self.assertRaises(usage.UsageError, parse, *self.POSTGRES,
                                          f"--{name}", value)
                self.assertIn(name, str(error))
        error = self.assertRaises(usage.UsageError, parse, *self.POSTGRES, "--node", "a",
                                  "--lease-ttl", "2", "--lease-renew", "2")
        self.assertEqual(str(error), "--lease-renew (2 s) must be shorter than --lease-ttl "
                                     "(2 s), or leases expire between renewals")
