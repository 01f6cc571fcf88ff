"""`mem://`: one dict per process, as CloudVolume's own mem:// is; for tests and notebooks."""

from __future__ import annotations

import itertools
import threading

from cirrus.errors import PreconditionFailed
from cirrus.storage.base import Blob

_OBJECTS: dict[str, tuple[bytes, str]] = {}
_LOCK = threading.Lock()
_VERSIONS = itertools.count(1)


class MemBackend:
    """Thread-safe conditional writes on a process-global dict keyed by full path."""

    def __init__(self, cloudpath: str):
        self.cloudpath = cloudpath.rstrip("/")

    def _path(self, key: str) -> str:
        return f"{self.cloudpath}/{key}"

    def get(self, key: str) -> Blob | None:
        with _LOCK:
            found = _OBJECTS.get(self._path(key))
        return None if found is None else Blob(found[0], found[1])

    def put_new(self, key: str, data: bytes) -> str:
        with _LOCK:
            if self._path(key) in _OBJECTS:
                raise PreconditionFailed("already exists", cloudpath=self.cloudpath, key=key)
            token = str(next(_VERSIONS))
            _OBJECTS[self._path(key)] = (bytes(data), token)
            return token

    def put_if_match(self, key: str, data: bytes, token: str) -> str:
        with _LOCK:
            found = _OBJECTS.get(self._path(key))
            if found is None or found[1] != token:
                raise PreconditionFailed("changed since read", cloudpath=self.cloudpath, key=key)
            new = str(next(_VERSIONS))
            _OBJECTS[self._path(key)] = (bytes(data), new)
            return new

    def list(self, prefix: str) -> list[str]:
        root = self._path("")
        with _LOCK:
            keys = [path[len(root):] for path in _OBJECTS if path.startswith(root + prefix)]
        return sorted(keys)
