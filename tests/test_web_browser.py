"""The monitor page in a real browser: headless Chromium (Debian's ``chromium``)
driven by Playwright, while real VR and ultimate tic-tac-toe clients play.

The browser runs in a thread (``deferToThread``) so that the reactor keeps
serving; the steps the clients take run on the reactor through
``blockingCallFromThread``. Set ``WEB_MONITOR_SCREENSHOT=PATH`` to keep the
screenshot (docs/web-monitor.png is made that way).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.trial import unittest

from tests import test_uttt as uttt
from tests.test_vr_client import connect as vr_connect
from tests.test_web import PASSWORD, WebTestMixin

CHROMIUM = "/usr/bin/chromium"

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None


if sync_playwright is None:
    MISSING = "Playwright is not installed (pip install '.[test]')"
elif not os.path.exists(CHROMIUM):
    MISSING = f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)"
else:
    MISSING = None


class MonitorPageTests(WebTestMixin, unittest.TestCase):
    # Skipped where the browser is missing, except in CI, where that is a failure.
    if MISSING and not os.environ.get("CI"):
        skip = MISSING

    def setUp(self) -> None:
        if MISSING:
            self.fail(MISSING)

    def on_reactor(self, step: Any) -> Any:
        """Run the coroutine function ``step`` on the reactor; wait for its result."""
        return blockingCallFromThread(reactor, lambda: ensureDeferred(step()))

    async def test_the_page_follows_rooms_and_matches_live_and_its_controls_work(self):
        await self.serve(listeners=("vr", "uttt"))
        directory = tempfile.mkdtemp(prefix="gtserver-browser-")
        self.addCleanup(shutil.rmtree, directory, True)
        screenshot = os.path.join(directory, "monitor.png")
        self.clients: dict[str, Any] = {}
        await deferToThread(self.drive_browser, screenshot)
        with open(screenshot, "rb") as image:
            self.assertEqual(image.read(8), b"\x89PNG\r\n\x1a\n")
        keep = os.environ.get("WEB_MONITOR_SCREENSHOT")
        if keep:
            shutil.copyfile(screenshot, keep)
        kinds = [row[0] for row in await self.operator_events()]
        self.assertEqual(kinds, ["operator_message", "operator_end_match"])

    # the clients (on the reactor)

    async def vr_members_join(self) -> None:
        port = self.server.port("vr")
        for name in ("Alice", "Bob"):
            client = await vr_connect(port, self)
            await client.login(name)
            client.say("lab", "join", "")
            await client.next()  # the lab's member list
            client.say("lab", "transform", {"pos": {"x": 1.0, "y": 1.6, "z": 0.5},
                                            "rot": {"x": 0.0, "y": 90.0, "z": 0.0}})
            self.clients[name] = client

    async def uttt_match_starts(self) -> None:
        port = self.server.port("uttt")
        self.port = port
        (ann, _), (ben, _) = (await uttt.login(self, port, "Ann"),
                              await uttt.login(self, port, "Ben"))
        self.match = await uttt.challenge(self, ann, ben, "ben")
        self.clients.update(ann=ann, ben=ben)

    async def uttt_move(self, number: int) -> None:
        moves = [(1, 1, 1, 1), (1, 1, 0, 0), (0, 0, 2, 2)]
        players = [self.clients["ann"], self.clients["ben"]]
        await uttt.play(self, self.match["id"], players[number % 2:] + players[:number % 2],
                        [moves[number]])

    async def alice_hears_the_server(self) -> dict:
        alice = self.clients["Alice"]
        while True:
            frame = await alice.next()
            if frame.get("room") == "lab" and any(
                    event["type"] == "msg" for event in frame["payload"]):
                return [event for event in frame["payload"] if event["type"] == "msg"][0]

    async def players_see_the_end(self) -> list[dict]:
        return [await player.expect("match_update")
                for player in (self.clients["ann"], self.clients["ben"])]

    # the browser (in a thread)

    def drive_browser(self, screenshot: str) -> None:
        base = f"http://127.0.0.1:{self.web_port}"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                                 args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(15_000)
                page.on("dialog", lambda dialog: dialog.accept())
                self.log_in(page, base)
                self.watch_room_fill(page)
                self.watch_match_progress(page)
                self.use_controls(page, screenshot)
            finally:
                browser.close()

    def log_in(self, page: Any, base: str) -> None:
        page.goto(base + "/")
        assert page.url == base + "/login", page.url
        page.fill("#password", "not it")
        page.click("#log-in")
        page.wait_for_selector("text=wrong password")
        page.fill("#password", PASSWORD)
        page.click("#log-in")
        page.wait_for_selector("#live.live")
        assert page.url == base + "/", page.url

    def watch_room_fill(self, page: Any) -> None:
        page.wait_for_selector(".room[data-room='lobby']")
        assert page.locator(".room[data-room='lab']").count() == 0
        self.on_reactor(self.vr_members_join)
        lab = page.locator(".room[data-room='lab']")
        lab.locator("td", has_text="Bob").wait_for()
        lab.locator("td", has_text="Alice").wait_for()
        lab.locator(".facts", has_text="2 members, 2 connections").wait_for()

    def watch_match_progress(self, page: Any) -> None:
        self.on_reactor(self.uttt_match_starts)
        row = page.locator("#matches tbody tr", has_text="ann, ben")
        row.wait_for()
        row.locator("td:nth-child(5)", has_text="0").wait_for()
        for number in range(3):
            self.on_reactor(lambda number=number: self.uttt_move(number))
            row.locator("td:nth-child(5)", has_text=str(number + 1)).wait_for()
        row.locator("td:nth-child(4)", has_text="ben").wait_for()  # whose turn

    def use_controls(self, page: Any, screenshot: str) -> None:
        page.select_option("#message-room", "lab")
        page.fill("#message-text", "Please put the controllers down")
        page.click("#message-send")
        page.wait_for_selector("#notice:has-text('message: done')")
        heard = self.on_reactor(self.alice_hears_the_server)
        assert (heard["user"], heard["data"]) == ("", "Please put the controllers down"), heard
        lab = page.locator(".room[data-room='lab']")
        lab.locator(".facts", has_text="history 1,").wait_for()  # in its history, live
        page.screenshot(path=screenshot, full_page=True)  # with the match still live
        page.locator("#matches tbody tr", has_text="ann, ben").locator("button").click()
        updates = self.on_reactor(self.players_see_the_end)
        assert all(update["match_state"]["game_over"] for update in updates), updates
        page.locator("#matches td.empty").wait_for()  # gone from the live list
