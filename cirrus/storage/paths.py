"""From a CloudVolume cloudpath to the backend that stores its provenance objects."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from cirrus.errors import InvalidInput
from cirrus.storage.base import Backend, Store

_WRAPPERS: list[Callable[[Backend], Backend]] = []


def normalise_cloudpath(cloudpath: str) -> str:
    """The canonical name of a layer: no `precomputed://`, aliases resolved, no trailing slash."""
    from cloudfiles import paths

    if not isinstance(cloudpath, str) or not cloudpath.strip():
        raise InvalidInput(f"a volume cloudpath must be a non-empty string, got {cloudpath!r}")
    if "://" not in cloudpath:
        raise InvalidInput(
            f"{cloudpath!r} has no protocol; write gs://, s3://, file:// or mem:// in front of it"
        )
    try:
        parts = paths.extract(cloudpath)
    except Exception as error:  # cloudfiles raises its own UnsupportedProtocolError
        raise InvalidInput(
            f"{cloudpath!r} is not a cloudpath CloudVolume accepts: {error}"
        ) from None
    if parts.format not in (None, "precomputed"):
        raise InvalidInput(
            f"{cloudpath!r} is a {parts.format} layer; "
            "cirrus records provenance for precomputed layers"
        )
    path = parts.path.rstrip("/")
    if parts.protocol == "file":
        return f"file://{path}"
    if parts.protocol not in ("gs", "s3", "mem"):
        raise InvalidInput(
            f"{cloudpath!r}: protocol {parts.protocol}:// is not supported for provenance; "
            "use gs://, s3://, file:// or mem://"
        )
    host = f"{parts.host.rstrip('/')}/" if parts.host else ""
    return f"{parts.protocol}://{host}{parts.bucket}/{path}".rstrip("/")


def open_backend(cloudpath: str) -> Backend:
    """The raw backend for a layer, with any test wrappers (faults, counters) applied."""
    from cloudfiles import paths

    name = normalise_cloudpath(cloudpath)
    parts = paths.extract(name)
    backend: Backend
    if parts.protocol == "mem":
        from cirrus.storage.mem import MemBackend

        backend = MemBackend(name)
    elif parts.protocol == "file":
        from cirrus.storage.file import FileBackend

        backend = FileBackend(name)
    elif parts.protocol == "s3":
        from cirrus.storage.s3 import S3Backend

        backend = S3Backend(name, parts.bucket, parts.path.rstrip("/"), endpoint=parts.host)
    else:
        from cirrus.storage.gcs import GCSBackend

        backend = GCSBackend(name, parts.bucket, parts.path.rstrip("/"))
    for wrap in _WRAPPERS:
        backend = wrap(backend)
    return backend


def open_store(cloudpath: str) -> Store:
    """The retrying conditional store rooted at a layer."""
    return Store(open_backend(cloudpath))


@contextlib.contextmanager
def wrap_backends(wrapper: Callable[[Backend], Backend]) -> Iterator[None]:
    """Wrap every backend opened inside the block (fault injection, request counting)."""
    _WRAPPERS.append(wrapper)
    try:
        yield
    finally:
        _WRAPPERS.remove(wrapper)
