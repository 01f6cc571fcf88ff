"""Backend wrappers for tests and benchmarks: injected faults and latency, and call counting.

Use them on every backend opened in a block::

    with cirrus.storage.wrap_backends(lambda b: FaultyBackend(b, error_rate=0.3, seed=1)):
        ...
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from cirrus.errors import TransientStorageError
from cirrus.storage.base import Backend, Blob

T = TypeVar("T")
_COUNTER_LOCK = threading.Lock()


class FaultyBackend:
    """Adds latency, fails calls before they run, and loses responses of writes that succeeded.

    `error_rate`: chance a call raises TransientStorageError without reaching the backend.
    `lost_response_rate`: chance a write is applied but the caller gets TransientStorageError.
    """

    def __init__(
        self,
        backend: Backend,
        error_rate: float = 0.0,
        lost_response_rate: float = 0.0,
        latency: float = 0.0,
        seed: int | None = None,
    ):
        self.backend = backend
        self.cloudpath = backend.cloudpath
        self.error_rate = error_rate
        self.lost_response_rate = lost_response_rate
        self.latency = latency
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def get(self, key: str) -> Blob | None:
        return self._call("get", key, self.backend.get, key)

    def list(self, prefix: str) -> list[str]:
        return self._call("list", prefix, self.backend.list, prefix)

    def put_new(self, key: str, data: bytes) -> str:
        return self._write("put_new", key, self.backend.put_new, key, data)

    def put_if_match(self, key: str, data: bytes, token: str) -> str:
        return self._write("put_if_match", key, self.backend.put_if_match, key, data, token)

    def _chance(self, rate: float) -> bool:
        with self._lock:
            return rate > 0 and self._random.random() < rate

    def _call(self, name: str, key: str, fn: Callable[..., T], *args: object) -> T:
        if self.latency:
            time.sleep(self.latency)
        if self._chance(self.error_rate):
            raise TransientStorageError(
                f"injected failure of {name}", cloudpath=self.cloudpath, key=key
            )
        return fn(*args)

    def _write(self, name: str, key: str, fn: Callable[..., str], *args: object) -> str:
        token = self._call(name, key, fn, *args)
        if self._chance(self.lost_response_rate):
            raise TransientStorageError(
                f"injected lost response of {name} (the write was applied)",
                cloudpath=self.cloudpath,
                key=key,
            )
        return token


class CountingBackend:
    """Counts calls per method name in a Counter that several backends may share."""

    def __init__(self, backend: Backend, counter: Counter[str]):
        self.backend = backend
        self.cloudpath = backend.cloudpath
        self.counter = counter

    def _count(self, name: str) -> None:
        with _COUNTER_LOCK:
            self.counter[name] += 1

    def get(self, key: str) -> Blob | None:
        self._count("get")
        return self.backend.get(key)

    def list(self, prefix: str) -> list[str]:
        self._count("list")
        return self.backend.list(prefix)

    def put_new(self, key: str, data: bytes) -> str:
        self._count("put_new")
        return self.backend.put_new(key, data)

    def put_if_match(self, key: str, data: bytes, token: str) -> str:
        self._count("put_if_match")
        return self.backend.put_if_match(key, data, token)
