"""What a conditional write costs next to a plain CloudFiles put of the same bytes.

Per backend (file://, S3 on moto, S3 on Ceph RGW when it starts), the median latency of:
create (`Store.create`, a new key each time) vs `CloudFiles.put` of a new key; swap
(`Store.swap` with a known token) vs a put over one key; and get+swap (what publishing a summary
does) vs `CloudFiles.get` + `put`. Each iteration times the three pairs interleaved, so drift of
the machine hits both sides alike.

    python -m benchmarks.bench_storage [--quick]     (from the repository root)
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator

from tests.layers import S3_TEST_ENV, environment

BENCHMARK = "storage"
PAYLOAD = b'{"note": "' + b"x" * 1000 + b'"}'  # about the size of a provenance record


def run(quick: bool = False) -> list[dict]:
    """Rows {benchmark, case, backend, operation, cirrus_ms, baseline_ms, ratio}."""
    iterations = 20 if quick else 100
    rows = []
    with tempfile.TemporaryDirectory(prefix="cirrus-bench-storage-") as root:
        rows += measure("file://", f"file://{root}/layer", iterations)
    with environment(S3_TEST_ENV), _moto_layer() as layer:
        rows += measure("S3 (moto)", layer, iterations // 2)
    if not quick:
        rows += _rgw_rows(iterations // 2)
    return rows


def measure(backend: str, layer: str, iterations: int) -> list[dict]:
    """Time cirrus's conditional writes and CloudFiles' plain ones on one layer."""
    from cloudfiles import CloudFiles

    from cirrus.storage import open_store

    store, files = open_store(layer), CloudFiles(layer)
    token = store.swap("provenance", PAYLOAD, None)
    files.put("plain", PAYLOAD, compress=None)
    times: dict[str, list[float]] = {}

    def timed(name: str, fn: Callable[[], object]) -> object:
        started = time.perf_counter()
        result = fn()
        times.setdefault(name, []).append((time.perf_counter() - started) * 1000)
        return result

    def get_and_swap() -> str:
        blob = store.get("provenance")
        return store.swap("provenance", PAYLOAD, blob.token)

    for i in range(iterations):
        timed("create", lambda i=i: store.create(f"provenance.d/records/{i}.json", PAYLOAD))
        timed("create:base", lambda i=i: files.put(f"records/{i}.json", PAYLOAD, compress=None))
        token = timed("swap", lambda token=token: store.swap("provenance", PAYLOAD, token))
        timed("swap:base", lambda: files.put("plain", PAYLOAD, compress=None))
        token = timed("get+swap", get_and_swap)
        timed(
            "get+swap:base",
            lambda: (files.get("plain"), files.put("plain", PAYLOAD, compress=None)),
        )
    rows = []
    for operation in ("create", "swap", "get+swap"):
        cirrus = statistics.median(times[operation])
        baseline = statistics.median(times[f"{operation}:base"])
        rows.append(
            {
                "benchmark": BENCHMARK,
                "case": f"{operation} on {backend}, median of {iterations}",
                "backend": backend,
                "operation": operation,
                "cirrus_ms": round(cirrus, 3),
                "baseline_ms": round(baseline, 3),
                "ratio": round(cirrus / baseline, 2),
            }
        )
    return rows


@contextlib.contextmanager
def _moto_layer() -> Iterator[str]:
    import boto3

    from tests.servers.moto_server import moto_server

    with moto_server() as endpoint:
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        boto3.session.Session().client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        yield f"s3://{endpoint}/{bucket}/layer"


def _rgw_rows(iterations: int) -> list[dict]:
    """RGW rows, or one row saying why RGW was not measured."""
    from tests.servers.rgw import rgw_server

    try:
        with contextlib.ExitStack() as stack:
            rgw = stack.enter_context(rgw_server())
            stack.enter_context(environment(S3_TEST_ENV))
            bucket = rgw.make_bucket(f"bench-{uuid.uuid4().hex[:12]}")
            return measure("S3 (Ceph RGW)", f"s3://{rgw.endpoint_url}/{bucket}/layer", iterations)
    except Exception as error:  # no RGW here is a result to report, not a crash
        reason = f"not measured: Ceph RGW did not start ({type(error).__name__}: {error})"
        return [{"benchmark": BENCHMARK, "case": "S3 (Ceph RGW)", "cirrus": reason[:300]}]


def _print(rows: list[dict]) -> None:
    print(f"{'backend':<15} {'operation':<9} {'cirrus ms':>10} {'CloudFiles ms':>14} {'ratio':>6}")
    for row in rows:
        if "cirrus_ms" not in row:
            print(f"{row['case']:<15} {row['cirrus']}")
            continue
        print(
            f"{row['backend']:<15} {row['operation']:<9} {row['cirrus_ms']:>10.2f} "
            f"{row['baseline_ms']:>14.2f} {row['ratio']:>6.2f}"
        )


if __name__ == "__main__":
    _print(run(quick="--quick" in sys.argv[1:]))
