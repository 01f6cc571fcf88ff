"""`s3://`: conditional writes with boto3 (`If-None-Match: *` to create, `If-Match: etag` to swap).

CloudFiles has no conditional writes, so this talks to S3 directly, with the credentials CloudFiles
would use (`<alias>-secret.json` for an alias such as `matrix://`, else `aws-secret.json`). boto3's
own retries are off (`total_max_attempts=1`): `RetryPolicy` is the one retry layer and this module
only classifies each failure as conflict, transient or permanent. Clients are per process: a
forked child makes its own instead of sharing the parent's pooled sockets.
"""

from __future__ import annotations

import contextlib
import gzip
import os
from collections.abc import Iterator, Mapping
from typing import Any

from cirrus.errors import (
    InvalidInput,
    PermanentStorageError,
    PreconditionFailed,
    StorageError,
    TransientStorageError,
    UnreadableEncoding,
)
from cirrus.storage.base import (
    CONNECTIONS,
    TRANSIENT_STATUSES,
    Blob,
    ClientCache,
    Secrets,
    certificate_failure,
    given_secrets,
)

_ClientKey = tuple[Any, ...]
_CLIENTS = ClientCache()
_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "ConditionalRequestConflict",
    "OperationAborted",
}
# Content-Encoding values that leave the stored bytes as they are.
_PLAIN_ENCODINGS = {"", "identity", "aws-chunked"}


class S3Backend:
    """Conditional objects under `s3://[endpoint/]bucket/prefix/` (or `alias://bucket/prefix/`)."""

    def __init__(
        self,
        cloudpath: str,
        bucket: str,
        prefix: str,
        endpoint: str | None = None,
        service: str = "s3",
        secrets: Secrets = None,
    ):
        self.cloudpath = cloudpath.rstrip("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        self.service = service
        found = _credentials(bucket, service) if secrets is None else given_secrets(secrets)
        self._given = secrets is not None  # which credentials an access error points at
        self._client_key = _client_key(self.endpoint, found)

    @property
    def _client(self) -> Any:
        """This process's client for the endpoint and credentials (a new one after a fork)."""
        return _client(self._client_key)

    def get(self, key: str) -> Blob | None:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            data = response["Body"].read()
        except Exception as error:
            if _is_missing_key(error):
                return None
            raise self._classify(error, key) from error
        encoding = str(response.get("ContentEncoding") or "")
        return Blob(self._decoded(data, encoding, key), response["ETag"].strip('"'))

    def put_new(self, key: str, data: bytes) -> str:
        return self._put(key, data, IfNoneMatch="*")

    def put_if_match(self, key: str, data: bytes, token: str) -> str:
        # Unquoted: Ceph RGW compares If-Match literally; AWS and moto accept either form.
        return self._put(key, data, IfMatch=token)

    def list(self, prefix: str) -> list[str]:
        root = f"{self.prefix}/" if self.prefix else ""
        keys = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=root + prefix
            )
            for page in pages:
                keys.extend(item["Key"][len(root) :] for item in page.get("Contents", ()))
        except Exception as error:
            raise self._classify(error, prefix) from error
        return sorted(keys)

    def _put(self, key: str, data: bytes, **condition: str) -> str:
        try:
            response = self._client.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=data,
                ContentType="application/json",
                CacheControl="no-cache",  # as CloudVolume writes `provenance`
                **condition,
            )
        except Exception as error:
            # If-Match on a missing key: 404 NoSuchKey on AWS and moto, 412 on RGW. Both: conflict.
            if "IfMatch" in condition and _is_missing_key(error):
                raise PreconditionFailed(
                    "does not exist any more", cloudpath=self.cloudpath, key=key
                ) from error
            raise self._classify(error, key) from error
        return response["ETag"].strip('"')

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _decoded(self, data: bytes, encoding: str, key: str) -> bytes:
        """The object's bytes as CloudFiles reads them: gzip undone, other encodings refused."""
        codings = [c.strip().lower() for c in encoding.split(",")]
        codings = [c for c in codings if c not in _PLAIN_ENCODINGS]
        if not codings:
            return data
        if codings in (["gzip"], ["x-gzip"]):
            try:
                return gzip.decompress(data)
            except (OSError, EOFError) as error:
                raise PermanentStorageError(
                    f"stored with Content-Encoding: gzip but is not valid gzip ({error}); "
                    "rewrite it uncompressed",
                    cloudpath=self.cloudpath,
                    key=key,
                ) from None
        raise UnreadableEncoding(
            f"stored with Content-Encoding: {encoding}, which cirrus does not read (only gzip); "
            "rewrite it uncompressed or gzip-compressed, e.g. "
            "CloudFiles(layer).put(name, data, compress=None)",
            cloudpath=self.cloudpath,
            key=key,
        )

    def _classify(self, error: Exception, key: str) -> StorageError:
        """Turn a boto3/botocore exception into conflict, transient or permanent."""
        from botocore import exceptions

        where = {"cloudpath": self.cloudpath, "key": key}
        if certificate_failure(error):
            return PermanentStorageError(
                f"the endpoint's TLS certificate failed verification ({error}); check the "
                "endpoint, or point AWS_CA_BUNDLE at the CA bundle that signed it",
                **where,
            )
        if _is_connection_error(error):
            return TransientStorageError(f"S3 connection failed: {error}", **where)
        if isinstance(error, exceptions.NoCredentialsError):
            return PermanentStorageError(
                f"no AWS credentials found; {_credentials_help(self.service, self._given)}", **where
            )
        if not isinstance(error, exceptions.ClientError):
            return PermanentStorageError(f"S3 request failed: {error!r}", **where)
        return self._classify_answer(error, where)

    def _classify_answer(self, error: Exception, where: dict[str, str]) -> StorageError:
        """Classify an error answer of the server by its HTTP status and S3 error code."""
        code, status = _code(error), _status(error)
        message = _response(error).get("Error", {}).get("Message", "")
        endpoint = self.endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or "AWS"
        if status == 412 or code == "PreconditionFailed":
            return PreconditionFailed("precondition failed (changed or exists)", **where)
        if status == 501 or code == "NotImplemented":
            return PermanentStorageError(
                f"the S3 server at {endpoint} does not support this request ({status} {code}: "
                f"{message}); cirrus needs conditional writes (If-None-Match: * and If-Match), "
                "which AWS S3, Ceph RGW and MinIO support: use such a server for this layer",
                **where,
            )
        if status in TRANSIENT_STATUSES or code in _TRANSIENT_CODES:
            return TransientStorageError(f"S3 answered {status} {code}: {message}", **where)
        if _is_missing_bucket(error):
            return PermanentStorageError(
                f"bucket {self.bucket!r} does not exist at {endpoint}; "
                "check the cloudpath, the endpoint and the region",
                **where,
            )
        if status == 403 or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            help_text = _credentials_help(self.service, self._given)
            return PermanentStorageError(f"S3 denied access ({code}); {help_text}", **where)
        return PermanentStorageError(f"S3 answered {status} {code}: {message}", **where)


def _is_connection_error(error: Exception) -> bool:
    """A request that got no complete answer (refused, reset, timed out, body cut short)."""
    import http.client

    import urllib3
    from botocore import exceptions

    connection_level = (
        exceptions.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError, ...
        exceptions.HTTPClientError,  # ReadTimeoutError, ConnectionClosedError, streaming errors
        exceptions.IncompleteReadError,
        urllib3.exceptions.ProtocolError,
        urllib3.exceptions.TimeoutError,
        http.client.IncompleteRead,
        ConnectionError,
        TimeoutError,
    )
    return isinstance(error, connection_level)


def _response(error: Exception) -> dict[str, Any]:
    """The parsed error answer; {} when there was none (connection errors carry None)."""
    return getattr(error, "response", None) or {}


def _code(error: Exception) -> str:
    return str(_response(error).get("Error", {}).get("Code", ""))


def _status(error: Exception) -> int:
    return int(_response(error).get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _is_missing_bucket(error: Exception) -> bool:
    return _code(error) == "NoSuchBucket"


def _is_missing_key(error: Exception) -> bool:
    return _code(error) in ("NoSuchKey", "404") and not _is_missing_bucket(error)


def _secret_name(service: str) -> str:
    """CloudFiles' secret file for a service: `aws-secret.json`, or `<alias>-secret.json`."""
    return f"{'aws' if service == 's3' else service}-secret.json"


def _credentials_help(service: str, given: bool) -> str:
    if given:
        return (
            "check the secrets given for this layer (s.volume(path, secrets=...) or "
            "cirrus.use_secrets) and that they may read and write this bucket"
        )
    environment = " or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" if service == "s3" else ""
    return (
        f"check the credentials CloudFiles uses (~/.cloudvolume/secrets/{_secret_name(service)}"
        f"{environment}), or give them in code with cirrus.use_secrets(path, secrets), and "
        "that they may read and write this bucket"
    )


@contextlib.contextmanager
def session_token_explained(cloudpath: str) -> Iterator[None]:
    """CloudFiles' bare KeyError for a missing AWS_SESSION_TOKEN, as an error naming the fix.

    CloudFiles reads AWS_SESSION_TOKEN whenever it takes the keys from the environment (cirrus's
    own storage lets boto3 look instead, `_credentials`); CloudVolume then fails on opening.
    """
    try:
        yield
    except KeyError as error:
        if error.args != ("AWS_SESSION_TOKEN",):
            raise
        raise InvalidInput(
            f"{cloudpath}: CloudVolume's storage (CloudFiles) needs AWS_SESSION_TOKEN set "
            "whenever it takes AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from the environment: "
            "export AWS_SESSION_TOKEN= (empty for keys without a session), or put the keys in "
            "~/.cloudvolume/secrets/aws-secret.json"
        ) from None


def _credentials(bucket: str, service: str) -> dict[str, str]:
    """The credentials CloudFiles would use for this bucket; {} means boto3's default chain."""
    from cloudfiles import secrets

    try:
        return dict(secrets.aws_credentials(bucket, service))
    except KeyError:  # CloudFiles reads AWS_SESSION_TOKEN unconditionally; let boto3 look instead
        return {}


def _client_key(endpoint: str | None, found: Mapping[str, str]) -> _ClientKey:
    """What tells one client from another: endpoint, credentials and region."""
    return (
        endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or None,
        found.get("AWS_ACCESS_KEY_ID"),
        found.get("AWS_SECRET_ACCESS_KEY"),
        found.get("AWS_SESSION_TOKEN") or None,
        found.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
    )


def _client(key: _ClientKey) -> Any:
    """One boto3 client per (endpoint, credentials) in this process, without boto3's retries."""
    return _CLIENTS.get(key, lambda: _new_client(*key))


def _new_client(
    endpoint: str | None, key_id: str | None, secret: str | None, token: str | None, region: str
) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        # One attempt in all: `max_attempts` counts retries, so 1 would still retry once.
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=5,
        read_timeout=20,
        max_pool_connections=CONNECTIONS,
        # S3-compatible servers (RGW, moto) may not know the newer default checksums.
        request_checksum_calculation="when_required" if endpoint else "when_supported",
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        aws_session_token=token,
        region_name=region,
        config=config,
    )
