"""Real daemons of one deployment (tests/nodes.py): two and three
``twistd gtserver --node`` processes on one PostgreSQL database see each
other, notice a ``kill -9`` within the lease time, and take a restarted node
back."""

from __future__ import annotations

import json
import re
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from gtserver.store import leases as lease_queries
from gtserver.store import open_store
from gtserver.store import runs as run_queries
from tests.nodes import Node, eventually, start_node, start_nodes

TTL, RENEW = 2.0, 0.5
LEASE_OPTIONS = ("--lease-ttl", str(TTL), "--lease-renew", str(RENEW))


class DeploymentTests(unittest.TestCase):
    timeout = 180

    async def store(self, url: str) -> Any:
        """A store of the test's own on the deployment's database."""
        store = getattr(self, "_store", None)
        if store is None:
            store = self._store = open_store(url, reactor)
            await store.start()
            self.addCleanup(store.close)
        return store

    async def live_nodes(self, url: str) -> list[str]:
        """The nodes holding a live ``node:`` lease, as the database says."""
        store = await self.store(url)
        held = await store.run(lease_queries.held_with_prefix, "node:", reactor.seconds())
        return sorted(node for _name, node in held)

    async def recorded_nodes(self, url: str) -> list[str]:
        """The node of each run recorded, in the order they started."""
        runs = await (await self.store(url)).run(run_queries.all_runs)
        return [json.loads(run[-1])["node"] for run in runs]

    async def all_see_each_other(self, nodes: list[Node], since: dict[str, int] | None = None
                                 ) -> None:
        """Every node has logged every other one as live (after offset ``since``)."""
        for node in nodes:
            for other in nodes:
                if other is not node:
                    offset = (since or {}).get(node.name, 0)
                    await eventually(lambda n=node, o=other, at=offset: re.search(
                        rf"\] node {o.name} live\b", n.output[at:]))

    async def test_two_nodes_see_each_other_notice_a_kill_and_a_return(self):
        a, b = await start_nodes(self, count=2, listeners=("eot",), options=LEASE_OPTIONS)
        await self.all_see_each_other([a, b])
        self.assertEqual(await self.live_nodes(a.url), ["a", "b"])
        for node in (a, b):
            self.assertEqual(node.output.count("of a deployment"), 1, node.output)
            self.assertRegex(node.output, rf"node {node.name} of a deployment")

        killed_at = reactor.seconds()
        await a.kill()
        await b.wait_for(r"\] node a stopped")
        noticed = reactor.seconds() - killed_at
        self.assertLess(noticed, TTL + RENEW + 1.0, b.output)
        self.assertEqual(await self.live_nodes(a.url), ["b"])

        mark = {"b": len(b.output)}
        again = await start_node(self, a.url, "a", listeners=("eot",), options=LEASE_OPTIONS)
        await self.all_see_each_other([again, b], since=mark)
        self.assertEqual(await self.live_nodes(a.url), ["a", "b"])
        self.assertNotIn("Traceback", b.output + again.output)

        self.assertEqual(await again.stop(), 0, again.output)
        await eventually(lambda: b.output.count("] node a stopped") == 2)
        self.assertEqual(await self.live_nodes(a.url), ["b"])

    async def test_three_nodes_start_at_once_on_a_fresh_database(self):
        nodes = await start_nodes(self, count=3, listeners=("eot", "vr"),
                                  options=LEASE_OPTIONS)
        self.assertEqual([node.name for node in nodes], ["a", "b", "c"])
        self.assertEqual(len({node.port("eot") for node in nodes}
                             | {node.port("vr") for node in nodes}), 6)
        await self.all_see_each_other(nodes)
        a, b, c = nodes
        await b.kill()
        for node in (a, c):
            await node.wait_for(r"\] node b stopped")
        self.assertEqual(await self.live_nodes(a.url), ["a", "c"])
        self.assertEqual(sorted(await self.recorded_nodes(a.url)), ["a", "b", "c"])
        for node in (a, c):
            self.assertEqual(await node.stop(), 0, node.output)
            self.assertNotIn("Traceback", node.output)
