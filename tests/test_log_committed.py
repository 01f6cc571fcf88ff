"""`cirrus log` and `cirrus.history` on a volume whose writer was killed: past its commit point
(its record staged here, or its journal written) it is committed and `cirrus recover` publishes
it; only before it were its writes never committed. And `cirrus log` caps a record's notes.

The kills are real: a child process SIGKILLs itself at the chosen write to storage.
"""

from __future__ import annotations

import subprocess
import sys

import cirrus
import tests.step_support as ss
from cirrus.ledger import Ledger
from cirrus.storage.paths import normalise_cloudpath
from cirrus.summary import NOTES_SHOWN
from tests.cli_support import invoke
from tests.session_support import REPO, chunk_of, make_layer

KILL_SCRIPT = """
import os, signal, sys
import numpy as np
import cirrus
from tests.session_support import hooked

where, token, *paths = sys.argv[1:]
staged = set()

def kill_at(cloudpath, key):
    # "publish": at a volume's first summary write once its record is staged; "stage": at the
    # first record staged (after a journal, if any); "journal": as the journal is written
    if key.startswith("provenance.d/records/"):
        staged.add(cloudpath)
    if (
        (where == "publish" and key == "provenance" and cloudpath in staged)
        or (where == "stage" and key.startswith("provenance.d/records/"))
        or (where == "journal" and key.startswith("provenance.d/journals/"))
    ):
        os.kill(os.getpid(), signal.SIGKILL)

with hooked(before=kill_at):
    if token != "-":
        cirrus.finish(token)
    with cirrus.session(["gs://lab/aff"], "killed", cirrus.Process("kill", {})) as s:
        for i, path in enumerate(paths):
            s.volume(path)[0:64, 0:64, 0:64] = np.full((64, 64, 64), i + 1, np.uint8)
print("NOT KILLED", flush=True)
"""


def killed(where: str, paths: list[str], token: str = "-") -> None:
    """Run a session on `paths` (or finish the step of `token`), SIGKILLed at `where`."""
    done = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, where, token, *paths],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -9, done.stdout + done.stderr


def layers(tmp_path, n: int) -> list[str]:
    paths = [normalise_cloudpath(f"file://{tmp_path}/v{i}") for i in range(n)]
    for path in paths:
        make_layer(path)
    return paths


def assert_committed(path: str, listed: str, how: str) -> None:
    """`cirrus.history` and `cirrus log` say `listed` committed (`how` says why), not published."""
    found = cirrus.history(path)
    assert list(found) == [] and list(found.commits) == [listed]
    assert found.commits[listed].committed is True and how in found.commits[listed].how
    text = invoke("log", path).output
    assert "COMMITTED (" in text and how in text and "`cirrus recover PATH`" in text, text
    assert "never committed" not in text, text
    cirrus.recover(path)
    assert [stored.record.status for stored in cirrus.history(path)] == ["committed"]


def test_a_single_volume_session_killed_before_publishing_is_committed(tmp_path) -> None:
    (path,) = layers(tmp_path, 1)
    killed("publish", [path])
    (rid,) = Ledger.open(path).record_ids()
    session = Ledger.open(path).read_record(rid).record.session
    assert_committed(path, session, f"its record {rid[:12]} is staged here")


def test_a_session_killed_after_its_journal_is_committed_on_every_volume(tmp_path) -> None:
    paths = layers(tmp_path, 2)
    killed("stage", paths)  # the journal is on the first volume; nothing is staged
    (session,) = cirrus.history(paths[1]).open_sessions
    for path in paths:
        assert Ledger.open(path).record_ids() == []
    assert_committed(paths[1], session, f"its journal on {paths[0]} says so")


def test_a_session_killed_at_its_first_publish_is_committed_on_every_volume(tmp_path) -> None:
    paths = layers(tmp_path, 2)
    killed("publish", paths)
    for path in paths:
        (session,) = cirrus.history(path).open_sessions
        assert cirrus.history(path).commits[session].committed is True
    assert_committed(paths[1], session, "is staged here")


def test_a_step_finish_killed_at_its_first_publish_is_committed(tmp_path) -> None:
    paths = [normalise_cloudpath(path) for path in ss.seg_and_bnd(tmp_path)]
    process = cirrus.Process("paint chunks", {"value": 1})
    step = cirrus.step(["gs://lab/aff"], "killed finish", process, paths, tasks=["t1"])
    for path in paths:
        ss.paint_fn(step.token, "t1", path, [0, 0, 0])
    killed("publish", [], step.token)
    assert list(cirrus.history(paths[1]).open_steps) == [step.id]
    assert_committed(paths[1], step.id, "is staged here")


def test_only_a_session_killed_before_its_commit_point_was_never_committed(tmp_path) -> None:
    paths = layers(tmp_path, 2)
    killed("journal", paths)  # listed on both volumes, killed writing its journal
    found = cirrus.history(paths[0])
    assert Ledger.open(paths[0]).store.list("provenance.d/journals/") == []
    assert list(found.open_sessions) and found.commits == {}
    text = invoke("log", paths[0]).output
    assert "never committed" in text and "COMMITTED" not in text, text


def test_log_caps_a_records_notes_and_show_prints_them_all(tmp_path) -> None:
    (path,) = layers(tmp_path, 1)
    with cirrus.session(["src"], "many notes", cirrus.Process("notes", {})) as s:
        s.volume(path)[0:64, 0:64, 0:64] = chunk_of(1)
        for i in range(25):
            s.result(f"task {i} done")
    (rid,) = s.records.values()
    more = f"{25 - NOTES_SHOWN + 1} more notes in cirrus record {rid[:12]} (`cirrus show {path} "
    text = invoke("log", path).output
    shown = [line for line in text.splitlines() if "task " in line and " done" in line]
    assert len(shown) == NOTES_SHOWN - 1 and more in text, text
    full = invoke("show", path, rid[:12]).output
    assert all(f"task {i} done" in full for i in range(25)) and "more notes" not in full
