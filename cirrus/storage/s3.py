"""`s3://`: conditional writes with boto3 (`If-None-Match: *` to create, `If-Match: etag` to swap).

CloudFiles has no conditional writes, so this talks to S3 directly, with the credentials CloudFiles
would use. boto3's own retries are off: `RetryPolicy` is the one retry layer and this module only
classifies each failure as conflict, transient or permanent.
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
_CREDENTIALS_HELP = (
    "check the credentials CloudFiles uses (~/.cloudvolume/secrets/aws-secret.json or "
    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) and that they may read and write this bucket"
)


class S3Backend:
    """Conditional objects under `s3://[endpoint/]bucket/prefix/`."""

    def __init__(self, cloudpath: str, bucket: str, prefix: str, endpoint: str | None = None):
        self.cloudpath = cloudpath.rstrip("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        self._client = _client(bucket, self.endpoint)

    def get(self, key: str) -> Blob | None:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            data = response["Body"].read()
        except Exception as error:
            if _code(error) in ("NoSuchKey", "404") and not _is_missing_bucket(error):
                return None
            raise self._classify(error, key) from error
        return Blob(data, response["ETag"].strip('"'))

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
            if "IfMatch" in condition and _code(error) in ("NoSuchKey", "404"):
                raise PreconditionFailed(
                    "does not exist any more", cloudpath=self.cloudpath, key=key
                ) from error
            raise self._classify(error, key) from error
        return response["ETag"].strip('"')

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _classify(self, error: Exception, key: str) -> StorageError:
        """Turn a boto3/botocore exception into conflict, transient or permanent."""
        from botocore import exceptions

        where = {"cloudpath": self.cloudpath, "key": key}
        if isinstance(error, (exceptions.ConnectionError, exceptions.HTTPClientError)):
            return TransientStorageError(f"S3 connection failed: {error}", **where)
        if isinstance(error, exceptions.NoCredentialsError):
            return PermanentStorageError(f"no AWS credentials found; {_CREDENTIALS_HELP}", **where)
        if not isinstance(error, exceptions.ClientError):
            return PermanentStorageError(f"S3 request failed: {error!r}", **where)
        code, status = _code(error), _status(error)
        message = error.response.get("Error", {}).get("Message", "")
        if status == 412 or code == "PreconditionFailed":
            return PreconditionFailed("precondition failed (changed or exists)", **where)
        if status in (408, 429) or status >= 500 or code in _TRANSIENT_CODES:
            return TransientStorageError(f"S3 answered {status} {code}: {message}", **where)
        if _is_missing_bucket(error):
            endpoint = self.endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or "AWS"
            return PermanentStorageError(
                f"bucket {self.bucket!r} does not exist at {endpoint}; "
                "check the cloudpath, the endpoint and the region",
                **where,
            )
        if status == 403 or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return PermanentStorageError(f"S3 denied access ({code}); {_CREDENTIALS_HELP}", **where)
        return PermanentStorageError(f"S3 answered {status} {code}: {message}", **where)


def _code(error: Exception) -> str:
    return str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))


def _status(error: Exception) -> int:
    return int(getattr(error, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _is_missing_bucket(error: Exception) -> bool:
    return _code(error) == "NoSuchBucket"


def _credentials(bucket: str) -> dict[str, str]:
    """The credentials CloudFiles would use for this bucket; {} means boto3's default chain."""
    from cloudfiles import secrets

    try:
        return dict(secrets.aws_credentials(bucket, "s3"))
    except KeyError:  # CloudFiles reads AWS_SESSION_TOKEN unconditionally; let boto3 look instead
        return {}


def _client(bucket: str, endpoint: str | None) -> Any:
    """One boto3 client per (endpoint, credentials) in this process, without boto3's retries."""
    found = _credentials(bucket)
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or None
    settings = (
        found.get("AWS_ACCESS_KEY_ID"),
        found.get("AWS_SECRET_ACCESS_KEY"),
        found.get("AWS_SESSION_TOKEN") or None,
        found.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
    )
    cache_key = (endpoint, *settings)
    with _CLIENTS_LOCK:
        if cache_key not in _CLIENTS:
            _CLIENTS[cache_key] = _new_client(endpoint, *settings)
        return _CLIENTS[cache_key]


def _new_client(
    endpoint: str | None, key_id: str | None, secret: str | None, token: str | None, region: str
) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 1, "mode": "standard"},
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
