"""16 real processes, each with its own session on one file:// volume: 16 records, all published.

mem:// is per process, so only file:// (and the servers) can be shared; file:// is what a lab's
shared filesystem gives.
"""

from __future__ import annotations

import multiprocessing

import numpy as np

import cirrus
from cirrus.ledger import Ledger
from cirrus.storage.paths import normalise_cloudpath
from tests.session_support import make_layer, plain, summary_json

WORKERS = 16


def worker(path: str, i: int, barrier, results) -> None:
    proc = cirrus.Process("parallel worker", {"worker": i})
    with cirrus.session([f"gs://src/{i}", "gs://shared"], f"worker {i} motivation", proc) as s:
        vol = s.volume(path)
        x, y = (i % 4) * 64, (i // 4) * 64
        vol[x : x + 64, y : y + 64, 0:64] = np.full((64, 64, 64), i + 1, np.uint8)
        barrier.wait(timeout=60)  # everyone commits at once
    results.put((i, s.records[path]))


def test_sixteen_processes_with_independent_sessions_on_one_volume(tmp_path):
    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    make_layer(path, size=(256, 256, 64))
    # forkserver: clean single-threaded children, with the heavy imports done once
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["numpy", "cloudvolume", "cirrus"])
    barrier = context.Barrier(WORKERS)
    results = context.Queue()
    processes = [
        context.Process(target=worker, args=(path, i, barrier, results)) for i in range(WORKERS)
    ]
    for process in processes:
        process.start()
    ids = dict(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0

    history = cirrus.history(path)
    assert len(history) == WORKERS
    assert {stored.id for stored in history} == set(ids.values())
    assert sorted(Ledger.open(path).record_ids()) == sorted(ids.values())
    workers = sorted(stored.record.process["parameters"]["worker"] for stored in history)
    assert workers == list(range(WORKERS))
    assert all(stored.record.status == "committed" for stored in history)

    summary = summary_json(path)
    assert sorted(entry["id"] for entry in summary["cirrus"]["records"]) == sorted(ids.values())
    assert sorted(summary["sources"]) == sorted(
        ["gs://shared", *(f"gs://src/{i}" for i in range(WORKERS))]
    )
    assert sorted(entry["parameters"]["worker"] for entry in summary["processing"]) == list(
        range(WORKERS)
    )
    for i in range(WORKERS):
        assert f"MOTIVATION;worker {i} motivation" in summary["description"]

    data = plain(path)[:, :, :][..., 0]
    for i in range(WORKERS):
        x, y = (i % 4) * 64, (i // 4) * 64
        assert (data[x : x + 64, y : y + 64, :] == i + 1).all(), i
