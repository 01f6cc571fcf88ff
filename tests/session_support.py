"""Helpers shared by the session tests: real layers, processes and storage request counters."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from tests import layers

CHUNK = 64


def make_layer(
    path: str,
    *,
    size: tuple[int, int, int] = (128, 128, 64),
    layer_type: str = "image",
    dtype: str = "uint8",
) -> Any:
    """A new, empty precomputed layer (info only), written with plain CloudVolume."""
    return layers.make_layer(path, size, CHUNK, layer_type=layer_type, dtype=dtype)


def plain(path: str) -> Any:
    """A plain cloudvolume.CloudVolume (no cirrus) for reading back."""
    from cloudvolume import CloudVolume

    return CloudVolume(path, progress=False, fill_missing=True)


def process(description: str = "test step", **parameters: Any) -> Any:
    import cirrus

    return cirrus.Process(description, parameters or {"threshold": 0.3, "sizes": [1, 2]})


class StaticEnv:
    """A code environment whose JSON is fixed (cirrus's own envs capture the real machine)."""

    def __init__(self, name: str = "static"):
        self.name = name

    def to_json(self) -> dict[str, Any]:
        return {"kind": "static", "name": self.name}


def chunk_of(value: int) -> np.ndarray:
    return np.full((CHUNK, CHUNK, CHUNK), value % 251, dtype=np.uint8)


def chunk_origins(size: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    return [
        (x, y, z)
        for x in range(0, size[0], CHUNK)
        for y in range(0, size[1], CHUNK)
        for z in range(0, size[2], CHUNK)
    ]


class KeyCounter:
    """Counts backend calls per (method, key kind); `provenance` is the summary's key."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str, str]] = Counter()  # layer, method, key kind
        self._lock = threading.Lock()

    @staticmethod
    def kind(key: str) -> str:
        if key == "provenance":
            return "summary"
        for part in ("records", "envs", "corrupt", "steps", "journals"):
            if key.startswith(f"provenance.d/{part}/"):
                return part
        return key

    def add(self, layer: str, method: str, key: str) -> None:
        with self._lock:
            self.calls[(layer, method, self.kind(key))] += 1

    def count(self, layer: str | None = None, method: str | None = None, kind: str | None = None):
        return sum(
            n
            for (lay, meth, knd), n in self.calls.items()
            if (layer is None or lay == layer)
            and (method is None or meth == method)
            and (kind is None or knd == kind)
        )


class KeyCountingBackend:
    """A pass-through backend that tells a KeyCounter which keys it was asked for."""

    def __init__(self, backend: Any, counter: KeyCounter):
        self.backend = backend
        self.cloudpath = backend.cloudpath
        self.counter = counter

    def get(self, key: str) -> Any:
        self.counter.add(self.cloudpath, "get", key)
        return self.backend.get(key)

    def list(self, prefix: str) -> list[str]:
        self.counter.add(self.cloudpath, "list", prefix)
        return self.backend.list(prefix)

    def put_new(self, key: str, data: bytes) -> str:
        self.counter.add(self.cloudpath, "put_new", key)
        return self.backend.put_new(key, data)

    def put_if_match(self, key: str, data: bytes, token: str) -> str:
        self.counter.add(self.cloudpath, "put_if_match", key)
        return self.backend.put_if_match(key, data, token)


class WriteHook:
    """A pass-through backend that calls `before(cloudpath, key)` ahead of every write and
    `after(cloudpath, key)` once it has landed: to fail, signal or commit at an exact point."""

    def __init__(self, backend: Any, before: Any = None, after: Any = None):
        self.backend = backend
        self.cloudpath = backend.cloudpath
        self.before = before or (lambda _cloudpath, _key: None)
        self.after = after or (lambda _cloudpath, _key: None)

    def get(self, key: str) -> Any:
        return self.backend.get(key)

    def list(self, prefix: str) -> list[str]:
        return self.backend.list(prefix)

    def put_new(self, key: str, data: bytes) -> str:
        self.before(self.cloudpath, key)
        token = self.backend.put_new(key, data)
        self.after(self.cloudpath, key)
        return token

    def put_if_match(self, key: str, data: bytes, token: str) -> str:
        self.before(self.cloudpath, key)
        token = self.backend.put_if_match(key, data, token)
        self.after(self.cloudpath, key)
        return token


REPO = str(Path(__file__).resolve().parents[1])  # a child's cwd, so its script imports `tests`


def hooked(before: Any = None, after: Any = None) -> Any:
    """`wrap_backends` with a WriteHook on every backend opened in the block."""
    from cirrus.storage import wrap_backends

    return wrap_backends(lambda backend: WriteHook(backend, before, after))


def provenance_keys(path: str) -> list[str]:
    """Every provenance object of a layer (through cirrus's own store, unwrapped)."""
    from cirrus.storage import open_store

    store = open_store(path)
    keys = store.list("provenance.d/")
    if store.get("provenance") is not None:
        keys.append("provenance")
    return sorted(keys)


def summary_json(path: str) -> dict[str, Any] | None:
    from cirrus.storage import open_store

    blob = open_store(path).get("provenance")
    return None if blob is None else json.loads(blob.data)


def raw_summary(path: str) -> bytes | None:
    from cirrus.storage import open_store

    blob = open_store(path).get("provenance")
    return None if blob is None else blob.data


def put_raw(path: str, key: str, data: bytes) -> None:
    """Write an object blindly with CloudFiles, as a foreign tool would."""
    from cloudfiles import CloudFiles

    CloudFiles(path).put(key, data, compress=None, raw=True)


def chunk_files(path: str) -> list[str]:
    """Chunk files (and other non-provenance objects) under a layer, via CloudFiles."""
    from cloudfiles import CloudFiles

    return sorted(
        key for key in CloudFiles(path).list() if key != "info" and not key.startswith("provenance")
    )
