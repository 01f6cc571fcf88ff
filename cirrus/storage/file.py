"""`file://`: conditional writes on a local or shared filesystem, safe across processes.

CloudFiles writes `file://` objects in place, so a reader can see half an object and two writers
can interleave. Here every object is written to a temp file first and then published atomically:
`os.link` for create-only (fails if the name exists) and `os.replace` for compare-and-swap, the
compare and the replace done under an exclusive lock on a per-key lock file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import threading
from collections.abc import Iterator

from cirrus.canonical import sha256_hex
from cirrus.errors import PermanentStorageError, PreconditionFailed, TransientStorageError
from cirrus.storage.base import Blob

_HIDDEN = ".cirrus-"  # temp and lock files start with this and are never listed
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK}
_TRANSIENT_ERRNOS = {errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.ETIMEDOUT, errno.ESTALE}

# flock excludes other open file descriptions, but on NFS Linux emulates it with per-process
# POSIX locks: a per-path thread lock keeps threads of one process apart there too.
_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


# The version token is the content's sha256, so a token never matches different bytes.
_token = sha256_hex


class FileBackend:
    """Conditional writes under the directory a `file:///abs/path` cloudpath names."""

    def __init__(self, cloudpath: str):
        self.cloudpath = cloudpath.rstrip("/")
        self.root = self.cloudpath.removeprefix("file://")

    def get(self, key: str) -> Blob | None:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise self._error(error, key, "read") from error
        return Blob(data, _token(data))

    def put_new(self, key: str, data: bytes) -> str:
        path = self._path(key)
        try:
            temp = self._write_temp(path, data)
            try:
                self._publish_new(temp, path, key)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
        except OSError as error:
            raise self._error(error, key, "create") from error
        return _token(data)

    def _publish_new(self, temp: str, path: str, key: str) -> None:
        """Give the written temp file its final name, only if that name is free."""
        try:
            os.link(temp, path)  # atomic, and fails if the name exists
            return
        except FileExistsError:
            raise PreconditionFailed("already exists", cloudpath=self.cloudpath, key=key) from None
        except OSError as error:
            if error.errno not in _NO_HARD_LINKS:
                raise
        # No hard links on this file system (some FUSE and SMB mounts): check and rename
        # under the key's lock instead, which every writer of this file system takes.
        with self._locked(path):
            if os.path.exists(path):
                raise PreconditionFailed("already exists", cloudpath=self.cloudpath, key=key)
            os.replace(temp, path)

    def put_if_match(self, key: str, data: bytes, token: str) -> str:
        path = self._path(key)
        try:
            with self._locked(path):
                current = self.get(key)
                if current is None or current.token != token:
                    raise PreconditionFailed(
                        "changed since read", cloudpath=self.cloudpath, key=key
                    )
                temp = self._write_temp(path, data)
                try:
                    os.replace(temp, path)
                except BaseException:
                    os.unlink(temp)
                    raise
        except OSError as error:
            raise self._error(error, key, "replace") from error
        return _token(data)

    def list(self, prefix: str) -> list[str]:
        start = os.path.join(self.root, os.path.dirname(prefix))
        keys = []
        for directory, _, names in os.walk(start, onerror=self._walk_error):
            relative = os.path.relpath(directory, self.root)
            for name in names:
                if name.startswith(_HIDDEN):
                    continue
                key = name if relative == "." else f"{relative}/{name}".replace(os.sep, "/")
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def _walk_error(self, error: OSError) -> None:
        if not isinstance(error, FileNotFoundError):  # a missing layer simply has no keys
            raise self._error(error, "", "list")

    def _path(self, key: str) -> str:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise PermanentStorageError(
                "keys must be relative paths without empty, '.' or '..' parts",
                cloudpath=self.cloudpath,
                key=key,
            )
        return os.path.join(self.root, *parts)

    def _write_temp(self, path: str, data: bytes) -> str:
        """Write `data` durably to a hidden temp file beside `path` and return its name."""
        directory, name = os.path.split(path)
        os.makedirs(directory, exist_ok=True)
        temp = os.path.join(directory, f"{_HIDDEN}tmp-{name}-{secrets.token_hex(8)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            os.unlink(temp)
            raise
        return temp

    @contextlib.contextmanager
    def _locked(self, path: str) -> Iterator[None]:
        """Hold the exclusive lock of one key, across threads and processes."""
        directory, name = os.path.split(path)
        os.makedirs(directory, exist_ok=True)
        lock_path = os.path.join(directory, f"{_HIDDEN}lock-{name}")
        with _THREAD_LOCKS_GUARD:
            thread_lock = _THREAD_LOCKS.setdefault(lock_path, threading.Lock())
        with thread_lock:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing the descriptor releases the lock

    def _error(self, error: OSError, key: str, action: str) -> Exception:
        kind = TransientStorageError if error.errno in _TRANSIENT_ERRNOS else PermanentStorageError
        return kind(
            f"cannot {action} {error.filename or key}: {error.strerror or error}",
            cloudpath=self.cloudpath,
            key=key,
        )
