"""Storage beside CloudFiles' habits: compressed objects, aliases and their credentials,
secrets given to a store or a volume, and cloudpaths CloudVolume would write elsewhere."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

import cirrus
from cirrus.errors import InvalidInput, PermanentStorageError
from cirrus.storage import open_store
from cirrus.storage.paths import normalise_cloudpath, parse_cloudpath
from tests.fixtures_cloud import unique_name
from tests.servers.moto_server import authentication
from tests.session_support import chunk_of, make_layer, process

SUMMARY = json.dumps({"description": "by igneous", "owners": [], "sources": [], "processing": []})


def test_a_gzip_encoded_s3_object_is_read_decoded(s3_bucket: str) -> None:
    """CloudFiles put(..., compress="gzip") sets Content-Encoding: gzip; CloudVolume decodes it."""
    from cloudfiles import CloudFiles

    path = f"s3://{s3_bucket}/layer"
    CloudFiles(path).put("provenance", SUMMARY.encode(), compress="gzip")
    store = open_store(path)
    blob = store.get("provenance")
    assert blob is not None and blob.data == SUMMARY.encode()
    store.swap("provenance", b'{"sources": []}', blob.token)  # written back plain
    assert CloudFiles(path).get("provenance") == b'{"sources": []}'


def test_an_s3_object_in_another_encoding_is_refused_by_name(s3_bucket: str) -> None:
    from cloudfiles import CloudFiles

    path = f"s3://{s3_bucket}/layer"
    CloudFiles(path).put("provenance", SUMMARY.encode(), compress="br")
    with pytest.raises(PermanentStorageError, match="Content-Encoding: br"):
        open_store(path).get("provenance")


def test_a_gzip_file_summary_is_read_and_never_written_beside(tmp_path) -> None:
    """On file:// CloudFiles stores `provenance.gz`: cirrus reads it, and refuses to write a
    plain `provenance` beside it (CloudVolume could then read either: a forked history)."""
    from cloudfiles import CloudFiles

    path = f"file://{tmp_path}/layer"
    CloudFiles(path).put("provenance", SUMMARY.encode(), compress="gzip")
    store = open_store(path)
    blob = store.get("provenance")
    assert blob is not None and blob.data == SUMMARY.encode()
    for token in (blob.token, None):
        with pytest.raises(PermanentStorageError, match=r"provenance\.gz.*gunzip"):
            store.swap("provenance", b"{}", token)
    assert store.list("") == ["provenance.gz"]
    assert CloudFiles(path).get("provenance") == SUMMARY.encode()


def test_a_file_summary_compressed_otherwise_is_refused_by_name(tmp_path) -> None:
    from cloudfiles import CloudFiles

    path = f"file://{tmp_path}/layer"
    CloudFiles(path).put("provenance", SUMMARY.encode(), compress="br")
    with pytest.raises(PermanentStorageError, match=r"provenance\.br"):
        open_store(path).get("provenance")


def moto_user_keys(endpoint: str) -> dict[str, str]:
    """The keys of a new moto user that may do anything: the only valid ones while
    `authentication` is on (the environment holds keys the server does not know)."""
    import boto3

    iam = boto3.client("iam", endpoint_url=endpoint)
    user = unique_name("user")
    iam.create_user(UserName=user)
    policy = {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.put_user_policy(
        UserName=user,
        PolicyName="all",
        PolicyDocument=json.dumps({"Version": "2012-10-17", **policy}),
    )
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return {
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }


@pytest.fixture
def unknown_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """AWS keys in the environment that the server does not know (a user's unrelated keys)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNRELATEDKEY0000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unrelated")


def test_an_s3_alias_keeps_its_name_and_its_own_credentials(
    s3_bucket: str, moto_endpoint: str, unknown_keys: None
) -> None:
    """As in CloudFiles, `alias://` reads `<alias>-secret.json`, not aws-secret.json or the
    environment."""
    from cloudfiles import paths, secrets

    keys = moto_user_keys(moto_endpoint)
    alias = unique_name("alias").replace("-", "")
    os.makedirs(secrets.CLOUD_VOLUME_SECRETS_DIR, exist_ok=True)
    secret_file = os.path.join(secrets.CLOUD_VOLUME_SECRETS_DIR, f"{alias}-secret.json")
    with open(secret_file, "w") as f:
        json.dump(keys, f)
    paths.add_alias(alias, f"s3://{moto_endpoint}/")
    try:
        layer = f"{alias}://{s3_bucket}/layer"
        assert normalise_cloudpath(f"precomputed://{layer}/") == layer
        with authentication(moto_endpoint):
            store = open_store(layer)
            store.create("provenance", b"{}")
            assert store.get("provenance").data == b"{}"
            with pytest.raises(PermanentStorageError, match="denied"):
                open_store(f"s3://{s3_bucket}/layer").get("provenance")
    finally:
        paths.remove_alias(alias)
        os.remove(secret_file)


def test_secrets_given_to_the_store_are_used(
    s3_bucket: str, moto_endpoint: str, unknown_keys: None
) -> None:
    """As CloudVolume(path, secrets=...): the keys given, as a dict or JSON text."""
    keys = moto_user_keys(moto_endpoint)
    with authentication(moto_endpoint):
        open_store(f"s3://{s3_bucket}/layer", secrets=keys).create("provenance", b"{}")
        blob = open_store(f"s3://{s3_bucket}/layer", secrets=json.dumps(keys)).get("provenance")
    assert blob.data == b"{}"
    with pytest.raises(InvalidInput, match="secrets"):
        open_store(f"s3://{s3_bucket}/layer", secrets="not json")


@pytest.mark.parametrize("cloudpath", ["s3://bucket/a/b ", " s3://bucket/a/b", "file:///a/b\n"])
def test_a_cloudpath_with_outer_whitespace_is_refused(cloudpath: str) -> None:
    """CloudVolume writes `a/b ` under `a/b /`: stripping it would file provenance apart."""
    with pytest.raises(InvalidInput, match="whitespace"):
        parse_cloudpath(cloudpath)


@pytest.fixture
def keyed_layer(s3_bucket: str, moto_endpoint: str, unknown_keys: None) -> Iterator[tuple]:
    """An S3 layer that only a new moto user's keys may reach, and those keys; the keys given
    to cirrus are forgotten afterwards."""
    from cloudfiles.interfaces import reset_connection_pools

    path = f"s3://{s3_bucket}/layer"
    make_layer(path)  # before authentication is on
    keys = moto_user_keys(moto_endpoint)
    reset_connection_pools()  # CloudFiles would reuse its connection with the other keys
    try:
        with authentication(moto_endpoint):
            yield path, keys
    finally:
        cirrus.use_secrets(path, None)
        reset_connection_pools()


def test_a_volumes_secrets_reach_its_provenance(keyed_layer: tuple) -> None:
    """s.volume(path, secrets=...) writes the data with them; the records must not fall back to
    other credentials (here the environment's keys, which the server refuses)."""
    path, keys = keyed_layer
    with cirrus.session(["gs://lab/aff"], "secrets test", process()) as s:
        s.volume(path, secrets=keys)[0:64, 0:64, 0:64] = chunk_of(3)
    (record,) = cirrus.history(path)
    assert record.record.status == "committed" and record.record.session == s.id
    cirrus.use_secrets(path, None)  # back to the environment's keys
    with pytest.raises(PermanentStorageError, match="denied"):
        cirrus.history(path)


def test_a_tasks_volume_secrets_reach_the_step_files(keyed_layer: tuple) -> None:
    """A worker process knows the keys only from `t.volume(path, secrets=...)`: the step's
    manifest, read before the first write, must be read with them too."""
    path, keys = keyed_layer
    cirrus.use_secrets(path, keys)  # where the step is opened
    step = cirrus.step(["gs://lab/aff"], "secrets test", process(), volumes=[path])
    cirrus.use_secrets(path, None)  # a worker: nothing given yet
    with cirrus.join(step.token, task="t1") as t:
        t.volume(path, secrets=keys)[0:64, 0:64, 0:64] = chunk_of(5)
    step.finish()
    (record,) = cirrus.history(path)
    assert record.record.step == step.id and record.record.tasks["count"] == 1


def test_an_access_error_points_at_the_credentials_that_were_used(keyed_layer: tuple) -> None:
    path, keys = keyed_layer
    wrong = {**keys, "AWS_SECRET_ACCESS_KEY": "wrong"}
    with pytest.raises(PermanentStorageError, match=r"check the secrets given for this layer"):
        open_store(path, secrets=wrong).get("provenance")
    with pytest.raises(PermanentStorageError, match=r"aws-secret\.json.*cirrus\.use_secrets"):
        open_store(path).get("provenance")  # the environment's keys: the files, or give some


def test_a_compat_volumes_secrets_reach_its_provenance(keyed_layer: tuple) -> None:
    path, keys = keyed_layer
    vol = cirrus.CloudVolume(
        path, secrets=json.dumps(keys), sources=["x"], motivation="m", process=process()
    )
    vol[0:64, 0:64, 0:64] = chunk_of(4)
    vol.commit()
    cirrus.use_secrets(path, None)
    from cloudvolume import CloudVolume

    cirrus.add_note(CloudVolume(path, secrets=keys), "checked")  # its own secrets again
    assert [r.record.status for r in cirrus.history(path)] == ["committed", "committed"]


def test_secrets_no_store_can_use_are_refused_before_anything_is_written(tmp_path) -> None:
    path = f"file://{tmp_path}/layer"
    make_layer(path)
    with pytest.raises(InvalidInput, match="secrets must be a dict"):
        cirrus.use_secrets("s3://bucket/layer", "not json")
    with pytest.raises(InvalidInput, match="secrets must be a dict"):
        cirrus.use_secrets("s3://bucket/layer", object())  # a Google object: gs:// only
    from google.auth.credentials import AnonymousCredentials

    cirrus.use_secrets("gs://bucket/layer", AnonymousCredentials())  # as CloudFiles takes it
    cirrus.use_secrets("gs://bucket/layer", None)
    with pytest.raises(InvalidInput, match="no client_email, private_key; give the contents"):
        cirrus.use_secrets("gs://bucket/layer", {"AWS_ACCESS_KEY_ID": "k"})  # keys of S3
    with pytest.raises(InvalidInput, match="no AWS_SECRET_ACCESS_KEY"):
        cirrus.use_secrets("s3://bucket/layer", {"AWS_ACCESS_KEY_ID": "k"})
    with cirrus.session(["x"], "m", process()) as s:
        with pytest.raises(InvalidInput, match="secrets"):
            s.volume("s3://bucket/layer", secrets=[1, 2])
        s.volume(path, secrets={"token": "t"})  # file:// takes none, as in CloudFiles
    assert cirrus.history(path) == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # CloudFiles'
def test_keys_in_the_environment_without_a_session_token_get_the_fix_before_any_write(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The usual `export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...`: CloudFiles then reads
    AWS_SESSION_TOKEN unconditionally, and CloudVolume raised a bare KeyError."""
    from cloudfiles.interfaces import reset_connection_pools

    path = f"s3://{s3_bucket}/layer"
    make_layer(path)
    before = sorted(open_store(path).backend.list(""))
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    reset_connection_pools()  # pools made with the token would hide it
    try:
        with (
            cirrus.session(["gs://lab/x"], "no token", process()) as s,
            pytest.raises(InvalidInput, match="export AWS_SESSION_TOKEN="),
        ):
            s.volume(path)
        with pytest.raises(InvalidInput, match=f"{path}: .*AWS_SESSION_TOKEN"):
            cirrus.CloudVolume(path, sources=["gs://lab/x"], motivation="m", process=process())
    finally:
        reset_connection_pools()
    assert sorted(open_store(path).backend.list("")) == before
