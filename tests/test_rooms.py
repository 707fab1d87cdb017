"""The room service's coalescing of room events, with plain sinks and a task.Clock."""

from __future__ import annotations

import json
from types import SimpleNamespace

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial import unittest

from gtserver.vr.rooms import LOBBY, RoomService, RoomSettings, normalize_pose, pose_json


class RecordingSink:
    """A connection that keeps every frame it is given, as (room, [(user, type, data)])."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.address = "127.0.0.1:1"
        self.frames: list[tuple[str, list[tuple]]] = []

    def deliver(self, room: str, events: list[dict], shared: dict, droppable: bool) -> bool:
        self.frames.append((room, [(e["user"], e["type"], e["data"]) for e in events]))
        return True

    def take(self) -> list[tuple[str, list[tuple]]]:
        frames, self.frames = self.frames, []
        return frames


class RoomServiceTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.recorded: list[tuple] = []
        events = SimpleNamespace(record=lambda source, kind, **fields: self.recorded.append(
            (kind, fields["user"], fields["room"])), stored=lambda: succeed(True))
        self.rooms = RoomService(self.clock, events, RoomSettings(
            fps=1.0, history=50, changed_only=False, pose_log_rate=0.0))

    def member(self, name: str, room: str = LOBBY) -> RecordingSink:
        sink = RecordingSink(name)
        self.rooms.join(sink, room)
        return sink

    def end_turn(self) -> None:
        self.clock.advance(0)


class CoalescingTests(RoomServiceTestCase):
    def test_joins_of_one_turn_are_one_frame(self):
        alice = self.member("alice")
        self.end_turn()
        bob, carol, dave = self.member("bob"), self.member("carol"), self.member("dave")
        self.assertEqual(alice.frames, [])  # nothing before the end of the turn
        self.end_turn()
        self.assertEqual(alice.take(), [(LOBBY, [("bob", "join", ""), ("carol", "join", ""),
                                                 ("dave", "join", "")])])
        # Each joiner gets only what came after its join; the rest is in its member list.
        self.assertEqual(bob.take(), [(LOBBY, [("carol", "join", ""), ("dave", "join", "")])])
        self.assertEqual(carol.take(), [(LOBBY, [("dave", "join", "")])])
        self.assertEqual(dave.take(), [])
        self.assertEqual([kind for kind, _, _ in self.recorded], ["join"] * 4)

    def test_a_joiner_does_not_get_history_twice(self):
        alice = self.member("alice")
        self.rooms.say(alice, LOBBY, "msg", "before")
        bob = self.member("bob")
        self.assertEqual(self.rooms.join(RecordingSink("carol"), LOBBY).history[0]["data"],
                         "before")
        self.rooms.say(alice, LOBBY, "msg", "after")
        self.end_turn()
        self.assertEqual(alice.take(), [(LOBBY, [("alice", "msg", "before"), ("bob", "join", ""),
                                                 ("carol", "join", ""),
                                                 ("alice", "msg", "after")])])
        self.assertEqual(bob.take(), [(LOBBY, [("carol", "join", ""), ("alice", "msg", "after")])])

    def test_catch_up_sends_pending_events_first(self):
        alice, bob = self.member("alice"), self.member("bob")
        self.end_turn()
        alice.take()
        self.rooms.say(bob, LOBBY, "msg", "one")
        self.rooms.catch_up(alice)  # what an adapter does before a direct reply
        self.assertEqual(alice.take(), [(LOBBY, [("bob", "msg", "one")])])
        self.rooms.say(bob, LOBBY, "msg", "two")
        self.end_turn()
        self.assertEqual(alice.take(), [(LOBBY, [("bob", "msg", "two")])])
        self.assertEqual(bob.take(), [(LOBBY, [("bob", "msg", "one"), ("bob", "msg", "two")])])

    def test_the_leaver_gets_what_happened_before_it_left(self):
        alice, bob = self.member("alice"), self.member("bob")
        self.end_turn()
        alice.take()
        self.rooms.say(alice, LOBBY, "msg", "bye")
        self.rooms.leave(bob, LOBBY)
        self.assertEqual(bob.take(), [(LOBBY, [("alice", "msg", "bye")])])
        self.end_turn()
        self.assertEqual(bob.take(), [])
        self.assertEqual(alice.take(), [(LOBBY, [("alice", "msg", "bye"), ("bob", "leave", "")])])

    def test_rooms_flush_in_the_order_of_their_first_event(self):
        alice = self.member("alice")
        self.rooms.join(alice, "r1")
        self.end_turn()
        self.rooms.say(alice, "r1", "msg", "a")
        self.rooms.say(alice, LOBBY, "msg", "b")
        self.rooms.say(alice, "r1", "msg", "c")
        self.end_turn()
        self.assertEqual(alice.take(), [("r1", [("alice", "msg", "a"), ("alice", "msg", "c")]),
                                        (LOBBY, [("alice", "msg", "b")])])

    def test_events_go_out_before_the_next_tick(self):
        alice = self.member("alice")
        self.end_turn()
        bob = self.member("bob")
        self.rooms.tick()
        self.assertEqual(alice.take()[0], (LOBBY, [("bob", "join", "")]))
        self.assertEqual(bob.take()[0][1][0][1], "transform")

    def test_a_closed_room_sends_nothing_more(self):
        alice = self.member("alice", "r1")
        bob = self.member("bob", "r1")
        self.rooms.disconnect(bob)
        self.rooms.leave(alice, "r1")
        self.assertEqual(alice.take(), [("r1", [("bob", "join", ""), ("bob", "leave", "")])])
        self.end_turn()
        self.assertNotIn("r1", self.rooms.room_titles())
        self.assertEqual(alice.take(), [])


class TitleTests(RoomServiceTestCase):
    def test_a_room_created_by_a_join_has_an_empty_title(self):
        self.member("alice", "r1")
        self.assertEqual(self.rooms.room_titles(), {LOBBY: "", "r1": ""})

    def test_a_title_set_in_the_core_is_listed_until_the_room_closes(self):
        alice = self.member("alice", "r1")
        self.rooms.set_title("r1", "Round one")
        self.assertEqual(self.rooms.room_titles(), {LOBBY: "", "r1": "Round one"})
        self.rooms.leave(alice, "r1")
        self.rooms.join(alice, "r1")  # a new room of the same name
        self.assertEqual(self.rooms.room_titles()["r1"], "")
        self.assertRaises(KeyError, self.rooms.set_title, "nowhere", "x")
        self.assertRaises(TypeError, self.rooms.set_title, "r1", 5)
        self.assertRaises(ValueError, self.rooms.set_title, "r1", "\ud800")
        self.assertEqual(self.rooms.room_titles()["r1"], "")


class EncodingTests(unittest.TestCase):
    def test_member_list_of_cached_entries_is_the_same_frame(self):
        from gtserver.vr import wire
        service = RoomServiceTestCase("run")
        service.setUp()
        for name in ("Zoë", "alice", "Bob", 'quo"te'):
            service.member(name, "räum")
        room = service.rooms.rooms["räum"]
        self.assertEqual([e["user"] for e in room.member_list()],
                         ["alice", "Bob", 'quo"te', "Zoë"])
        self.assertEqual(wire.member_list_frame("räum", room.member_entries()),
                         wire.room_frame("räum", room.member_list()))
        service.rooms.disconnect(next(iter(room.sinks)))
        self.assertEqual(len(room.order), 3)
        self.assertEqual(wire.member_list_frame("räum", room.member_entries()),
                         wire.room_frame("räum", room.member_list()))


class PoseJsonTests(unittest.TestCase):
    def test_same_text_as_json_dumps(self):
        for values in ((0, 1, -2), (1e-7, -0.0, 1e22), (0.1 + 0.2, 123456789.123, -5e-324),
                       (3.0, 2.5, 1.7976931348623157e308)):
            x, y, z = values
            pose = normalize_pose({"pos": {"x": x, "y": y, "z": z}, "rot": {"x": z, "y": x}})
            self.assertEqual(pose_json(pose), json.dumps(pose, separators=(",", ":")))
            self.assertEqual(json.loads(pose_json(pose)), pose)


class HeapTrimmerTests(unittest.TestCase):
    def test_trims_once_a_large_burst_goes_quiet(self):
        from gtserver.vr.memory import HeapTrimmer
        clock, trims = Clock(), []
        heap = HeapTrimmer(clock, threshold=1000, quiet=2.0, trim=trims.append)
        heap.wrote(600)
        clock.advance(10)
        self.assertEqual(trims, [])  # below the threshold
        heap.wrote(600)
        clock.advance(1.5)
        heap.wrote(100)  # still busy
        clock.advance(1.0)
        self.assertEqual(trims, [])
        clock.advance(2.0)
        self.assertEqual(trims, [0])
        heap.wrote(900)
        clock.advance(10)
        self.assertEqual(trims, [0])  # the count starts again after a trim
        heap.stop()


class NormalizePoseTests(unittest.TestCase):
    def test_floats_ints_missing_and_null(self):
        self.assertEqual(normalize_pose({"pos": {"x": 1.5, "y": 2, "z": None}, "rot": None}),
                         {"pos": {"x": 1.5, "y": 2.0, "z": 0.0},
                          "rot": {"x": 0.0, "y": 0.0, "z": 0.0}})
        self.assertEqual(normalize_pose({"pos": {"x": 1.0, "y": -2.0, "z": 3.0}}),
                         {"pos": {"x": 1.0, "y": -2.0, "z": 3.0},
                          "rot": {"x": 0.0, "y": 0.0, "z": 0.0}})
        self.assertIs(type(normalize_pose({"rot": {"x": 1, "y": 2.0, "z": 3.0}})["rot"]["x"]),
                      float)

    def test_refusals(self):
        from gtserver.vr.rooms import BadPose
        big = 1.7976931348623157e308
        for data in ("up", {"pos": 3}, {"pos": {"x": "1"}}, {"rot": {"y": True}},
                     {"pos": {"x": float("inf"), "y": 0.0, "z": 0.0}},
                     {"pos": {"x": 0.0, "y": float("nan"), "z": 0.0}},
                     {"rot": {"x": 0.0, "y": 0.0, "z": float("-inf")}},
                     {"pos": {"x": 10 ** 400}}, {"rot": {"y": -(10 ** 309)}}):
            self.assertRaises(BadPose, normalize_pose, data)
        self.assertEqual(normalize_pose({"pos": {"x": 10 ** 300}})["pos"]["x"], 1e300)
        # Large finite values are fine even where their sum would overflow.
        self.assertEqual(normalize_pose({"pos": {"x": big, "y": big, "z": big}})["pos"]["z"], big)
