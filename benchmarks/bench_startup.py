"""Startup costs: `import cirrus` vs `import cloudvolume`, and a code-environment capture vs
`pip freeze`. Each measurement runs in a fresh interpreter (nothing cached in-process); the median
of REPEATS runs is reported, the two sides' runs alternated.

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


def row(case: str, cirrus: Callable[[], float], baseline: Callable[[], float]) -> dict:
    """Medians of REPEATS runs of each side, the two alternated so that drift hits both."""
    runs: tuple[list[float], list[float]] = ([], [])
    for index in range(REPEATS):
        sides = ((0, cirrus), (1, baseline)) if index % 2 == 0 else ((1, baseline), (0, cirrus))
        for side, measure in sides:
            runs[side].append(measure())
    cirrus_ms, baseline_ms = (round(statistics.median(times), 1) for times in runs)
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
        # what cirrus adds: a session's first handle imports cloudvolume anyway
        row(
            "import cirrus, cloudvolume vs import cloudvolume",
            lambda: timed_in_child("import cirrus, cloudvolume"),
            lambda: timed_in_child("import cloudvolume"),
        ),
        # what a pipeline pays: cirrus captures in its own process; pip freeze is a subprocess
        row(
            "PythonGithubEnv('.') capture, in process, vs pip freeze subprocess",
            lambda: timed_in_child(capture),
            lambda: wall_of_child(sys.executable, "-m", "pip", "freeze"),
        ),
        # both as whole processes (interpreter start and exit on both sides)
        row(
            "PythonGithubEnv('.') capture vs pip freeze, each a whole python process",
            lambda: wall_of_child(sys.executable, "-c", capture),
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
