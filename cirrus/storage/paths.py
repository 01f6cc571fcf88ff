"""From a CloudVolume cloudpath to the backend that stores its provenance objects."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from typing import TypeVar

import attrs

from cirrus.errors import InvalidInput, plain_text
from cirrus.storage.base import Backend, Secrets, Store, check_secrets

_WRAPPERS: list[Callable[[Backend], Backend]] = []
_GIVEN_SECRETS: dict[str, Secrets] = {}  # layer -> credentials given for it in this process


@attrs.frozen
class LayerPath:
    """A layer's location: protocol, bucket, path, endpoint and the CloudFiles alias named.

    An alias (`matrix://`, one from `cloudfiles.paths.add_alias`) stays in the name: it selects
    the endpoint and the credentials (`<alias>-secret.json`), as in CloudFiles.
    """

    protocol: str
    bucket: str
    path: str
    host: str = ""
    alias: str = ""

    @property
    def name(self) -> str:
        """The canonical cloudpath, used as the layer's identity in records."""
        if self.protocol == "file":
            return f"file://{self.path}"
        if self.alias:
            return f"{self.alias}://{self.bucket}/{self.path}".rstrip("/")
        host = f"{self.host}/" if self.host else ""
        return f"{self.protocol}://{host}{self.bucket}/{self.path}".rstrip("/")


_DIRECT = re.compile(r"(gs|s3|mem)://(?:(https?://[^/]+)/)?([^/]+)/?(.*)")


def parse_cloudpath(cloudpath: str) -> LayerPath:
    """Parse a CloudVolume cloudpath without importing CloudFiles, unless it is an alias."""
    if not isinstance(cloudpath, str) or not cloudpath.strip():
        raise InvalidInput(f"a volume cloudpath must be a non-empty string, got {cloudpath!r}")
    _refuse_outer_whitespace(cloudpath)
    path = cloudpath
    if path.startswith("precomputed://"):
        path = path[len("precomputed://") :]
    if "://" not in path:
        raise InvalidInput(
            f"{cloudpath!r} has no protocol; write gs://, s3://, file:// or mem:// in front of it"
        )
    if path.startswith("file://"):
        local = os.path.abspath(os.path.expanduser(path[len("file://") :]))
        return LayerPath("file", "", local.rstrip("/") or "/")
    direct = _DIRECT.fullmatch(path)
    if direct:
        protocol, host, bucket, rest = direct.groups()
        return LayerPath(protocol, bucket, rest.rstrip("/"), (host or "").rstrip("/"))
    return _parse_with_cloudfiles(cloudpath)


def _refuse_outer_whitespace(cloudpath: str) -> None:
    """CloudVolume keeps a trailing space (`a/b /info`): dropping it would file provenance apart."""
    if cloudpath != cloudpath.strip():
        raise InvalidInput(
            f"{cloudpath!r} has whitespace at its start or end, which CloudVolume does not "
            "strip (a layer `a/b ` is another layer than `a/b`); remove it"
        )


def _parse_with_cloudfiles(cloudpath: str) -> LayerPath:
    """Aliases (`matrix://`, user-registered ones) and other formats resolve through CloudFiles."""
    from cloudfiles import paths

    try:
        parts = paths.extract(cloudpath)
    except Exception as error:  # cloudfiles raises its own UnsupportedProtocolError
        reason = " ".join(plain_text(error).split())
        raise InvalidInput(
            f"{cloudpath!r} is not a cloudpath CloudVolume accepts: {reason}"
        ) from None
    if parts.format not in (None, "precomputed"):
        raise InvalidInput(
            f"{cloudpath!r} is a {parts.format} layer; "
            "cirrus records provenance for precomputed layers"
        )
    if parts.protocol not in ("gs", "s3", "mem", "file"):
        raise InvalidInput(
            f"{cloudpath!r}: protocol {parts.protocol}:// is not supported for provenance; "
            "use gs://, s3://, file:// or mem://"
        )
    if parts.protocol == "file":
        return LayerPath("file", "", parts.path.rstrip("/") or "/")
    host = (parts.host or "").rstrip("/")
    return LayerPath(parts.protocol, parts.bucket, parts.path.rstrip("/"), host, parts.alias or "")


def normalise_cloudpath(cloudpath: str) -> str:
    """The canonical name of a layer: no `precomputed://`, no trailing slash; aliases kept."""
    return parse_cloudpath(cloudpath).name


def use_secrets(cloudpath: str, secrets: Secrets) -> None:
    """Reach `cloudpath`'s provenance with `secrets` in this process, as CloudVolume(cloudpath,
    secrets=...) reaches its data; None goes back to CloudFiles' credential files.

    `s.volume(path, secrets=...)` calls this, so the records, the step files and any roll-forward
    on the layer use the credentials its data was written with.
    """
    layer = parse_cloudpath(cloudpath)
    if secrets is None:
        _GIVEN_SECRETS.pop(layer.name, None)
    elif layer.protocol in ("s3", "gs"):  # file:// and mem:// take none, as in CloudFiles
        _GIVEN_SECRETS[layer.name] = check_secrets(secrets, layer.protocol)


def open_backend(cloudpath: str, secrets: Secrets = None) -> Backend:
    """The raw backend for a layer, with any test wrappers (faults, counters) applied.

    `secrets`: the layer's credentials; by default those given to `use_secrets`, else
    CloudFiles' credential files."""
    layer = parse_cloudpath(cloudpath)
    if secrets is None:
        secrets = _GIVEN_SECRETS.get(layer.name)
    backend: Backend
    if layer.protocol == "mem":
        from cirrus.storage.mem import MemBackend

        backend = MemBackend(layer.name)
    elif layer.protocol == "file":
        from cirrus.storage.file import FileBackend

        backend = FileBackend(layer.name)
    elif layer.protocol == "s3":
        from cirrus.storage.s3 import S3Backend

        backend = S3Backend(
            layer.name,
            layer.bucket,
            layer.path,
            endpoint=layer.host or None,
            service=layer.alias or "s3",
            secrets=secrets,
        )
    else:
        from cirrus.storage.gcs import GCSBackend

        backend = GCSBackend(layer.name, layer.bucket, layer.path, secrets=secrets)
    for wrap in _WRAPPERS:
        backend = wrap(backend)
    return backend


def open_store(cloudpath: str, secrets: Secrets = None) -> Store:
    """The retrying conditional store rooted at a layer."""
    return Store(open_backend(cloudpath, secrets))


_OnLayer = TypeVar("_OnLayer", bound="OnLayer")


@attrs.define
class OnLayer:
    """Objects under one layer: its normalised cloudpath and the store that reaches them."""

    cloudpath: str
    store: Store

    @classmethod
    def open(cls: type[_OnLayer], cloudpath: str, secrets: Secrets = None) -> _OnLayer:
        """The layer's objects, through `secrets` if given (as CloudVolume's `secrets=`)."""
        name = normalise_cloudpath(cloudpath)
        return cls(name, open_store(name, secrets))

    @classmethod
    def beside(cls: type[_OnLayer], other: OnLayer) -> _OnLayer:
        """The same layer through `other`'s store, so both share its connections and wrappers."""
        return cls(other.cloudpath, other.store)


@contextlib.contextmanager
def wrap_backends(wrapper: Callable[[Backend], Backend]) -> Iterator[None]:
    """Wrap every backend opened inside the block (fault injection, request counting)."""
    _WRAPPERS.append(wrapper)
    try:
        yield
    finally:
        _WRAPPERS.remove(wrapper)
