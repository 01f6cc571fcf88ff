"""Smoke tests of the benchmark runner: it runs, it reports, it writes JSON. No timing asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def bench(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.run", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_quick_session_benchmark_writes_rows_with_numeric_ratios(tmp_path):
    out = tmp_path / "results.json"
    done = bench("--quick", "--only", "session", "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(out.read_text())

    assert document["quick"] is True
    assert document["machine"]["cores"] and document["machine"]["python"]
    rows = document["rows"]
    assert rows and {row["benchmark"] for row in rows} == {"session"}
    for row in rows:
        assert set(row) >= {"benchmark", "case", "cirrus", "baseline", "ratio", "unit", "goal"}
        assert not str(row["cirrus"]).startswith("error"), row
    numeric = [row for row in rows if isinstance(row["ratio"], (int, float))]
    cases = " | ".join(row["case"] for row in numeric)
    for expected in ("write overhead", "mem://", "file://", "requests per step", "commit latency"):
        assert expected in cases, expected
    assert all(row["ratio"] > 0 for row in numeric)
    # The table is printed with the machine on top.
    assert done.stdout.startswith("machine:")
    assert "benchmark" in done.stdout and "ratio" in done.stdout


def test_unknown_module_is_an_error_row_not_a_crash(tmp_path):
    out = tmp_path / "results.json"
    done = bench("--only", "no_such_benchmark", "--json", str(out), timeout=120)
    assert done.returncode == 1
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 1 and rows[0]["cirrus"].startswith("error: no module")


def test_rows_from_other_modules_are_normalised():
    from benchmarks.run import normalise, table

    row = normalise("startup", {"case": "import", "cirrus_ms": 120.0, "baseline_ms": 600.0})
    assert (row["cirrus"], row["baseline"], row["unit"], row["ratio"]) == (120.0, 600.0, "ms", 0.2)
    text = table([row, normalise("steps", {"case": "x", "cirrus": "not measured: no server"})])
    assert "120 ms" in text and "not measured: no server" in text


def test_the_step_finish_benchmark_runs_on_real_layers(tmp_path):
    from benchmarks.bench_steps import finish_time

    assert finish_time(f"file://{tmp_path}/finish", 10) > 0


@pytest.mark.parametrize(
    ("goal", "cirrus", "baseline", "met"),
    [
        ("<= 1.02", 1.01, 1.0, True),
        ("<= 1.02", 1.03, 1.0, False),
        ("<= 3.0", 81.4, 1.0, False),
        ("ratio = 1.00 (depends on volumes only)", 18, 18, True),
        ("ratio = 1.00 (depends on volumes only)", 19, 18, False),
        ("ratio ~ 1.00 (write sets differ only in counts)", 20967, 20952, True),
        ("none lost", 0, 61, True),
        ("none lost", 1, 61, False),
        ("info: share of the step", 2.6, 1102.0, None),
        ("<= 3.0", "not measured: no server", None, None),
    ],
)
def test_goals_are_checked_by_the_runner_not_by_hand(goal, cirrus, baseline, met):
    from benchmarks.run import normalise, table

    row = normalise("session", {"case": "c", "cirrus": cirrus, "baseline": baseline, "goal": goal})
    assert row["met"] is met
    verdict = table([row]).splitlines()[-1].split()[-1]
    assert verdict == {True: "yes", False: "NO", None: verdict}[met]
