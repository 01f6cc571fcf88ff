"""file:// conditional writes hold across real processes, not only threads.

Workers fork from a forkserver (a clean single-threaded process that imported this module once),
so starting 16 of them is cheap and safe even while server threads run in the test process.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

import pytest

from cirrus.errors import PreconditionFailed
from cirrus.storage import open_backend, open_store
from tests.test_storage import (
    INCREMENTS,
    WRITERS,
    counter_ops,
    expected_ops,
    increment,
    new_counter,
)

PROCESSES = WRITERS
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload([__name__])


def _create(cloudpath: str, i: int, barrier: Barrier, results: Queue) -> None:
    store = open_store(cloudpath)
    barrier.wait()
    try:
        store.swap("race", f"process {i}".encode() * 1000, None)
        results.put((i, True))
    except PreconditionFailed:
        results.put((i, False))


def _create_without_links(cloudpath: str, i: int, barrier: Barrier, results: Queue) -> None:
    """As `_create`, on a file system that refuses hard links (some FUSE and SMB mounts)."""

    def refuse(*_args: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    os.link = refuse  # this child process only
    _create(cloudpath, i, barrier, results)


def _increment(cloudpath: str, i: int, barrier: Barrier, results: Queue) -> None:
    store = open_store(cloudpath)
    barrier.wait()
    results.put((i, increment(store, "counter", i, INCREMENTS)))


def _run(target: Callable[..., None], cloudpath: str) -> list:
    """Start PROCESSES workers released together; their results in worker order."""
    barrier, results = _CONTEXT.Barrier(PROCESSES), _CONTEXT.Queue()
    workers = [
        _CONTEXT.Process(target=target, args=(cloudpath, i, barrier, results))
        for i in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    found = dict(results.get(timeout=60) for _ in workers)
    for worker in workers:
        worker.join(timeout=10)
        assert worker.exitcode == 0
    return [found[i] for i in range(PROCESSES)]


def test_create_only_across_processes_has_one_winner(tmp_path) -> None:
    cloudpath = f"file://{tmp_path}/layer"
    wins = _run(_create, cloudpath)
    assert wins.count(True) == 1
    data = open_store(cloudpath).get("race").data
    assert data == f"process {wins.index(True)}".encode() * 1000


def test_create_only_without_hard_links_still_has_one_winner(tmp_path) -> None:
    cloudpath = f"file://{tmp_path}/layer"
    wins = _run(_create_without_links, cloudpath)
    assert wins.count(True) == 1
    data = open_store(cloudpath).get("race").data
    assert data == f"process {wins.index(True)}".encode() * 1000
    assert open_store(cloudpath).list("") == ["race"]  # no temp file left behind


def test_compare_and_swap_across_processes_loses_nothing(tmp_path) -> None:
    cloudpath = f"file://{tmp_path}/layer"
    store = open_store(cloudpath)
    new_counter(store)
    _run(_increment, cloudpath)
    assert sorted(counter_ops(store)) == expected_ops(PROCESSES, INCREMENTS)
    assert store.list("") == ["counter"]


def _swap_in_child(cloudpath: str, go: int) -> None:
    """The forked child: wait for `go`, then compare-and-swap the summary itself; exit 0 if done."""
    status = 1
    try:
        os.read(go, 1)
        signal.alarm(5)  # a deadlocked swap ends the child instead of the test run
        store = open_store(cloudpath)
        store.swap("provenance", b"child", store.get("provenance").token)
        status = 0
    finally:
        os._exit(status)


def test_a_process_forked_while_a_swap_holds_the_lock_does_not_keep_it(tmp_path) -> None:
    """A commit swaps summaries on threads; a worker pool forked meanwhile inherits the held
    lock's descriptor and thread lock. The child must give both up: other writers must not wait
    for the child to exit, and the child's own swap must not deadlock."""
    cloudpath = f"file://{tmp_path}/layer"
    backend = open_backend(cloudpath)
    store = open_store(cloudpath)
    token = store.swap("provenance", b"v0", None)
    held, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:  # a swap of another thread, between compare and replace
        with backend._locked(backend._path("provenance")):
            held.set()
            release.wait()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    held.wait()
    go_read, go_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        _swap_in_child(cloudpath, go_read)
    release.set()
    holder.join()
    other = threading.Thread(target=store.swap, args=("provenance", b"v1", token))
    other.start()
    other.join(timeout=3)
    blocked = other.is_alive()
    os.write(go_write, b"x")
    _, status = os.waitpid(pid, 0)
    other.join()
    assert not blocked, "another writer waited for the forked child to exit"
    assert os.waitstatus_to_exitcode(status) == 0, "the child's own swap deadlocked"
    assert store.get("provenance").data == b"child"


def test_other_users_can_swap_with_a_lock_file_they_cannot_write(tmp_path) -> None:
    """On a shared layer the colleague who first swapped created the lock file 0644 (umask 022):
    flock needs only read access, so another user's swap must work. The other user is this
    (root) user running without the capabilities that bypass file permissions."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to act as a second user")
    layer = tmp_path / "layer"
    store = open_store(f"file://{layer}")
    store.swap("provenance", b"v1", store.swap("provenance", b"v0", None))
    for path in (layer, *layer.iterdir()):
        os.chown(path, 1000, 1000)  # the colleague's
        os.chmod(path, 0o777 if path == layer else 0o644)
    code = (
        f"from cirrus.storage import open_store; s = open_store('file://{layer}'); "
        "s.swap('provenance', b'v2', s.get('provenance').token)"
    )
    drop = "-dac_override,-dac_read_search,-fowner"
    second_user = [setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}", sys.executable]
    run = subprocess.run([*second_user, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    assert store.get("provenance").data == b"v2"
