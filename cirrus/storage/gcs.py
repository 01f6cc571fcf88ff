"""`gs://`: conditional writes with google-cloud-storage, the object generation as version token.

`if_generation_match=0` creates only if absent; `if_generation_match=<generation>` swaps. The
library's retries are off on every call (`retry=None`): `RetryPolicy` is the one retry layer.
Honours `STORAGE_EMULATOR_HOST` (anonymous credentials), as CloudFiles does.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from cirrus.errors import (
    PermanentStorageError,
    PreconditionFailed,
    StorageError,
    TransientStorageError,
)
from cirrus.storage.base import CONNECTIONS, Blob

_CLIENTS: dict[tuple[Any, ...], Any] = {}
_CLIENTS_LOCK = threading.Lock()
_TIMEOUT = (5, 20)  # connect, read (seconds)
_CREDENTIALS_HELP = (
    "check the credentials CloudFiles uses (~/.cloudvolume/secrets/google-secret.json or "
    "GOOGLE_APPLICATION_CREDENTIALS) and that they may read and write this bucket"
)


class GCSBackend:
    """Conditional objects under `gs://bucket/prefix/`."""

    def __init__(self, cloudpath: str, bucket: str, prefix: str):
        self.cloudpath = cloudpath.rstrip("/")
        self.prefix = prefix.strip("/")
        self._client = _client(bucket)
        self._bucket = self._client.bucket(bucket)

    def get(self, key: str) -> Blob | None:
        from google.api_core import exceptions

        blob = self._bucket.blob(self._key(key))
        try:
            data = blob.download_as_bytes(retry=None, timeout=_TIMEOUT)
        except exceptions.NotFound as error:
            if "bucket does not exist" in str(error.message).lower():  # GCS wording
                raise self._classify(error, key) from error
            return None
        except Exception as error:
            raise self._classify(error, key) from error
        return Blob(data, str(blob.generation))

    def put_new(self, key: str, data: bytes) -> str:
        return self._put(key, data, 0)

    def put_if_match(self, key: str, data: bytes, token: str) -> str:
        try:
            generation = int(token)
        except ValueError:
            raise PermanentStorageError(
                f"{token!r} is not a GCS generation", cloudpath=self.cloudpath, key=key
            ) from None
        return self._put(key, data, generation)

    def list(self, prefix: str) -> list[str]:
        root = f"{self.prefix}/" if self.prefix else ""
        try:
            blobs = self._client.list_blobs(
                self._bucket, prefix=root + prefix, retry=None, timeout=_TIMEOUT
            )
            keys = [blob.name[len(root) :] for blob in blobs]
        except Exception as error:
            raise self._classify(error, prefix) from error
        return sorted(keys)

    def _put(self, key: str, data: bytes, generation: int) -> str:
        blob = self._bucket.blob(self._key(key))
        blob.cache_control = "no-cache"  # as CloudVolume writes `provenance`: readers see it now
        try:
            blob.upload_from_string(
                data,
                content_type="application/json",
                if_generation_match=generation,
                retry=None,
                timeout=_TIMEOUT,
            )
        except Exception as error:
            raise self._classify(error, key) from error
        return str(blob.generation)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _classify(self, error: Exception, key: str) -> StorageError:
        """Turn a google-cloud / transport exception into conflict, transient or permanent."""
        import requests
        from google.api_core import exceptions
        from google.auth import exceptions as auth_exceptions

        where = {"cloudpath": self.cloudpath, "key": key}
        if isinstance(error, exceptions.PreconditionFailed):
            return PreconditionFailed("precondition failed (changed or exists)", **where)
        code = error.code if isinstance(error, exceptions.GoogleAPICallError) else None
        if code is not None and (code in (408, 429) or code >= 500):
            return TransientStorageError(f"GCS answered {code}: {error.message}", **where)
        transient = (
            requests.ConnectionError,
            requests.Timeout,
            auth_exceptions.TransportError,
            ConnectionError,
            TimeoutError,
        )
        if isinstance(error, transient):
            return TransientStorageError(f"GCS request failed: {error}", **where)
        if isinstance(error, auth_exceptions.DefaultCredentialsError):
            return PermanentStorageError(
                f"no Google credentials found; {_CREDENTIALS_HELP}", **where
            )
        if isinstance(error, (exceptions.Forbidden, exceptions.Unauthorized)):
            return PermanentStorageError(
                f"GCS denied access; {_CREDENTIALS_HELP}: {error}", **where
            )
        if isinstance(error, exceptions.NotFound):
            return PermanentStorageError(
                f"bucket {self._bucket.name!r} not found; check the cloudpath: {error}", **where
            )
        return PermanentStorageError(f"GCS request failed: {error!r}", **where)


def _client(bucket: str) -> Any:
    """One client per (emulator, credentials) in this process."""
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    secret = None if emulator else _secret_file(bucket)
    cache_key = (emulator, secret)
    with _CLIENTS_LOCK:
        if cache_key not in _CLIENTS:
            _CLIENTS[cache_key] = _new_client(bucket, emulator, secret)
        return _CLIENTS[cache_key]


def _secret_file(bucket: str) -> str | None:
    """The service-account file CloudFiles would use for this bucket, if there is one."""
    from cloudfiles import secrets

    for name in (f"{bucket}-google-secret.json", "google-secret.json"):
        path = secrets.secretpath(name)
        if os.path.exists(path):
            return path
    return None


def _new_client(bucket: str, emulator: str | None, secret: str | None) -> Any:
    return _pooled(_authorised_client(bucket, emulator, secret))


def _authorised_client(bucket: str, emulator: str | None, secret: str | None) -> Any:
    from google.cloud import storage

    if emulator:
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(credentials=AnonymousCredentials(), project="cirrus-emulator")
    if secret:
        from cloudfiles import secrets

        project, credentials = secrets.google_credentials(bucket)
        return storage.Client(credentials=credentials, project=project)
    try:
        return storage.Client()  # Application Default Credentials
    except Exception as error:
        raise PermanentStorageError(
            f"cannot create a Google Cloud Storage client: {error}; {_CREDENTIALS_HELP}",
            cloudpath=f"gs://{bucket}",
        ) from error


def _pooled(client: Any) -> Any:
    """Keep `CONNECTIONS` connections per host open, not requests' 10: a commit's overlapped
    volumes otherwise open a connection each and discard it ("Connection pool is full").
    Only requests' own adapters are replaced: google-auth mounts its own for mutual TLS."""
    from requests.adapters import HTTPAdapter

    adapter = HTTPAdapter(pool_maxsize=CONNECTIONS)
    for scheme in ("https://", "http://"):
        if type(client._http.get_adapter(scheme)) is HTTPAdapter:
            client._http.mount(scheme, adapter)
    return client
