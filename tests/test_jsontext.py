"""The strict JSON every listener reads (gtserver.jsontext), as a property of its inputs."""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from gtserver import jsontext

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


class LoadsTests(unittest.TestCase):
    @given(values, st.sampled_from(["utf-8", "utf-16-le", "utf-16-be", "utf-32"]))
    def test_reads_what_json_reads(self, value, encoding):
        text = json.dumps(value, ensure_ascii=False)
        self.assertEqual(jsontext.loads(text), json.loads(text))
        self.assertEqual(jsontext.loads(text.encode(encoding, "surrogatepass")),
                         json.loads(text.encode(encoding, "surrogatepass")))

    @given(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-2e999"]))
    def test_refuses_numbers_beyond_a_double(self, number):
        for text in (number, f'{{"a": [1, {number}]}}'):
            with self.assertRaises(jsontext.NonFinite) as refused:
                jsontext.loads(text)
            self.assertEqual(refused.exception.text, number)
            self.assertEqual(refused.exception.constant, not number[-1].isdigit())

    def test_large_finite_numbers_pass(self):
        self.assertEqual(jsontext.loads("[1e308, 123456789012345678901234567890]"),
                         [1e308, 123456789012345678901234567890])
        self.assertFalse(math.isinf(jsontext.loads("1.7976931348623157e308")))

    def test_a_bom_is_refused_in_text_and_read_in_bytes(self):
        with self.assertRaises(ValueError):
            jsontext.loads("\ufeff[1]")
        self.assertEqual(jsontext.loads("\ufeff[1]".encode("utf-8")), [1])


class UnstorableTests(unittest.TestCase):
    @given(values)
    def test_the_quick_byte_check_never_misses(self, value):
        """Bytes that may_hold_unstorable passes decode to storable text."""
        for raw in (json.dumps(value).encode(),
                    json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"),
                    json.dumps(value).encode("utf-16-le")):
            if not jsontext.may_hold_unstorable(raw):
                self.assertIsNone(jsontext.unstorable(jsontext.loads(raw)))

    def test_finds_nul_and_lone_surrogates_anywhere(self):
        for value in ("a\0b", ["x", {"k": "\ud800"}], {"\udfff": 1}, [[[["\0"]]]]):
            self.assertIsNotNone(jsontext.unstorable(value), value)
        self.assertIsNone(jsontext.unstorable({"key": "\ud800", "x": "ok"}, skip="key"))
        self.assertIsNone(jsontext.unstorable(["emoji \U0001f600", {"k": None}]))
