"""Startup costs: `import cirrus` vs `import cloudvolume`, and a code-environment capture vs
`pip freeze`. Each measurement runs in a fresh interpreter (nothing cached in-process); the median
of REPEATS runs is reported.

Run: `python -m benchmarks.bench_startup` from the repository root.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPEATS = 5
ROOT = Path(__file__).resolve().parent.parent

_TIMED = "import time; t = time.perf_counter(); {stmt}; print((time.perf_counter() - t) * 1000)"


def timed_in_child(statement: str) -> float:
    """Milliseconds `statement` takes inside a fresh interpreter (its startup not counted)."""
    done = subprocess.run(
        [sys.executable, "-c", _TIMED.format(stmt=statement)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def wall_of_child(*args: str) -> float:
    """Milliseconds a whole subprocess takes, as a caller waiting for it sees them."""
    start = time.perf_counter()
    subprocess.run(args, cwd=ROOT, capture_output=True, check=True)
    return (time.perf_counter() - start) * 1000


def median_ms(measure: Callable[[], float]) -> float:
    return round(statistics.median(measure() for _ in range(REPEATS)), 1)


def row(case: str, cirrus: Callable[[], float], baseline: Callable[[], float]) -> dict:
    cirrus_ms, baseline_ms = median_ms(cirrus), median_ms(baseline)
    return {
        "benchmark": "startup",
        "case": case,
        "cirrus_ms": cirrus_ms,
        "baseline_ms": baseline_ms,
        "ratio": round(cirrus_ms / baseline_ms, 3),
    }


def run() -> list[dict]:
    """One row per comparison: cirrus's cost, the baseline's, and their ratio (lower is better)."""
    capture = "from cirrus.codeenv import PythonGithubEnv; PythonGithubEnv('.')"
    return [
        row(
            "import cirrus vs import cloudvolume",
            lambda: timed_in_child("import cirrus"),
            lambda: timed_in_child("import cloudvolume"),
        ),
        row(
            "PythonGithubEnv('.') capture vs pip freeze subprocess",
            lambda: timed_in_child(capture),
            lambda: wall_of_child(sys.executable, "-m", "pip", "freeze"),
        ),
    ]


def main() -> None:
    rows = run()
    width = max(len(r["case"]) for r in rows)
    print(f"{'case':<{width}}  {'cirrus ms':>10}  {'baseline ms':>11}  {'ratio':>6}")
    for r in rows:
        print(
            f"{r['case']:<{width}}  {r['cirrus_ms']:>10}  {r['baseline_ms']:>11}  {r['ratio']:>6}"
        )


if __name__ == "__main__":
    main()
