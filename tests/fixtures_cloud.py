"""Fixtures for real S3 (moto) and GCS (fake-gcs-server) servers, started only when a test asks.

`layer_path` gives a fresh layer cloudpath on each of file, mem, s3 and gcs, for tests that must
hold on every backend.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.servers.gcs_server import gcs_server
from tests.servers.moto_server import moto_server

BACKENDS = ["file", "mem", "s3", "gcs"]


def unique_name(kind: str = "bucket") -> str:
    """A bucket-safe name that no other test uses."""
    return f"cirrus-{kind}-{uuid.uuid4().hex[:16]}"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto S3 server; plain `s3://` paths (boto3 and CloudFiles) point at it."""
    from cloudfiles.interfaces import reset_connection_pools

    with moto_server() as endpoint, pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_SESSION_TOKEN", "")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        reset_connection_pools()
        yield endpoint
    reset_connection_pools()


@pytest.fixture(scope="session")
def gcs_endpoint() -> Iterator[str]:
    """A fake-gcs-server; `gs://` paths (google-cloud-storage and CloudFiles) point at it.

    The emulator's batch endpoint answers empty bodies, so CloudFiles' batched `exists()` of many
    paths and `delete()` are turned into loops of single calls.
    """
    from cloudfiles.interfaces import GoogleCloudStorageInterface, reset_connection_pools

    def files_exist(self, file_paths):
        return {path: self.exists(path) for path in file_paths}

    def delete_files(self, file_paths):
        for path in file_paths:
            self.delete_file(path)

    with gcs_server() as endpoint, pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORAGE_EMULATOR_HOST", endpoint)
        patch.setattr(GoogleCloudStorageInterface, "files_exist", files_exist)
        patch.setattr(GoogleCloudStorageInterface, "delete_files", delete_files)
        reset_connection_pools()
        yield endpoint
    reset_connection_pools()


@pytest.fixture
def s3_bucket(moto_endpoint: str) -> str:
    """A new, empty bucket on the moto server."""
    import boto3

    name = unique_name()
    boto3.session.Session().client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def gcs_bucket(gcs_endpoint: str) -> str:
    """A new, empty bucket on the fake GCS server."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    name = unique_name()
    storage.Client(credentials=AnonymousCredentials(), project="cirrus-test").create_bucket(name)
    return name


@pytest.fixture(params=BACKENDS)
def layer_path(request: pytest.FixtureRequest, tmp_path) -> str:
    """A fresh layer cloudpath on each backend in turn (servers start on first use)."""
    backend = request.param
    if backend == "file":
        return f"file://{tmp_path}/layer"
    if backend == "mem":
        return f"mem://{unique_name('mem')}/layer"
    if backend == "s3":
        return f"s3://{request.getfixturevalue('s3_bucket')}/layer"
    return f"gs://{request.getfixturevalue('gcs_bucket')}/layer"
