"""`mem://`: CloudFiles' own in-process buckets, so CloudVolume reads what cirrus writes.

Like CloudVolume's mem://, it lives in one process and is empty in child processes. The version
token is the content's sha256, so a write by anyone else (CloudVolume included) changes it.
"""

from __future__ import annotations

import posixpath
import threading

from cirrus.canonical import sha256_hex
from cirrus.errors import PreconditionFailed
from cirrus.storage.base import Blob

_LOCK = threading.Lock()


# The version token is the content's sha256, so a token never matches different bytes.
_token = sha256_hex


class MemBackend:
    """Conditional writes on the dict CloudFiles keeps for a mem:// bucket."""

    def __init__(self, cloudpath: str):
        from cloudfiles import interfaces, paths

        self.cloudpath = cloudpath.rstrip("/")
        parts = paths.extract(self.cloudpath)
        with interfaces.MEM_BUCKET_POOL_LOCK:
            pool = interfaces.MEM_POOL[interfaces.MemoryPoolParams(parts.bucket)]
        self._objects = pool.get_connection(None, None)
        self._root = parts.path.rstrip("/")

    def _path(self, key: str) -> str:
        return posixpath.join(self._root, key)

    def get(self, key: str) -> Blob | None:
        data = self._objects.get(self._path(key))
        return None if data is None else Blob(bytes(data), _token(data))

    def put_new(self, key: str, data: bytes) -> str:
        with _LOCK:
            if self._path(key) in self._objects:
                raise PreconditionFailed("already exists", cloudpath=self.cloudpath, key=key)
            self._objects[self._path(key)] = bytes(data)
        return _token(data)

    def put_if_match(self, key: str, data: bytes, token: str) -> str:
        with _LOCK:
            current = self._objects.get(self._path(key))
            if current is None or _token(current) != token:
                raise PreconditionFailed("changed since read", cloudpath=self.cloudpath, key=key)
            self._objects[self._path(key)] = bytes(data)
        return _token(data)

    def list(self, prefix: str) -> list[str]:
        root = self._path("")
        start = root + prefix
        return sorted(path[len(root) :] for path in list(self._objects) if path.startswith(start))
