"""Steps and contention: what finishing a big step costs, and what contention does to commits.

1. Finish time against the number of task fragments (100, 1,000, 10,000) on file:// and on a real
   S3 server (Ceph RGW, started here through tests/servers/rgw.py). Fragments are filed directly
   with `StepFiles.put_fragment` from a thread pool (as that many tasks would), then `cirrus.finish`
   is timed: list, read every fragment, fold, stage one record, publish once. The baseline is the
   same backend's 100-fragment finish, so the ratio shows how finish scales.
2. Independent sessions under contention: N processes (8, 32, 64) on one volume, on file:// and
   on Ceph RGW, each write
   a chunk in their own `cirrus.session`, then all commit at one barrier; commit latency p50/p99
   against the same processes doing plain CloudVolume read-modify-write of `provenance`
   (`refresh_provenance`, `processing.append`, `commit_provenance()`), and how many updates each
   side lost (cirrus: records missing from the history; CloudVolume: entries missing from
   `processing`, all of them when the object was left unreadable).

Run alone: `python -m benchmarks.bench_steps [--quick]`; with the others:
`python -m benchmarks.run --only steps`. Nothing here is faked: a case that cannot run is a
`not measured: <reason>` row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from tests import layers
from tests.layers import environment

BENCHMARK = "steps"
CHUNK = 64
SOURCES = ["gs://lab/bench/affinities"]
MOTIVATION = "benchmark steps and contention"


@dataclasses.dataclass(frozen=True)
class Sizes:
    fragments: tuple[int, ...]  # fragments per step for the finish benchmark
    writers: tuple[int, ...]  # processes committing at once
    samples: int  # at least this many commits per writer count (rounds of N processes)
    rgw: bool


FULL = Sizes(fragments=(100, 1_000, 10_000), writers=(8, 32, 64), samples=32, rgw=True)
QUICK = Sizes(fragments=(100, 1_000), writers=(8,), samples=8, rgw=False)


def run(quick: bool = False) -> list[dict]:
    sizes = QUICK if quick else FULL
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="cirrus-bench-steps-") as root:
        rows += finish_scaling(f"file://{root}/finish", "file://", sizes.fragments)
        for count in sizes.writers:
            rows += contention(f"file://{root}", "file://", count, sizes.samples, {})
    rows += rgw_rows(sizes)
    return rows


def row(case: str, cirrus: Any, baseline: Any = None, unit: str = "", **detail: Any) -> dict:
    numeric = all(isinstance(v, int | float) for v in (cirrus, baseline))
    ratio = round(cirrus / baseline, 4) if numeric and baseline else None
    return {
        "benchmark": BENCHMARK,
        "case": case,
        "cirrus": cirrus,
        "baseline": baseline,
        "ratio": ratio,
        "unit": unit,
        **detail,
    }


def _progress(message: str) -> None:
    print(f"[bench_steps] {message}", file=sys.stderr, flush=True)


# -- 1. finish against fragment count ------------------------------------------------------------
def _finish_case(count: int, label: str) -> str:
    return f"finish a step of {count:,} task fragments, {label}"


def finish_scaling(base: str, label: str, counts: tuple[int, ...]) -> list[dict]:
    times = {count: finish_time(f"{base}/f{count}", count) for count in counts}
    first = counts[0]
    rows = []
    for count in counts:
        rows.append(
            row(
                _finish_case(count, label),
                round(times[count], 3),
                None if count == first else round(times[first], 3),
                "s",
                per_fragment_ms=round(times[count] / count * 1000, 3),
            )
        )
    return rows


def finish_time(layer: str, count: int) -> float:
    """Seconds for `cirrus.finish` of a step whose `count` tasks each filed one fragment."""
    import cirrus
    from cirrus.ledger import Ledger
    from cirrus.model import isoformat, utcnow
    from cirrus.stepfiles import StepFiles
    from cirrus.writeset import MipWrites, writes_json
    from tests import layers

    layers.make_layer(layer, [CHUNK] * 3, CHUNK)  # a step's volumes are layers (an info)
    process = cirrus.Process("bench step", {"chunk": CHUNK})
    step = cirrus.step(SOURCES, MOTIVATION, process, [layer])
    ledger = Ledger.open(layer)
    side = max(1, round(count**0.5))

    def put(index: int) -> None:
        x, y = index % side * CHUNK, index // side * CHUNK
        box = (x, y, 0, x + CHUNK, y + CHUNK, CHUNK)
        now = isoformat(utcnow())
        task = f"x{x}_y{y}_z0"
        fragment = {
            "schema": "cirrus.fragment/1",
            "step": step.id,
            "task": task,
            "status": "committed",
            "error": None,
            "started": now,
            "ended": now,
            "user": "bench",
            "host": f"worker-{index % 50}",
            "writes": writes_json([MipWrites(0, np.array([box]), 1, CHUNK**3)], {"upload": 1}, []),
            "notes": [],
        }
        StepFiles.beside(ledger).put_fragment(step.id, task, fragment)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=32) as pool:
        list(pool.map(put, range(count)))
    setup = time.perf_counter() - started
    started = time.perf_counter()
    ids = step.finish()
    elapsed = time.perf_counter() - started
    record = ledger.read_record(ids[ledger.cloudpath]).record
    if record.tasks["count"] != count or record.writes["mips"]["0"]["chunks"] != count:
        raise AssertionError(f"finish folded {record.tasks['count']} of {count} fragments")
    _progress(f"{layer}: {count} fragments filed in {setup:.1f} s, finished in {elapsed:.2f} s")
    return elapsed


def rgw_rows(sizes: Sizes) -> list[dict]:
    """Finish scaling and contention on one Ceph RGW server, started here."""
    if not sizes.rgw:
        return _rgw_not_measured(sizes, "skipped by --quick (starting Ceph RGW takes ~15 s)")
    try:
        from tests.servers.rgw import rgw_server
    except ImportError as error:
        return _rgw_not_measured(sizes, f"tests/servers/rgw.py cannot be imported: {error}")
    from cloudfiles.interfaces import reset_connection_pools

    with contextlib.ExitStack() as stack:
        try:
            rgw = stack.enter_context(rgw_server())
        except Exception as error:  # noqa: BLE001 - reported as a row, never faked
            return _rgw_not_measured(sizes, f"Ceph RGW did not start: {error}"[:300])
        _progress(f"RGW at {rgw.endpoint_url}, up in {rgw.startup_seconds:.1f} s")
        env = rgw.env()
        stack.enter_context(environment(env))
        stack.callback(reset_connection_pools)
        reset_connection_pools()
        bucket = rgw.make_bucket(f"bench-steps-{uuid.uuid4().hex[:12]}")
        rows = finish_scaling(f"s3://{bucket}/finish", RGW, sizes.fragments)
        for count in sizes.writers:
            rows += contention(f"s3://{bucket}", RGW, count, sizes.samples, env)
        return rows


RGW = "Ceph RGW s3://"


def _rgw_not_measured(sizes: Sizes, reason: str) -> list[dict]:
    finishes = [_finish_case(count, RGW) for count in sizes.fragments]
    contended = [_contention_case(count, RGW) for count in sizes.writers]
    return [row(case, f"not measured: {reason}") for case in finishes + contended]


# -- 2. independent sessions under contention ----------------------------------------------------
def _context() -> Any:
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["cirrus", "cloudvolume", "numpy"])
    return ctx


def make_layer(path: str, writers: int) -> None:
    layers.make_layer(path, [writers * CHUNK, CHUNK, CHUNK], CHUNK)


def _chunk(index: int) -> tuple[slice, Any]:
    import numpy as np

    box = (slice(index * CHUNK, (index + 1) * CHUNK), slice(0, CHUNK), slice(0, CHUNK))
    return box, np.full((CHUNK, CHUNK, CHUNK), index % 251 + 1, np.uint8)


def session_writer(layer: str, index: int, barrier: Any, results: Any, env: dict) -> None:
    """One independent cirrus session: write a chunk, wait for everyone, commit."""
    try:
        os.environ.update(env)  # a forkserver's children have its environment, not the parent's
        import cirrus
        from cirrus.ledger import Ledger

        box, data = _chunk(index)
        process = cirrus.Process("bench writer", {"worker": index})
        with cirrus.session(SOURCES, f"writer {index}", process) as s:
            s.volume(layer, progress=False)[box] = data
            ledger = Ledger.open(layer)
            ledger.store.get("provenance")  # connections made before the clock starts
            barrier.wait(timeout=300)
            started = time.perf_counter()
        results.put((index, time.perf_counter() - started, s.records[ledger.cloudpath]))
    except BaseException as error:  # the parent counts it; never hang the barrier
        barrier.abort()
        results.put((index, None, f"{type(error).__name__}: {error}"))


def plain_writer(layer: str, index: int, barrier: Any, results: Any, env: dict) -> None:
    """The same writer with plain CloudVolume: read `provenance`, append, `commit_provenance()`."""
    try:
        os.environ.update(env)
        from cloudvolume import CloudVolume

        box, data = _chunk(index)
        vol = CloudVolume(layer, progress=False)
        vol[box] = data
        barrier.wait(timeout=300)
        started = time.perf_counter()
        vol.refresh_provenance()
        vol.provenance.processing.append({"method": {"task": "bench writer", "worker": index}})
        vol.commit_provenance()
        results.put((index, time.perf_counter() - started, None))
    except BaseException as error:
        barrier.abort()
        results.put((index, None, f"{type(error).__name__}: {error}"))


def run_writers(target: Any, layer: str, count: int, env: dict) -> list[tuple]:
    ctx = _context()
    barrier = ctx.Barrier(count)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=target, args=(layer, i, barrier, results, env)) for i in range(count)
    ]
    for proc in procs:
        proc.start()
    done = [results.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(30)
    return done


def surviving_plain_entries(layer: str, count: int) -> tuple[int, bool]:
    """Writers whose processing entry is in `provenance`, and whether it was readable at all."""
    from cloudfiles import CloudFiles

    data = CloudFiles(layer).get("provenance")
    try:
        entries = json.loads(data)["processing"]
    except (TypeError, ValueError, KeyError):
        return 0, False
    workers = {e.get("method", {}).get("worker") for e in entries if isinstance(e, dict)}
    return len(workers & set(range(count))), True


def _contention_case(count: int, label: str) -> str:
    return f"updates lost, {count} processes commit at once on one {label} volume"


def contention(base: str, label: str, count: int, samples: int, env: dict) -> list[dict]:
    """p50/p99 commit latency and lost updates for `count` writers at once, in rounds.

    `env` is what the writers need to reach the storage (a forkserver's children do not see
    changes the parent made to its environment after the forkserver started)."""
    import cirrus

    rounds = max(1, -(-samples // count))
    cirrus_ms: list[float] = []
    plain_ms: list[float] = []
    cirrus_lost = plain_lost = plain_errors = cirrus_errors = corrupt = 0
    for r in range(rounds):
        layer = f"{base}/contention-{count}-{r}/cirrus"
        make_layer(layer, count)
        done = run_writers(session_writer, layer, count, env)
        cirrus_ms += [t * 1000 for _, t, _ in done if t is not None]
        cirrus_errors += sum(t is None for _, t, _ in done)
        ids = {rid for _, t, rid in done if t is not None}
        published = {h.id for h in cirrus.history(layer)}
        cirrus_lost += count - len(ids & published)

        layer = f"{base}/contention-{count}-{r}/plain"
        make_layer(layer, count)
        done = run_writers(plain_writer, layer, count, env)
        plain_ms += [t * 1000 for _, t, _ in done if t is not None]
        plain_errors += sum(t is None for _, t, _ in done)
        survived, readable = surviving_plain_entries(layer, count)
        plain_lost += count - survived
        corrupt += not readable
    total = rounds * count
    _progress(
        f"{label} {count} writers x {rounds} round(s): cirrus lost {cirrus_lost}, plain lost "
        f"{plain_lost} ({plain_errors} writers raised, {corrupt} round(s) left it unreadable)"
    )
    where = f"{count} processes commit at once on one {label} volume ({rounds} round(s))"
    detail = {"samples": {"cirrus": len(cirrus_ms), "baseline": len(plain_ms)}}
    # nearest rank: under 100 samples the 99th percentile is the slowest commit, so say so
    p99 = "p99" if min(len(cirrus_ms), len(plain_ms)) >= 100 else "p99 (the slowest)"
    return [
        row(
            f"commit latency p50, {where}", _pct(cirrus_ms, 50), _pct(plain_ms, 50), "ms", **detail
        ),
        row(
            f"commit latency {p99}, {where}",
            _pct(cirrus_ms, 99),
            _pct(plain_ms, 99),
            "ms",
            **detail,
        ),
        {
            **row(
                f"{_contention_case(count, label)}, of {total} ({rounds} round(s))",
                cirrus_lost,
                plain_lost,
                "updates",
                goal="none lost",
                errors={"cirrus": cirrus_errors, "baseline": plain_errors},
                baseline_unreadable_rounds=corrupt,
            ),
            "ratio": None,  # counts, not a ratio: 0 of 28 is no "0.000"
        },
    ]


def _pct(values: list[float], q: int) -> float | None:
    """The q-th percentile (nearest rank) in ms, rounded; None without samples."""
    if not values:
        return None
    ordered = sorted(values)
    if q == 50:
        return round(statistics.median(ordered), 2)
    rank = max(0, min(len(ordered) - 1, -(-q * len(ordered) // 100) - 1))
    return round(ordered[rank], 2)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.run import normalise, table

    args = sys.argv[1:] if argv is None else argv
    started = time.perf_counter()
    rows = [normalise(BENCHMARK, r) for r in run(quick="--quick" in args)]
    print(table(rows))
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
