"""Salted, deliberately slow password hashes (scrypt from the standard library).

Hashing runs in a thread so the reactor never waits for it. Stored form:
``scrypt$<log2 n>$<r>$<p>$<salt b64>$<hash b64>``, so the cost can be raised
later without invalidating existing hashes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread


class PasswordHasher:
    def __init__(self, log2_n: int = 14, r: int = 8, p: int = 1,
                 run_in_thread: Any = deferToThread) -> None:
        self.log2_n, self.r, self.p = log2_n, r, p
        self._run_in_thread = run_in_thread

    @property
    def dummy_hash(self) -> str:
        """A well-formed hash no password matches, at this hasher's cost."""
        zeros = base64.b64encode(bytes(16)).decode()
        return f"scrypt${self.log2_n}${self.r}${self.p}${zeros}${zeros}"

    def describe(self) -> str:
        return f"scrypt n=2^{self.log2_n} r={self.r} p={self.p}"

    def hash(self, password: str) -> Deferred:
        """Deferred firing with the encoded hash of ``password``."""
        return self._run_in_thread(self._hash_blocking, password, secrets.token_bytes(16),
                                   self.log2_n, self.r, self.p)

    def verify(self, password: str, encoded: str | None) -> Deferred:
        """Deferred firing with True when ``password`` matches ``encoded``."""
        return self._run_in_thread(self._verify_blocking, password, encoded)

    @staticmethod
    def _derive(password: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
        return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=2 ** log2_n, r=r, p=p,
                              maxmem=256 * 1024 * 1024, dklen=32)

    @classmethod
    def _hash_blocking(cls, password: str, salt: bytes, log2_n: int, r: int, p: int) -> str:
        digest = cls._derive(password, salt, log2_n, r, p)
        b64 = base64.b64encode
        return f"scrypt${log2_n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"

    @classmethod
    def _verify_blocking(cls, password: str, encoded: str | None) -> bool:
        try:
            scheme, log2_n, r, p, salt, digest = (encoded or "").split("$")
            if scheme != "scrypt":
                return False
            expected = base64.b64decode(digest)
            actual = cls._derive(password, base64.b64decode(salt), int(log2_n), int(r), int(p))
        except ValueError:
            return False
        return hmac.compare_digest(actual, expected)
