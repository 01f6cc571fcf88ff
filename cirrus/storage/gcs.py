"""`gs://`: conditional writes with google-cloud-storage, the object generation as version token.

`if_generation_match=0` creates only if absent; `if_generation_match=<generation>` swaps. The
library's retries are off on every call (`retry=None`): `RetryPolicy` is the one retry layer, and
what google-cloud-storage's own policy would retry (resets, bodies cut short, 5xx but 501) is
transient here too. Honours `STORAGE_EMULATOR_HOST` (anonymous credentials), as CloudFiles does.
Clients are per process: a forked child makes its own instead of sharing the parent's sockets.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
from typing import Any

from cirrus.errors import (
    PermanentStorageError,
    PreconditionFailed,
    StorageError,
    TransientStorageError,
)
from cirrus.storage.base import (
    CONNECTIONS,
    TRANSIENT_STATUSES,
    Blob,
    ClientCache,
    Secrets,
    certificate_failure,
    given_secrets,
    is_credentials_object,
)

_CLIENTS = ClientCache()
_TIMEOUT = (5, 20)  # connect, read (seconds)
_CREDENTIALS_HELP = (
    "check the credentials CloudFiles uses (~/.cloudvolume/secrets/google-secret.json or "
    "GOOGLE_APPLICATION_CREDENTIALS), or give them in code with cirrus.use_secrets(path, "
    "secrets), and that they may read and write this bucket"
)
_GIVEN_HELP = (
    "check the secrets given for this layer (s.volume(path, secrets=...) or "
    "cirrus.use_secrets) and that they may read and write this bucket"
)


class GCSBackend:
    """Conditional objects under `gs://bucket/prefix/`."""

    def __init__(
        self,
        cloudpath: str,
        bucket: str,
        prefix: str,
        secrets: Secrets = None,
    ):
        self.cloudpath = cloudpath.rstrip("/")
        self.prefix = prefix.strip("/")
        self.bucket = bucket
        self._client_key = _client_key(bucket, secrets)

    @property
    def _credentials_help(self) -> str:
        return _CREDENTIALS_HELP if self._client_key[2] is None else _GIVEN_HELP

    @property
    def _client(self) -> Any:
        """This process's client (a new one after a fork)."""
        return _client(self._client_key, self.bucket)

    @property
    def _bucket(self) -> Any:
        """The bucket through this process's client (no request is made)."""
        return self._client.bucket(self.bucket)

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
                self.bucket, prefix=root + prefix, retry=None, timeout=_TIMEOUT
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
        from google.api_core import exceptions
        from google.auth import exceptions as auth_exceptions

        where = {"cloudpath": self.cloudpath, "key": key}
        if certificate_failure(error):
            return PermanentStorageError(
                f"the endpoint's TLS certificate failed verification ({error}); check the "
                "endpoint, or point REQUESTS_CA_BUNDLE at the CA bundle that signed it",
                **where,
            )
        if isinstance(error, exceptions.PreconditionFailed):
            return PreconditionFailed("precondition failed (changed or exists)", **where)
        code = error.code if isinstance(error, exceptions.GoogleAPICallError) else None
        if code == 501:
            return PermanentStorageError(
                f"the GCS server does not support this request (501: {error.message}); cirrus "
                "needs conditional writes (if_generation_match): use a server that has them",
                **where,
            )
        if code in TRANSIENT_STATUSES:
            return TransientStorageError(f"GCS answered {code}: {error.message}", **where)
        if _is_transient(error):
            return TransientStorageError(f"GCS request failed: {error!r}", **where)
        if isinstance(error, auth_exceptions.DefaultCredentialsError):
            return PermanentStorageError(
                f"no Google credentials found; {self._credentials_help}", **where
            )
        if isinstance(error, (exceptions.Forbidden, exceptions.Unauthorized)):
            return PermanentStorageError(
                f"GCS denied access; {self._credentials_help}: {error}", **where
            )
        if isinstance(error, exceptions.NotFound):
            return PermanentStorageError(
                f"bucket {self.bucket!r} not found; check the cloudpath: {error}", **where
            )
        return PermanentStorageError(f"GCS request failed: {error!r}", **where)


def _is_transient(error: Exception) -> bool:
    """What google-cloud-storage's own retry policy retries (throttling, 5xx, connections
    refused, reset or cut short), plus checksum mismatches, timeouts and the auth errors the
    auth library marks retryable."""
    from google.auth import exceptions as auth_exceptions
    from google.cloud.storage.retry import _should_retry  # present since 1.31; we need 2.18

    if isinstance(error, (TimeoutError, *_corrupt_transfers())):
        return True
    if isinstance(error, auth_exceptions.GoogleAuthError) and error.retryable:
        return True  # TransportError, or a RefreshError the auth library marks retryable
    return bool(_should_retry(error))


def _corrupt_transfers() -> tuple[type[BaseException], ...]:
    """A download whose checksum did not match: the next one may."""
    found = []
    for module in ("google.cloud.storage.exceptions", "google.resumable_media"):
        with contextlib.suppress(ImportError, AttributeError):
            found.append(importlib.import_module(module).DataCorruption)
    return tuple(found)


_ClientKey = tuple[str | None, str | None, Any]


def _client_key(bucket: str, secrets: Secrets) -> _ClientKey:
    """What tells one client from another: the emulator, a credentials file, or the key or
    credentials object given."""
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if emulator:
        return emulator, None, None
    if secrets is None:
        return None, _secret_file(bucket), None
    if is_credentials_object(secrets):
        return None, None, secrets
    return None, None, json.dumps(given_secrets(secrets), sort_keys=True)


def _client(key: _ClientKey, bucket: str) -> Any:
    """One client per (emulator, credentials) in this process."""
    return _CLIENTS.get(key, lambda: _new_client(bucket, *key))


def _secret_file(bucket: str) -> str | None:
    """The service-account file CloudFiles would use for this bucket, if there is one."""
    from cloudfiles import secrets

    for name in (f"{bucket}-google-secret.json", "google-secret.json"):
        path = secrets.secretpath(name)
        if os.path.exists(path):
            return path
    return None


def _new_client(bucket: str, emulator: str | None, secret: str | None, given: Any) -> Any:
    return _pooled(_authorised_client(bucket, emulator, secret, given))


def _authorised_client(bucket: str, emulator: str | None, secret: str | None, given: Any) -> Any:
    from google.cloud import storage

    if emulator:
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(credentials=AnonymousCredentials(), project="cirrus-emulator")
    if is_credentials_object(given):
        return storage.Client(credentials=given, project=getattr(given, "project_id", None))
    if given:
        from google.oauth2 import service_account

        info = json.loads(given)
        try:
            credentials = service_account.Credentials.from_service_account_info(info)
        except (ValueError, KeyError) as error:
            raise PermanentStorageError(
                f"the secrets given are not a Google service-account key ({error}); pass the "
                "contents of its JSON key file, as to CloudVolume(path, secrets=...)",
                cloudpath=f"gs://{bucket}",
            ) from None
        return storage.Client(credentials=credentials, project=info.get("project_id"))
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
