"""Conditional object storage on real backends: file, mem, S3 (moto, Ceph RGW) and GCS (emulator).

No mocks: every backend talks to a real filesystem or a real server started by the fixtures.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from cirrus.errors import (
    PermanentStorageError,
    PreconditionFailed,
    StorageError,
    TransientStorageError,
)
from cirrus.storage import Blob, Store, open_backend, open_store, wrap_backends
from cirrus.storage.base import CONNECTIONS
from cirrus.storage.faults import CountingBackend, FaultyBackend
from cirrus.storage.retry import RetryPolicy
from tests.servers.moto_server import authentication, free_port
from tests.session_support import hooked

WRITERS = 16
INCREMENTS = 20


def run_threads(count: int, target: Callable[[int], object]) -> list[object]:
    """Run `target(i)` on `count` threads released together; return results (or exceptions)."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target(i)
        except Exception as error:
            results[i] = error

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def increment(store: Store, key: str, writer: int, times: int) -> int:
    """Append `times` operation ids to a JSON counter by compare-and-swap; returns conflicts.

    Idempotent like the ledger's merge: a swap whose response was lost (applied, then retried
    into a conflict) is recognised by finding its operation id already there.
    """
    conflicts = 0
    for j in range(times):
        op = f"{writer}-{j}"
        while True:
            blob = store.get(key)
            assert blob is not None
            ops = json.loads(blob.data)["ops"]
            if op in ops:
                break
            try:
                store.swap(key, json.dumps({"ops": [*ops, op]}).encode(), blob.token)
                break
            except PreconditionFailed:
                conflicts += 1
                time.sleep(random.uniform(0, 0.002 * min(conflicts, 10)))
    return conflicts


def new_counter(store: Store, key: str = "counter") -> None:
    store.create(key, b'{"ops": []}')


def counter_ops(store: Store, key: str = "counter") -> list[str]:
    blob = store.get(key)
    assert blob is not None
    return json.loads(blob.data)["ops"]


def expected_ops(writers: int, times: int) -> list[str]:
    return sorted(f"{w}-{j}" for w in range(writers) for j in range(times))


def race_to_create(store: Store, writers: int) -> None:
    """Every writer creates the same key with its own bytes: exactly one wins, and its bytes stay.

    A winner whose response was lost reads its own bytes back and still counts as the winner.
    """
    results = run_threads(writers, lambda i: store.create("race", f"writer {i}".encode()))
    winners = [i for i, result in enumerate(results) if isinstance(result, bool)]
    losers = [result for result in results if isinstance(result, PreconditionFailed)]
    assert len(winners) == 1 and len(losers) == writers - 1, results
    assert store.get("race").data == f"writer {winners[0]}".encode()


def test_create_only_has_exactly_one_winner(layer_path: str) -> None:
    race_to_create(open_store(layer_path), WRITERS)


def test_create_is_idempotent_and_refuses_other_bytes(layer_path: str) -> None:
    store = open_store(layer_path)
    assert store.create("provenance.d/records/a.json", b"{}") is True
    assert store.create("provenance.d/records/a.json", b"{}") is False
    with pytest.raises(PreconditionFailed, match="records/a.json"):
        store.create("provenance.d/records/a.json", b"{ }")


def test_swap_needs_the_current_token(layer_path: str) -> None:
    store = open_store(layer_path)
    first = store.swap("provenance", b"1", None)
    second = store.swap("provenance", b"2", first)
    assert store.get("provenance").token == second
    with pytest.raises(PreconditionFailed):
        store.swap("provenance", b"3", first)
    with pytest.raises(PreconditionFailed):
        store.swap("provenance", b"3", None)
    with pytest.raises(PreconditionFailed):
        store.swap("missing", b"3", second)
    assert store.get("provenance").data == b"2"
    assert store.get("missing") is None


def test_list_returns_keys_under_a_prefix(layer_path: str) -> None:
    store = open_store(layer_path)
    assert store.list("") == []
    token = store.swap("provenance", b"{}", None)
    store.swap("provenance", b"{ }", token)  # leaves a lock file behind on file://
    for key in ("records/a.json", "records/b.json", "envs/c.json"):
        store.create(f"provenance.d/{key}", b"{}")
    assert store.list("provenance.d/records/") == [
        "provenance.d/records/a.json",
        "provenance.d/records/b.json",
    ]
    assert store.list("provenance.d/") == [
        "provenance.d/envs/c.json",
        "provenance.d/records/a.json",
        "provenance.d/records/b.json",
    ]
    assert store.list("") == ["provenance", *store.list("provenance.d/")]
    assert store.list("nothing/") == []


def test_compare_and_swap_loses_no_update_under_contention(layer_path: str) -> None:
    """16 writers x 20 increments of one JSON counter, and every one lands.

    moto is not atomic (it checks the precondition, then stores without a lock) and slow under
    contention, so on s3 a smaller run only checks the error semantics (conflicts are
    PreconditionFailed, nothing else) and that the counter is never corrupt. The exact count on
    S3 is proven against Ceph RGW below, and across processes on file:// in
    test_storage_file_processes.py.
    """
    moto = layer_path.startswith("s3://")
    writers, increments = (4, 10) if moto else (WRITERS, INCREMENTS)
    store = open_store(layer_path)
    new_counter(store)
    results = run_threads(writers, lambda i: increment(store, "counter", i, increments))
    assert all(isinstance(result, int) for result in results), results
    ops = counter_ops(store)
    assert len(set(ops)) == len(ops)
    if moto:
        assert ops and set(ops) <= set(expected_ops(writers, increments))
    else:
        assert sorted(ops) == expected_ops(writers, increments)


def test_lost_response_on_create_is_recognised_as_success(layer_path: str) -> None:
    with wrap_backends(lambda backend: FaultyBackend(backend, lost_response_rate=1.0)):
        store = Store(open_backend(layer_path), RetryPolicy(initial=0.01))
        assert store.create("provenance.d/records/r.json", b"record") is False
        with pytest.raises(PreconditionFailed):
            store.create("provenance.d/records/r.json", b"another record")
    assert open_store(layer_path).get("provenance.d/records/r.json").data == b"record"


def add_op(op: str) -> Callable[[Blob | None], bytes | None]:
    """A `Store.update` change adding `op` to a JSON counter once (idempotent, as required)."""

    def change(blob: Blob | None) -> bytes | None:
        ops = [] if blob is None else json.loads(blob.data)["ops"]
        return None if op in ops else json.dumps({"ops": [*ops, op]}).encode()

    return change


def test_update_reapplies_its_change_to_what_won_the_conflict(tmp_path) -> None:
    path = f"file://{tmp_path}/layer"
    rival = open_store(path)
    stale = rival.update("counter", add_op("first"), contended="-").blob
    rival.update("counter", add_op("rival"), contended="-")
    updated = open_store(path).update("counter", add_op("mine"), read=stale, contended="-")
    assert updated.written and json.loads(updated.blob.data) == {"ops": ["first", "rival", "mine"]}
    assert open_store(path).update("counter", add_op("mine"), contended="-").written is False


def test_update_whose_swap_response_is_lost_finds_its_change_there(tmp_path) -> None:
    path = f"file://{tmp_path}/layer"
    open_store(path).update("counter", add_op("first"), contended="-")
    with wrap_backends(lambda backend: FaultyBackend(backend, lost_response_rate=1.0)):
        store = Store(open_backend(path), RetryPolicy(initial=0.01))
        store.update("counter", add_op("mine"), contended="-")
    assert counter_ops(open_store(path)) == ["first", "mine"]


def test_update_gives_up_on_endless_conflicts_saying_what_to_do(tmp_path) -> None:
    path = f"file://{tmp_path}/layer"
    rival = open_store(path)
    rival.update("counter", add_op("first"), contended="-")
    laps = iter(range(10**6))

    def rival_first(_cloudpath: str, _key: str) -> None:  # another writer always lands first
        rival.update("counter", add_op(f"rival-{next(laps)}"), contended="-")

    with hooked(before=rival_first), pytest.raises(StorageError, match="run it again") as error:
        open_store(path).update("counter", add_op("mine"), contended="run it again", deadline=0.2)
    assert "still contended" in str(error.value) and "mine" not in counter_ops(rival)


def test_transient_errors_at_thirty_percent_still_converge(layer_path: str) -> None:
    with wrap_backends(lambda backend: FaultyBackend(backend, error_rate=0.3, seed=7)):
        store = Store(open_backend(layer_path), RetryPolicy(initial=0.01, maximum=0.1))
        for i in range(10):
            store.create(f"provenance.d/records/{i}.json", str(i).encode())
        new_counter(store)
        increment(store, "counter", 0, 10)
        assert len(store.list("provenance.d/records/")) == 10
        assert sorted(counter_ops(store)) == expected_ops(1, 10)


def test_a_retry_is_logged_at_warning(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    backend = FaultyBackend(open_backend(f"file://{tmp_path}/layer"), lost_response_rate=1.0)
    with caplog.at_level(logging.WARNING, logger="cirrus.storage"):
        assert Store(backend, RetryPolicy(initial=0.01)).create("k", b"v") is False
    retries = [
        r for r in caplog.records if r.levelno == logging.WARNING and "retrying" in r.message
    ]
    assert retries and "lost response" in retries[0].message


def test_counting_backend_counts_calls_per_method(tmp_path) -> None:
    calls: Counter[str] = Counter()
    with wrap_backends(lambda backend: CountingBackend(backend, calls)):
        store = open_store(f"file://{tmp_path}/layer")
    assert store.cloudpath == f"file://{tmp_path}/layer"
    token = store.swap("provenance", b"1", None)
    store.swap("provenance", b"2", token)
    store.create("provenance", b"2")
    store.list("")
    assert calls == Counter(put_new=2, put_if_match=1, get=1, list=1)


@pytest.mark.parametrize("protocol", ["s3", "gs"])
def test_missing_bucket_fails_at_once_naming_the_path(
    protocol: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    request.getfixturevalue("moto_endpoint" if protocol == "s3" else "gcs_endpoint")
    cloudpath = f"{protocol}://cirrus-no-such-bucket/layer"
    store = open_store(cloudpath)
    with caplog.at_level(logging.DEBUG, logger="cirrus.storage"):
        with pytest.raises(PermanentStorageError, match="cirrus-no-such-bucket/layer/provenance"):
            store.create("provenance", b"{}")
        if protocol == "s3":
            with pytest.raises(PermanentStorageError, match="does not exist"):
                store.get("provenance")
    assert not [r for r in caplog.records if "retrying" in r.message]  # not retried


def test_bad_s3_credentials_fail_at_once(
    s3_bucket: str,
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7NOTVALID")
    store = open_store(f"s3://{s3_bucket}/layer")
    with (
        caplog.at_level(logging.DEBUG, logger="cirrus.storage"),
        authentication(moto_endpoint),
        pytest.raises(PermanentStorageError) as caught,
    ):
        store.create("provenance", b"{}")
    assert not [r for r in caplog.records if "retrying" in r.message]  # not retried
    assert f"s3://{s3_bucket}/layer/provenance" in str(caught.value)
    assert "denied" in str(caught.value) and "credentials" in str(caught.value)


def test_s3_endpoint_in_the_cloudpath(s3_bucket: str, moto_endpoint: str) -> None:
    explicit = open_store(f"s3://{moto_endpoint}/{s3_bucket}/layer")
    explicit.create("provenance", b"{}")
    assert open_store(f"s3://{s3_bucket}/layer").get("provenance").data == b"{}"


def test_unreachable_endpoint_is_transient(moto_endpoint: str) -> None:
    backend = open_backend(f"s3://http://127.0.0.1:{free_port()}/bucket/layer")
    with pytest.raises(TransientStorageError, match="connection"):
        Store(backend, RetryPolicy(deadline=0.3, initial=0.05)).get("provenance")


def test_file_key_outside_the_layer_is_refused(tmp_path) -> None:
    store = open_store(f"file://{tmp_path}/layer")
    with pytest.raises(PermanentStorageError, match="relative"):
        store.create("../escape", b"x")


def test_file_layer_under_a_regular_file_is_permanent(tmp_path) -> None:
    (tmp_path / "plain").write_bytes(b"")
    with pytest.raises(PermanentStorageError, match="plain"):
        open_store(f"file://{tmp_path}/plain/layer").create("provenance", b"{}")


@pytest.mark.rgw
def test_rgw_compare_and_swap_is_atomic(
    rgw_endpoint, rgw_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a real S3 server every one of 16 x 20 increments lands, and create has one winner."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", rgw_endpoint.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", rgw_endpoint.secret_key)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "")
    store = open_store(f"s3://{rgw_endpoint.endpoint_url}/{rgw_bucket}/layer")
    race_to_create(store, WRITERS)
    new_counter(store)
    results = run_threads(WRITERS, lambda i: increment(store, "counter", i, INCREMENTS))
    assert all(isinstance(result, int) for result in results), results
    assert sorted(counter_ops(store)) == expected_ops(WRITERS, INCREMENTS)
    with pytest.raises(PreconditionFailed):  # RGW answers 412 where AWS answers 404
        store.swap("missing", b"x", "0123456789abcdef0123456789abcdef")


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_a_commits_overlapped_requests_keep_their_connections(
    scheme: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    """A commit overlaps `CONNECTIONS` volumes of one bucket: the process's client keeps a
    connection for each, instead of opening and discarding them ("Connection pool is full")."""
    bucket = request.getfixturevalue("s3_bucket" if scheme == "s3" else "gcs_bucket")
    backend = open_backend(f"{scheme}://{bucket}/layer")
    together = threading.Barrier(CONNECTIONS)

    def create(key: str) -> None:
        together.wait(timeout=30)
        backend.put_new(key, b"{}")

    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
        for round_ in range(3):
            threads = [
                threading.Thread(target=create, args=(f"r{round_}/k{i}",))
                for i in range(CONNECTIONS)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    assert len(backend.list("r")) == 3 * CONNECTIONS
    assert [r.getMessage() for r in caplog.records if "pool is full" in r.getMessage()] == []


def test_the_gs_pool_leaves_an_adapter_google_auth_mounted_for_mutual_tls() -> None:
    """google-auth mounts its own adapter on https:// when client certificates are in use:
    replacing it with a bigger pool would silently drop mutual TLS."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage
    from requests.adapters import HTTPAdapter

    from cirrus.storage.gcs import _pooled

    class MutualTlsAdapter(HTTPAdapter):  # stands in for google-auth's _MutualTlsAdapter
        pass

    client = storage.Client(credentials=AnonymousCredentials(), project="cirrus-test")
    mutual = MutualTlsAdapter()
    client._http.mount("https://", mutual)
    _pooled(client)
    assert client._http.get_adapter("https://storage.googleapis.com") is mutual
    plain = client._http.get_adapter("http://localhost")
    assert type(plain) is HTTPAdapter and plain._pool_maxsize == CONNECTIONS
