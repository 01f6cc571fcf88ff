"""Helpers for the reliability tests and benchmarks: layers, fault wrappers, snapshots.

Importable by child processes (crash and contention tests) and by benchmarks/bench_reliability.py.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections import Counter
from typing import Any

import numpy as np

from cirrus.errors import TransientStorageError
from cirrus.storage.faults import FaultyBackend
from tests import layers
from tests.processes import run_together

CHUNK = 16
SIZE = (4 * CHUNK, 4 * CHUNK, 2 * CHUNK)  # 32 chunks of 16^3


def make_layer(path: str, size: tuple[int, int, int] = SIZE) -> None:
    """An empty uint8 image layer with 16^3 chunks, written with plain CloudVolume."""
    layers.make_layer(path, size, CHUNK)


def origin(index: int, size: tuple[int, int, int] = SIZE) -> tuple[int, int, int]:
    """The origin of chunk `index` (row-major over the chunk grid, wrapping around)."""
    grid = [n // CHUNK for n in size]
    index %= grid[0] * grid[1] * grid[2]
    x, rest = divmod(index, grid[1] * grid[2])
    y, z = divmod(rest, grid[2])
    return x * CHUNK, y * CHUNK, z * CHUNK


def paint(session: Any, path: str, index: int, value: int) -> None:
    """Write chunk `index` of `path` through `session` with `value`."""
    x, y, z = origin(index)
    volume = session.volume(path, progress=False)
    volume[x : x + CHUNK, y : y + CHUNK, z : z + CHUNK] = np.full((CHUNK,) * 3, value, np.uint8)


class StaticEnv:
    """A code environment whose JSON is fixed, so two runs stage identical env files."""

    def __init__(self, name: str):
        self.name = name

    def to_json(self) -> dict[str, Any]:
        return {"kind": "static", "name": self.name}


def session_process(index: int) -> Any:
    """Sessions 0, 2, 4... share one process, odd ones another: dedupe by digest is exercised."""
    import cirrus

    return cirrus.Process(
        "reliability step",
        {"variant": index % 2, "threshold": 0.25},
        StaticEnv(f"env-{index % 2}"),
    )


def session_sources(index: int) -> list[str]:
    return ["gs://lab/aff", f"gs://lab/input-{index}"]


def run_session(paths: list[str], index: int) -> Any:
    """One session over every path: a chunk each, a motivation and a result note."""
    import cirrus

    with cirrus.session(
        sources=session_sources(index),
        motivation=f"motivation {index}",
        process=session_process(index),
    ) as s:
        for j, path in enumerate(paths):
            paint(s, path, index, value=(index * 7 + j) % 251 + 1)
        s.result(f"result {index}")
    return s


# -- fault injection ------------------------------------------------------------------------------


class Faults:
    """Makes one seeded FaultyBackend per opened backend (seeds 0, 1, 2...), with latency spikes.

    Every injected failure (error or lost response) is counted in `injected`, which is what the
    retry layer retries: a fair "retries" figure.
    """

    def __init__(
        self,
        error_rate: float = 0.3,
        lost_response_rate: float = 0.3,
        spike_rate: float = 0.0,
        spike_seconds: float = 0.0,
        seed: int = 0,
    ):
        self.error_rate = error_rate
        self.lost_response_rate = lost_response_rate
        self.spike_rate = spike_rate
        self.spike_seconds = spike_seconds
        self._seeds = itertools.count(seed * 100_000)
        self.injected: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, backend: Any) -> Any:
        seed = next(self._seeds)
        faulty = CountedFaultyBackend(
            backend,
            error_rate=self.error_rate,
            lost_response_rate=self.lost_response_rate,
            seed=seed,
        )
        faulty.owner = self
        if self.spike_rate:
            return SpikyBackend(faulty, self.spike_rate, self.spike_seconds, seed)
        return faulty

    def count(self, counter: str, name: str) -> None:
        with self._lock:
            getattr(self, counter)[name] += 1

    @property
    def total_injected(self) -> int:
        return sum(self.injected.values())


class CountedFaultyBackend(FaultyBackend):
    """A FaultyBackend that tells its `Faults` owner about every call and every injected fault."""

    owner: Faults

    def _call(self, name, key, fn, *args):
        self.owner.count("calls", name)
        try:
            return super()._call(name, key, fn, *args)
        except TransientStorageError:
            self.owner.count("injected", name)
            raise

    def _write(self, name, key, fn, *args):
        try:
            return super()._write(name, key, fn, *args)
        except TransientStorageError as error:
            if "lost response" in str(error):
                self.owner.count("injected", f"{name} (lost response)")
            raise


class SpikyBackend:
    """Passes every call through, but a fraction of them first sleep `seconds` (a latency spike)."""

    def __init__(self, backend: Any, rate: float, seconds: float, seed: int):
        self.backend = backend
        self.cloudpath = backend.cloudpath
        self.rate = rate
        self.seconds = seconds
        self._random = random.Random(seed + 7)
        self._lock = threading.Lock()

    def _spike(self) -> None:
        with self._lock:
            spike = self._random.random() < self.rate
        if spike:
            time.sleep(self.seconds)

    def get(self, key):
        self._spike()
        return self.backend.get(key)

    def list(self, prefix):
        self._spike()
        return self.backend.list(prefix)

    def put_new(self, key, data):
        self._spike()
        return self.backend.put_new(key, data)

    def put_if_match(self, key, data, token):
        self._spike()
        return self.backend.put_if_match(key, data, token)


# -- reading back ---------------------------------------------------------------------------------


def snapshot(paths: list[str]) -> dict[str, dict[str, bytes]]:
    """Every provenance object of every layer, {layer: {key: bytes}}, read without wrappers."""
    from cirrus.storage.paths import _WRAPPERS, open_backend

    assert not _WRAPPERS, "snapshot must read the real objects"
    out = {}
    for path in paths:
        backend = open_backend(path)
        keys = backend.list("provenance.d/") + ["provenance"]
        blobs = {key: backend.get(key) for key in keys}
        out[path] = {key: blob.data for key, blob in blobs.items() if blob is not None}
    return out


def normalised_history(paths: list[str]) -> dict[str, Any]:
    """What a history must keep, free of ids and times: per layer, the records' facts (sorted)
    and the summary's sources, processing entries and note texts."""
    import cirrus
    from cirrus.ledger import Ledger

    out: dict[str, Any] = {}
    for path in paths:
        records = sorted(
            json.dumps(
                {
                    "volume": stored.record.volume,
                    "session": stored.record.session,
                    "status": stored.record.status,
                    "sources": list(stored.record.sources),
                    "notes": [(n["kind"], n["text"]) for n in stored.record.notes],
                    "process": (stored.record.process or {}).get("digest"),
                    "writes": stored.record.writes,
                    "siblings": sorted(stored.record.siblings),
                },
                sort_keys=True,
            )
            for stored in cirrus.history(path)
        )
        summary = Ledger.open(path).summary()
        out[path] = {
            "records": records,
            "sources": summary["sources"],
            "processing": summary["processing"],
            "notes": [line.split(";", 2)[1:] for line in summary["description"].split(" \n ")],
            "pointers": [
                (p["session"], p["status"], p.get("process"), sorted(p.get("siblings", [])))
                for p in summary["cirrus"]["records"]
            ]
            if "cirrus" in summary
            else [],
        }
    return out


# -- contention: many processes, one volume -------------------------------------------------------

CONTENTION_SIZE = (8 * CHUNK, 8 * CHUNK, CHUNK)  # 64 chunks, one per writer


def forkserver() -> Any:
    """A forkserver whose children start with cirrus, CloudVolume and boto3 imported."""
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.reliability.support", "cloudvolume", "boto3"])
    return ctx


def contention_writer(layer: str, index: int, barrier: Any, env: dict, results: Any) -> None:
    """One independent session painting its own chunk; every writer commits at the same moment.

    Reports (index, record id, commit seconds) or (index, None, error text).
    """
    import os

    import cirrus
    from cirrus.ledger import Ledger
    from cirrus.storage.paths import normalise_cloudpath

    os.environ.update(env)
    try:
        process = cirrus.Process("contention writer", {"worker": index})
        s = cirrus.session(["noise"], f"writer {index}", process)
        x, y, z = origin(index, CONTENTION_SIZE)
        volume = s.volume(layer, progress=False)
        volume[x : x + CHUNK, y : y + CHUNK, z : z + CHUNK] = np.full(
            (CHUNK,) * 3, index % 251 + 1, np.uint8
        )
        Ledger.open(layer).store.get("provenance")  # clients made: all commit in one burst
        barrier.wait(timeout=300)
        started = time.perf_counter()
        s.commit()
        elapsed = time.perf_counter() - started
        results.put((index, s.records[normalise_cloudpath(layer)], elapsed))
    except Exception as error:  # reported, so the parent can say which writer failed and why
        results.put((index, None, f"{type(error).__name__}: {error}"))


def commit_together(layer: str, writers: int, env: dict, timeout: float = 300) -> list[tuple]:
    """Start `writers` processes with independent sessions on `layer`; all commit at once."""
    done, _ = run_together(forkserver(), contention_writer, layer, writers, env, timeout)
    return done
