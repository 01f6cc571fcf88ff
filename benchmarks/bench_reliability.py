"""Nothing lost, nothing doubled, measured: sessions under injected faults.

Per backend (file://, S3 on moto): N two-volume sessions in a row, every provenance call behind
a seeded FaultyBackend (30% of calls fail, 30% of writes lose their response after being
applied, 5% stall 50 ms): sessions committed, records kept vs expected, records and summary
entries doubled, injected faults retried per commit, and p50/p99 commit latency against the
same sessions without faults. (Many processes committing at once, on file:// and Ceph RGW,
are bench_steps.py's contention rows.)

    python -m benchmarks.bench_reliability [--quick]     (from the repository root)
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator

from tests.layers import S3_TEST_ENV, environment

BENCHMARK = "reliability"
VOLUMES = 2


def run(quick: bool = False) -> list[dict]:
    """Rows {benchmark, case, cirrus, baseline, ratio, unit, goal}."""
    sessions = 8 if quick else 30
    rows: list[dict] = []
    saved = os.environ.get("CIRRUS_STORAGE_DEADLINE")
    os.environ["CIRRUS_STORAGE_DEADLINE"] = "30"
    try:
        with tempfile.TemporaryDirectory(prefix="cirrus-bench-reliability-") as root:
            rows += faults_rows("file://", f"file://{root}", sessions)
        with environment(S3_TEST_ENV), _moto_bucket() as root:
            rows += faults_rows("S3 (moto)", root, sessions)
    finally:
        if saved is None:
            os.environ.pop("CIRRUS_STORAGE_DEADLINE", None)
        else:
            os.environ["CIRRUS_STORAGE_DEADLINE"] = saved
    return rows


def _layers(root: str, tag: str) -> list[str]:
    from cirrus.storage.paths import normalise_cloudpath
    from tests.reliability import support

    paths = [normalise_cloudpath(f"{root}/{tag}-v{i}") for i in range(VOLUMES)]
    for path in paths:
        support.make_layer(path)
    return paths


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Only errors from `logger` inside the block."""
    target = logging.getLogger(logger)
    level = target.level
    target.setLevel(logging.ERROR)
    try:
        yield
    finally:
        target.setLevel(level)


def _sessions(paths: list[str], count: int, faults=None) -> tuple[list, list[float], list[int]]:
    """Run `count` sessions; commit latency (ms) and injected faults of each commit."""
    import cirrus
    from cirrus.errors import CirrusError
    from cirrus.storage import wrap_backends
    from tests.reliability import support

    committed, latencies, retries = [], [], []
    for index in range(count):
        s = cirrus.session(
            support.session_sources(index), f"motivation {index}", support.session_process(index)
        )
        for j, path in enumerate(paths):
            support.paint(s, path, index, value=j + 1)
        s.result(f"result {index}")
        before = faults.total_injected if faults else 0
        started = time.perf_counter()
        try:
            if faults:  # the retries are the point here: their one-line warnings are noise
                with wrap_backends(faults), _quiet("cirrus.storage"):
                    s.commit()
            else:
                s.commit()
        except CirrusError:
            continue
        latencies.append((time.perf_counter() - started) * 1000)
        retries.append((faults.total_injected if faults else 0) - before)
        committed.append(s)
    return committed, latencies, retries


def _doubled(paths: list[str]) -> tuple[int, int, int]:
    """(records, records doubled, summary entries doubled) over `paths`."""
    import cirrus
    from cirrus.ledger import Ledger

    records = doubled = entries = 0
    for path in paths:
        history = cirrus.history(path)
        records += len(history)
        doubled += sum(n - 1 for n in Counter(h.record.session for h in history).values())
        summary = Ledger.open(path).summary()
        for values in (
            summary["sources"],
            [e.get("cirrus_process") for e in summary["processing"]],
            summary["description"].split(" \n "),
        ):
            entries += len(values) - len(set(values))
    return records, doubled, entries


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def faults_rows(backend: str, root: str, count: int) -> list[dict]:
    from tests.reliability.support import Faults

    _sessions(_layers(root, "warm"), 1)  # clients, imports: not part of either side
    plain, plain_ms, _ = _sessions(_layers(root, "plain"), count)
    faults = Faults(error_rate=0.3, lost_response_rate=0.3, spike_rate=0.05, spike_seconds=0.05)
    paths = _layers(root, "faulty")
    committed, faulty_ms, retries = _sessions(paths, count, faults)
    records, doubled, entries = _doubled(paths)
    expected = len(committed) * VOLUMES
    case = f"{backend}, {count} sessions x {VOLUMES} volumes, 30% faults + 30% lost responses"

    def row(what: str, cirrus, baseline=None, unit="", goal="") -> dict:
        ratio = None
        if isinstance(cirrus, (int, float)) and isinstance(baseline, (int, float)) and baseline:
            ratio = round(cirrus / baseline, 2)
        return {
            "benchmark": BENCHMARK,
            "case": f"{case}: {what}",
            "cirrus": cirrus,
            "baseline": baseline,
            "ratio": ratio,
            "unit": unit,
            "goal": goal,
        }

    return [
        row("sessions committed", len(committed), count, "sessions", f"{count} of {count}"),
        row("records kept vs expected", records, expected, "records", "all kept"),
        row("records doubled", doubled, 0, "records", "0"),
        row("summary entries doubled", entries, 0, "entries", "0"),
        row("mean retries per commit", round(statistics.mean(retries), 1), None, "retries"),
        row(
            "p50 commit latency vs no faults",
            round(statistics.median(faulty_ms), 1),
            round(statistics.median(plain_ms), 1),
            "ms",
        ),
        row(
            "p99 commit latency vs no faults",
            round(_percentile(faulty_ms, 0.99), 1),
            round(_percentile(plain_ms, 0.99), 1),
            "ms",
        ),
    ]


@contextlib.contextmanager
def _moto_bucket() -> Iterator[str]:
    import boto3
    from cloudfiles.interfaces import reset_connection_pools

    from tests.servers.moto_server import moto_server

    with moto_server() as endpoint, environment({"AWS_ENDPOINT_URL_S3": endpoint}):
        reset_connection_pools()  # CloudVolume (chunks) and cirrus both use plain s3:// paths
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        boto3.session.Session().client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        yield f"s3://{bucket}"
    reset_connection_pools()


def _print(rows: list[dict]) -> None:
    print(f"{'case':<110} {'cirrus':>12} {'baseline':>10} {'ratio':>6} unit")
    for row in rows:
        ratio = "" if row.get("ratio") is None else f"{row['ratio']:.2f}"
        baseline = "" if row.get("baseline") is None else str(row["baseline"])
        print(
            f"{row['case']:<110} {row['cirrus']!s:>12} {baseline:>10} {ratio:>6} "
            f"{row.get('unit', '')}"
        )


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    _print(run(quick="--quick" in sys.argv))
