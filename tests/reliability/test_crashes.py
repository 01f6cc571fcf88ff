"""kill -9 at every step of a 3-volume commit, then `cirrus.recover` on one volume.

The child process (tests/reliability/crash_child.py) runs two sessions over three file://
volumes with a deterministic clock and session ids, and SIGKILLs itself at a chosen storage
write of the second session's commit. Because records are content-addressed and the runs are
deterministic, the state after crash + recovery is compared object for object (every byte of
`provenance` and `provenance.d/**` on every volume) with a run that did not crash.

The commit point is the session's journal (`cirrus.journal`), written before any record. A
crash anywhere after it needs nothing but `cirrus.recover`, from any volume: every volume ends
with the record the commit would have published. A crash before it leaves nothing staged, the
session listed as writing on each volume, and re-running the session (as a task queue re-runs a
killed task) completes it to exactly the uncrashed state. A journal lost as well: see
test_crash_interrupted.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter

import pytest

import cirrus
from cirrus import rollforward
from cirrus.ledger import Ledger
from cirrus.storage.paths import normalise_cloudpath
from tests.reliability import support

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# name: (crash spec, does the crash happen before the commit point?). Environments are staged
# with the session's first write to each volume, in the body, not by the commit.
CRASH_POINTS = {
    "before-journal": ({"kind": "journals", "nth": 1, "when": "before"}, True),
    "after-journal": ({"kind": "journals", "nth": 1, "when": "after"}, False),
    "after-one-record": ({"kind": "records", "nth": 1, "when": "after"}, False),
    "after-two-records": ({"kind": "records", "nth": 2, "when": "after"}, False),
    "after-all-records": ({"kind": "records", "nth": 3, "when": "after"}, False),
    "before-first-publish": ({"kind": "summary", "nth": 1, "when": "before"}, False),
    "between-publish-1-and-2": ({"kind": "summary", "nth": 1, "when": "after"}, False),
    "between-publish-2-and-3": ({"kind": "summary", "nth": 2, "when": "after"}, False),
    "after-last-publish": ({"kind": "summary", "nth": 3, "when": "after"}, False),
}


def run_child(paths: list[str], sessions: list[int], crash: dict | None = None, **options):
    """Run crash_child.py; `options` go into its spec (e.g. real_clock=True)."""
    spec = {"paths": paths, "sessions": sessions, "crash": crash, **options}
    return subprocess.run(
        [sys.executable, "-m", "tests.reliability.crash_child", json.dumps(spec)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def fresh_layers(base) -> list[str]:
    """The same three paths every time (records name their volume), emptied and re-created."""
    folder = base / "layers"
    shutil.rmtree(folder, ignore_errors=True)
    paths = [normalise_cloudpath(f"file://{folder}/v{i}") for i in range(3)]
    for path in paths:
        support.make_layer(path)
    return paths


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The layers' provenance after both sessions ran without a crash."""
    base = tmp_path_factory.mktemp("crash")
    paths = fresh_layers(base)
    done = run_child(paths, [0, 1])
    assert done.returncode == 0, done.stdout + done.stderr
    return base, paths, support.snapshot(paths), support.normalised_history(paths)


@pytest.mark.parametrize("point", list(CRASH_POINTS))
def test_kill_9_during_commit_then_recover_equals_no_crash(baseline, point, monkeypatch):
    # as if recovered at once: no session counts as dead, so no interrupted records are made
    monkeypatch.setattr(rollforward, "INTERRUPTED_AFTER", float("inf"))
    base, expected_paths, expected, expected_history = baseline
    crash, before_commit_point = CRASH_POINTS[point]
    paths = fresh_layers(base)
    assert paths == expected_paths
    done = run_child(paths, [0, 1], {"session": 1, **crash})
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    assert "COMMITTED 0" in done.stdout and "COMMITTED 1" not in done.stdout
    assert "CRASH at" in done.stdout

    # recover from one volume (a different one for each crash point) completes the commit
    origin = paths[list(CRASH_POINTS).index(point) % 3]
    cirrus.recover(origin)
    assert cirrus.recover(origin) == {}
    staged_everywhere = all(len(Ledger.open(p).record_ids()) == 2 for p in paths)
    assert staged_everywhere != before_commit_point
    for path in paths:
        history = cirrus.history(path)
        assert Counter(h.record.session for h in history).most_common(1)[0][1] == 1
        assert sorted(Ledger.open(path).record_ids()) == sorted(h.id for h in history)
    if before_commit_point:
        # nothing of session 1 is stored but its listings; re-running it completes it
        assert all(list(cirrus.history(p).open_sessions) == [f"{2:032x}"] for p in paths)
        rerun = run_child(paths, [1])
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert support.snapshot(paths) == expected
    assert support.normalised_history(paths) == expected_history

    # nothing doubled by running the same session again, or by recovering again
    again = run_child(paths, [1])
    assert again.returncode == 0, again.stdout + again.stderr
    assert cirrus.recover(paths[2]) == {}
    assert support.snapshot(paths) == expected
