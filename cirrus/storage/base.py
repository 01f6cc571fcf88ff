"""The conditional object store cirrus keeps its provenance objects in.

A *backend* speaks one protocol and raises only `cirrus.errors` storage errors, classified as
conflict (`PreconditionFailed`), transient or permanent. `Store` puts the one retry policy and
the read-back-and-compare rule for ambiguous creates on top of any backend.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs

from cirrus.errors import InvalidInput, PreconditionFailed, StorageError
from cirrus.storage.retry import RetryPolicy

# Requests to one endpoint that a process's client keeps connections open for: a commit
# overlaps this many volumes, so none of its requests waits for, or discards, a connection.
CONNECTIONS = 128
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})  # 501: the server lacks it
CONTENDED_DEADLINE = 300.0  # seconds `Store.update` keeps re-applying a change that conflicts
NOT_READ = object()  # `Store.update(read=...)`: the object has not been read yet


class ClientCache:
    """Cloud clients by key, made once per process. A forked child makes its own: a parent's
    pooled keep-alive sockets shared with a child cross their answers."""

    def __init__(self) -> None:
        self._forget()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at the fork
        self._clients: dict[Any, Any] = {}

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._clients:
                self._clients[key] = make()
            return self._clients[key]


def certificate_failure(error: BaseException) -> bool:
    """Whether `error` comes from a TLS certificate that failed verification: a connection
    error to the libraries, but one no retry fixes. Follows causes, `reason` and `args`."""
    import ssl

    seen: set[int] = set()
    pending: list[Any] = [error]
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        seen.add(id(current))
        pending += [current.__cause__, current.__context__, getattr(current, "reason", None)]
        pending += list(current.args)
    return False


# Credentials given in place of CloudFiles' secret files, as CloudVolume(path, secrets=...) takes
# them: a dict or its JSON text (S3 keys, or a Google service-account key), or for gs:// a
# google-auth credentials object. None: the files.
Secrets = Any


def is_credentials_object(secrets: Secrets) -> bool:
    """A google-auth credentials object, which CloudFiles passes to the GCS client as it is."""
    return callable(getattr(secrets, "before_request", None))


_SECRET_KEYS = {  # what CloudFiles reads from given secrets, per protocol
    "s3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    "gs": ("client_email", "private_key"),  # a Google service-account key
}


def check_secrets(secrets: Secrets, protocol: str) -> Secrets:
    """`secrets` for a `protocol` store, checked now: a clear error for what it cannot use."""
    if protocol == "gs" and is_credentials_object(secrets):
        return secrets
    found = given_secrets(secrets)
    missing = [key for key in _SECRET_KEYS.get(protocol, ()) if key not in found]
    if missing:
        raise InvalidInput(
            f"secrets for {protocol}:// have no {', '.join(missing)}; give "
            + (
                "the keys as CloudVolume takes them: {'AWS_ACCESS_KEY_ID': ..., "
                "'AWS_SECRET_ACCESS_KEY': ...}"
                if protocol == "s3"
                else "the contents of a service-account JSON key file, or a google-auth "
                "credentials object"
            )
        )
    return found


def given_secrets(secrets: Mapping[str, Any] | str) -> dict[str, Any]:
    """Credentials passed in, as a dict; a clear error for anything CloudVolume would refuse."""
    try:
        found = json.loads(secrets) if isinstance(secrets, str) else dict(secrets)
    except (ValueError, TypeError) as error:
        raise InvalidInput(
            f"secrets must be a dict of credentials or its JSON text, as CloudVolume takes "
            f"them: {error}"
        ) from None
    if not isinstance(found, dict):
        raise InvalidInput(f"secrets must be a dict of credentials, got {type(found).__name__}")
    return found


@attrs.frozen
class Blob:
    """An object's bytes and the version token a compare-and-swap must present."""

    data: bytes
    token: str


class Backend(Protocol):
    """One protocol's conditional primitives, rooted at a layer's cloudpath."""

    cloudpath: str

    def get(self, key: str) -> Blob | None:
        """The object with its version token, or None when it does not exist."""

    def put_new(self, key: str, data: bytes) -> str:
        """Create `key`; raise PreconditionFailed if it exists. Returns the new token."""

    def put_if_match(self, key: str, data: bytes, token: str) -> str:
        """Replace `key` only if its token is still `token`; else PreconditionFailed."""

    def list(self, prefix: str) -> list[str]:
        """Keys under `prefix` (relative to the root), sorted."""


@attrs.define
class Store:
    """A backend behind the retry policy; what the ledger uses."""

    backend: Backend
    policy: RetryPolicy = attrs.field(factory=RetryPolicy)

    @property
    def cloudpath(self) -> str:
        return self.backend.cloudpath

    def get(self, key: str) -> Blob | None:
        return self.policy.call(self.backend.get, key)

    def list(self, prefix: str) -> list[str]:
        return self.policy.call(self.backend.list, prefix)

    def create(self, key: str, data: bytes, *, addressed: bool = False) -> bool:
        """Write-once: True if created now, False if the same bytes were already there.

        A create whose response was lost and was retried lands here as a conflict; reading the
        object back and comparing bytes tells success from a real collision. A key `addressed`
        by the sha256 of its bytes is taken as holding them without a read-back (a damaged
        copy is `cirrus verify`'s to find), and returns False.
        """
        try:
            self.policy.call(self.backend.put_new, key, data)
            return True
        except PreconditionFailed:
            if addressed:
                return False
            existing = self.get(key)
            if existing is not None and existing.data == data:
                return False
            raise

    def swap(self, key: str, data: bytes, token: str | None) -> str:
        """Compare-and-swap: replace the version `token` (None: only if absent). Conflicts raise."""
        if token is None:
            return self.policy.call(self.backend.put_new, key, data)
        return self.policy.call(self.backend.put_if_match, key, data, token)

    def update(
        self,
        key: str,
        change: Callable[[Blob | None], bytes | None],
        *,
        read: Blob | None | object = NOT_READ,
        contended: str,
        deadline: float = CONTENDED_DEADLINE,
    ) -> Updated:
        """Read-modify-write `key` by compare-and-swap: `change` maps the object (None: absent)
        to its new bytes, or None to write nothing.

        Starts from `read` when given (a stale one only costs a conflict). On a conflict the
        object is read again and `change` re-applied, with jittered backoff, so it must be
        idempotent: a swap whose response was lost comes back as a conflict with itself. Past
        `deadline` seconds of conflicts, StorageError with `contended`, which says what to do.
        """
        give_up = time.monotonic() + deadline
        attempt = 0
        while True:
            fresh = read is NOT_READ  # a conflict on a given `read` is no sign of contention
            blob = self.get(key) if fresh else read
            read = NOT_READ
            data = change(blob)
            if data is None:
                return Updated(blob, written=False)
            try:
                token = self.swap(key, data, None if blob is None else blob.token)
                return Updated(Blob(data, token), written=True)
            except PreconditionFailed:
                attempt += 1
                if time.monotonic() > give_up:
                    raise StorageError(
                        f"still contended after {attempt} attempts; {contended}",
                        cloudpath=self.cloudpath,
                        key=key,
                    ) from None
                if fresh:
                    time.sleep(random.uniform(0, min(2.0, 0.01 * 2 ** min(attempt, 8))))


@attrs.frozen
class Updated:
    """What `Store.update` left: the object as stored or as read, and whether it wrote it."""

    blob: Blob | None
    written: bool
