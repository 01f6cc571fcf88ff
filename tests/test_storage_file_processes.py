"""file:// conditional writes hold across real processes, not only threads.

Workers fork from a forkserver (a clean single-threaded process that imported this module once),
so starting 16 of them is cheap and safe even while server threads run in the test process.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
from collections.abc import Callable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

from cirrus.errors import PreconditionFailed
from cirrus.storage import open_store
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
