"""Command-line options of ``twistd gtserver``: listeners, database, limits."""

from __future__ import annotations

from twisted.python import usage
from twisted.trial import unittest
from zope.interface import implementer

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

    def build_factory(self, core, config):
        raise AssertionError("not built in option tests")


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


class OtherOptionTests(unittest.TestCase):
    def test_database_urls(self):
        for url in ("sqlite:data/gt.sqlite", "sqlite::memory:",
                    "postgresql://game:pw@db.example:5432/gt", "postgres://localhost/gt"):
            self.assertEqual(parse("--db", url)["db"], url)
        for url in ("sqlite:", "mysql://x/y", "gtserver.sqlite"):
            self.assertRaises(usage.UsageError, parse, "--db", url)

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
