"""`file://`: conditional writes on a local or shared filesystem, safe across processes.

CloudFiles writes `file://` objects in place, so a reader can see half an object and two writers
can interleave. Here every object is written to a temp file first and then published atomically:
`os.link` for create-only (fails if the name exists) and `os.replace` for compare-and-swap, the
compare and the replace done under an exclusive lock on a per-key lock file. A process forked
while a lock is held does not keep it: the child closes its inherited copy of the descriptor.

CloudFiles stores a compressed object beside the name (`provenance.gz`, `.br`, ...). A gzip one
is read; none is ever written over, since a plain `provenance` beside it would be a second
summary that CloudVolume might read instead.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gzip
import os
import secrets
import threading
from collections.abc import Iterator

from cirrus.canonical import sha256_hex
from cirrus.errors import (
    PermanentStorageError,
    PreconditionFailed,
    TransientStorageError,
    UnreadableEncoding,
)
from cirrus.storage.base import Blob

_HIDDEN = ".cirrus-"  # temp and lock files start with this and are never listed
NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK}
_TRANSIENT_ERRNOS = {errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.ETIMEDOUT, errno.ESTALE}

# CloudFiles' suffixes for a compressed object, in the order it tries them.
_COMPRESSED = (".gz", ".br", ".zstd", ".xz", ".bz2")

# flock excludes other open file descriptions, but on NFS Linux emulates it with per-process
# POSIX locks: a per-path thread lock keeps threads of one process apart there too.
_THREAD_LOCKS: dict[str, threading.Lock] = {}
# Lock-file descriptors open in this process. The guard is held while one is opened or closed
# and across fork(), so a child knows exactly which descriptors it inherited.
_LOCK_FDS: dict[int, object] = {}  # descriptor -> the token of the `_locked` that opened it
_GUARD = threading.Lock()


def _before_fork() -> None:
    """Hold the guard across fork(): no descriptor is half opened or half closed in the child."""
    _GUARD.acquire()


def _after_fork_in_parent() -> None:
    _GUARD.release()


def _after_fork_in_child() -> None:
    """Give up the parent's locks: close inherited lock descriptors (the parent's flock stays
    held until the parent closes its own) and start with unlocked thread locks."""
    global _GUARD, _THREAD_LOCKS
    for fd in list(_LOCK_FDS):
        with contextlib.suppress(OSError):
            os.close(fd)
    _LOCK_FDS.clear()
    _THREAD_LOCKS = {}
    _GUARD = threading.Lock()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)


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
        except (FileNotFoundError, NotADirectoryError):  # the latter: a file where a folder is
            return None if "/" in key else self._get_compressed(path, key)
        except OSError as error:
            raise self._error(error, key, "read") from error
        return Blob(data, _token(data))

    def _get_compressed(self, path: str, key: str) -> Blob | None:
        """A missing top-level object CloudFiles stored compressed (the layer's `provenance`,
        `info`): gzip is read, others refused."""
        found = _compressed_beside(path)
        if found is None:
            return None
        if not found.endswith(".gz"):
            raise UnreadableEncoding(
                f"it is stored compressed as {found}, which cirrus does not read (only plain "
                f"or gzip); decompress it to {path} (and remove {found})",
                cloudpath=self.cloudpath,
                key=key,
            )
        try:
            with gzip.open(found, "rb") as f:
                data = f.read()
        except FileNotFoundError:  # decompressed meanwhile
            return self.get(key)
        except (OSError, EOFError) as error:
            raise PermanentStorageError(
                f"cannot read {found} as gzip: {error}", cloudpath=self.cloudpath, key=key
            ) from None
        return Blob(data, _token(data))

    def _refuse_beside_compressed(self, path: str, key: str) -> None:
        """Writing `path` beside a compressed copy would leave two objects CloudFiles may read.
        Only the layer's own files (`provenance`, `info`) are ever written compressed."""
        found = None if "/" in key else _compressed_beside(path)
        if found is not None:
            raise PermanentStorageError(
                f"{found} holds this object compressed (CloudFiles put(..., compress=...)); "
                f"cirrus will not write a second, plain {os.path.basename(path)} beside it, "
                f"which CloudVolume could read instead. Decompress it in place (for gzip: "
                f"`gunzip {found}`), then retry",
                cloudpath=self.cloudpath,
                key=key,
            )

    def put_new(self, key: str, data: bytes) -> str:
        path = self._path(key)
        self._refuse_beside_compressed(path, key)
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
            if error.errno not in NO_HARD_LINKS:
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
                self._refuse_beside_compressed(path, key)
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
        with _GUARD:
            thread_lock = _THREAD_LOCKS.setdefault(lock_path, threading.Lock())
        with thread_lock:
            fd, owner = _open_lock_file(lock_path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                _close_lock_file(fd, owner)  # closing the descriptor releases the lock

    def _error(self, error: OSError, key: str, action: str) -> Exception:
        kind = TransientStorageError if error.errno in _TRANSIENT_ERRNOS else PermanentStorageError
        advice = ""
        if error.errno in (errno.EACCES, errno.EPERM):
            advice = (
                f"; every writer of this layer needs write access to {self.root} and its "
                "directories, and read access to the files in them (shared layers: make them "
                "group-writable)"
            )
        return kind(
            f"cannot {action} {error.filename or key}: {error.strerror or error}{advice}",
            cloudpath=self.cloudpath,
            key=key,
        )


def _compressed_beside(path: str) -> str | None:
    """The compressed copy CloudFiles would read for `path` (`path.gz`, ...), if there is one."""
    for suffix in _COMPRESSED:
        if os.path.exists(path + suffix):
            return path + suffix
    return None


def _open_lock_file(lock_path: str) -> tuple[int, object]:
    """A read-only descriptor of the lock file (flock needs no write access), created if absent.

    A new lock file is made readable and writable by all, whatever the umask, so that the other
    users of a shared layer can open it too; it never holds any data.
    """
    with _GUARD:
        try:
            fd = os.open(lock_path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            fd = os.open(lock_path, os.O_RDONLY)
        else:
            with contextlib.suppress(OSError):  # some FUSE and SMB mounts refuse chmod
                os.fchmod(fd, 0o666)
        owner = _LOCK_FDS[fd] = object()
    return fd, owner


def _close_lock_file(fd: int, owner: object) -> None:
    """Close a lock descriptor unless a fork closed it already (in the child that forked
    inside the lock, the number may since name another file)."""
    with _GUARD:
        if _LOCK_FDS.get(fd) is owner:
            del _LOCK_FDS[fd]
            os.close(fd)
