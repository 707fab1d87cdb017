"""Salted, deliberately slow password hashes (scrypt from the standard library).

Hashing runs in threads so the reactor never waits for it: a small pool of
its own (``threads``, 1 by default), not the reactor's, so a burst of logins
queues there instead of taking every core and ``128 * r * 2**log2_n`` bytes
(16 MiB at the default cost) per thread at once. Blocks that large are
allocated so that they go back to the operating system when the hash is
done (see :func:`gtserver.core.memory.mmap_blocks_from`); glibc would keep
them in each hashing thread otherwise. Stored form:
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
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from gtserver.core.memory import mmap_blocks_from


class PasswordHasher:
    def __init__(self, log2_n: int = 14, r: int = 8, p: int = 1,
                 run_in_thread: Any = None, threads: int = 1, reactor: Any = None,
                 return_memory: bool = True) -> None:
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self.log2_n, self.r, self.p = log2_n, r, p
        self.threads = threads
        self.return_memory = return_memory
        self._prepared = False
        self._run_in = run_in_thread or self._run_in_pool
        self._reactor = reactor
        self._pool: ThreadPool | None = None
        self._shutdown_trigger: Any = None

    def _run_in_thread(self, function: Any, *arguments: Any) -> Deferred:
        if not self._prepared:
            self._prepared = True
            if self.return_memory:
                mmap_blocks_from(self.memory_bytes // 2)
        return self._run_in(function, *arguments)

    def _run_in_pool(self, function: Any, *arguments: Any) -> Deferred:
        if self._pool is None:
            self._start_pool()
        return deferToThreadPool(self._reactor, self._pool, function, *arguments)

    def _start_pool(self) -> None:
        if self._reactor is None:
            from twisted.internet import reactor
            self._reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=self.threads,
                                name="gtserver-passwords")
        self._pool.start()
        self._shutdown_trigger = self._reactor.addSystemEventTrigger(
            "during", "shutdown", self.stop)

    def stop(self) -> None:
        """Stop the hash threads (after the hashes queued); a later hash restarts them."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if self._shutdown_trigger is not None:
            try:
                self._reactor.removeSystemEventTrigger(self._shutdown_trigger)
            except (ValueError, KeyError):
                pass    # already running as part of the shutdown
            self._shutdown_trigger = None
        pool.stop()

    @property
    def memory_bytes(self) -> int:
        """What one hash at this cost allocates (scrypt's ``128 * r * n``)."""
        return 128 * self.r * 2 ** self.log2_n

    @property
    def dummy_hash(self) -> str:
        """A well-formed hash no password matches, at this hasher's cost."""
        zeros = base64.b64encode(bytes(16)).decode()
        return f"scrypt${self.log2_n}${self.r}${self.p}${zeros}${zeros}"

    def describe(self) -> str:
        return f"scrypt n=2^{self.log2_n} r={self.r} p={self.p}, {self.threads} thread(s)"

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
