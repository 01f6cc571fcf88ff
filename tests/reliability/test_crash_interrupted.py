"""kill -9 while a 3-volume commit is staging: every volume ends with a record of the session.

The child (crash_child.py) paints a chunk on each of three file:// volumes in session 0, then
again in session 1, and SIGKILLs itself while session 1's records are being staged, after its
journal. Recovery gives the volumes whose record was never staged the journal's record, at once,
as if the commit had finished. Without the journal (deleted or damaged since), those volumes
hold session 1's data but no record of it: once the session is evidently dead, `cirrus.recover`
(or the next commit that rolls the orphans forward) gives each of them an interrupted record
built from the staged ones; while it may still be committing (its records are young), they are
left alone.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import cirrus
from cirrus import rollforward
from cirrus.journal import journal_key
from cirrus.ledger import Ledger
from cirrus.writeset import WriteTracker
from tests.cli_support import run
from tests.reliability import support
from tests.reliability.test_crashes import CRASH_POINTS, ROOT, fresh_layers, run_child

pytestmark = pytest.mark.slow
SESSION_0, SESSION_1 = f"{1:032x}", f"{2:032x}"  # crash_child's session ids
GAPS = ["after-one-record", "after-two-records"]  # some volumes have their record, not all
SHARED = ("session", "process", "sources", "notes", "started", "user", "host", "cirrus_version")


def staged_sessions(paths: list[str]) -> dict[str, set[str]]:
    """Per volume, the sessions with a record under provenance.d/records/, published or not."""
    out = {}
    for path in paths:
        ledger = Ledger.open(path)
        out[path] = {ledger.read_record(rid).record.session for rid in ledger.record_ids()}
    return out


def crash_while_staging(
    base, point: str, lose_journal: bool = True, **options
) -> tuple[list, list]:
    """Kill session 1's commit at `point`; returns (paths, volumes holding a session-1 record).

    The child lands the crash's kind of write one at a time, so a kill after the nth record
    leaves exactly n volumes with one. `lose_journal`: then delete the journal, as a lifecycle
    rule or a person might, so only the staged records are left to recover from.
    """
    crash, _ = CRASH_POINTS[point]
    paths = fresh_layers(base)
    done = run_child(paths, [0, 1], {"session": 1, **crash}, **options)
    assert done.returncode < 0 and "CRASH at" in done.stdout, done.stdout + done.stderr
    journal = Path(paths[0].removeprefix("file://")) / journal_key(SESSION_1)
    assert journal.exists()  # on the volume written first
    if lose_journal:
        journal.unlink()
    staged = staged_sessions(paths)
    holders = [path for path in paths if SESSION_1 in staged[path]]
    assert len(holders) == crash["nth"] < len(paths), (point, holders)
    return paths, holders


def session_records(path: str, session: str) -> list:
    return [stored for stored in cirrus.history(path) if stored.record.session == session]


def check_explained(paths: list[str], holders: list[str]) -> dict[str, str]:
    """Every volume has one record of each session; returns {volume: interrupted record id}."""
    for path in paths:
        history = cirrus.history(path)
        assert Counter(h.record.session for h in history) == {SESSION_0: 1, SESSION_1: 1}, path
        assert history.open_sessions == {}, path  # each record ended its session's listing
        assert sorted(Ledger.open(path).record_ids()) == sorted(h.id for h in history), path
    real = {path: session_records(path, SESSION_1)[0].record for path in holders}
    template = real[holders[0]]
    interrupted = {}
    for path in paths:
        (stored,) = session_records(path, SESSION_1)
        record = stored.record
        assert record.volume == path
        assert sorted(record.siblings) == sorted(set(paths) - {path})
        if path in holders:
            assert record.status == "committed" and record.writes["mips"], path
            continue
        interrupted[path] = stored.id
        assert record.status == "failed"
        assert record.error["type"] == "Interrupted"
        assert "unknown" in record.error["message"] and "re-run" in record.error["message"]
        assert record.writes == WriteTracker().to_json()
        assert record.siblings == tuple(sorted(set(paths) - {path}))
        assert record.ended == max(rec.ended for rec in real.values())
        assert record.tasks is None and record.step is None
        for field in SHARED:
            assert getattr(record, field) == getattr(template, field), field
    return interrupted


def check_data(paths: list[str]) -> None:
    """Both sessions' chunks are where they were written (recovery touched no data)."""
    from cloudvolume import CloudVolume

    for j, path in enumerate(paths):
        volume = CloudVolume(path, progress=False, fill_missing=True)
        for index in (0, 1):
            x, y, z = support.origin(index)
            assert int(volume[x, y, z][0, 0, 0, 0]) == (index * 7 + j) % 251 + 1


def recover_in_processes(origins: list[str]) -> None:
    """`cirrus.recover` in one process per origin, all started at once (default threshold)."""
    code = "import sys, cirrus; cirrus.recover(sys.argv[1])"
    children = [
        subprocess.Popen([sys.executable, "-c", code, origin], cwd=ROOT, stderr=subprocess.PIPE)
        for origin in origins
    ]
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err.decode()


@pytest.mark.parametrize("point", GAPS)
def test_recover_completes_the_volumes_never_staged_on_from_the_journal(tmp_path, point):
    """At once, and with the records the commit would have published: nothing is interrupted."""
    paths, holders = crash_while_staging(tmp_path, point, lose_journal=False, real_clock=True)
    done = cirrus.recover(holders[-1])
    assert sorted(done) == sorted(paths)
    for path in paths:
        assert Counter(h.record.session for h in cirrus.history(path))[SESSION_1] == 1
        (stored,) = session_records(path, SESSION_1)
        assert stored.record.status == "committed" and stored.record.writes["mips"], path
        assert cirrus.history(path).open_sessions == {}
    check_data(paths)
    run("verify", *paths)
    for path in paths:
        assert cirrus.recover(path) == {}


@pytest.mark.parametrize("point", GAPS)
def test_without_its_journal_recover_gives_volumes_never_staged_on_an_interrupted_record(
    tmp_path, point, monkeypatch
):
    monkeypatch.setattr(rollforward, "INTERRUPTED_AFTER", 0.0)  # session 1 is evidently dead
    paths, holders = crash_while_staging(tmp_path, point)
    shutil.copytree(tmp_path / "layers", tmp_path / "crashed")

    done = cirrus.recover(holders[-1])
    interrupted = check_explained(paths, holders)
    published = {path: session_records(path, SESSION_1)[0].id for path in holders}
    assert done == {**{path: [rid] for path, rid in published.items()},
                    **{path: [rid] for path, rid in interrupted.items()}}  # fmt: skip
    after = support.snapshot(paths)

    # nothing doubled: recovering again, from any volume, changes nothing
    for path in paths:
        assert cirrus.recover(path) == {}
    assert support.snapshot(paths) == after
    check_data(paths)
    run("verify", *paths)
    assert interrupted
    for path, rid in interrupted.items():
        assert "failed: Interrupted" in run("log", path).stdout
        assert "unknown: the session died" in run("show", path, rid).stdout

    # deterministic: from the crashed state, recovering from another origin, or two processes
    # racing, stores exactly the same objects (content-addressed creates dedupe them)
    for origins in ([holders[0]], [holders[0], holders[-1]], [paths[0], paths[1], paths[2]]):
        shutil.rmtree(tmp_path / "layers")
        shutil.copytree(tmp_path / "crashed", tmp_path / "layers")
        recover_in_processes(origins)
        assert support.snapshot(paths) == after, origins


def test_a_young_orphan_gets_no_interrupted_sibling(tmp_path, monkeypatch):
    """Records that ended moments ago may belong to a commit still staging: left alone."""
    assert rollforward.INTERRUPTED_AFTER >= 60
    paths, holders = crash_while_staging(tmp_path, "after-one-record", real_clock=True)
    done = cirrus.recover(holders[0])
    assert sorted(done) == sorted(holders)  # what was staged is published, nothing more
    for path in paths:
        assert len(session_records(path, SESSION_1)) == (path in holders)
    assert "interrupted" not in run("recover", holders[0]).stdout
    run("verify", *paths)

    # the same session, once it counts as dead, is explained everywhere by the next recover
    monkeypatch.setattr(rollforward, "INTERRUPTED_AFTER", 0.0)
    done = cirrus.recover(holders[0])
    assert sorted(done) == sorted(set(paths) - set(holders))
    for path in paths:
        (stored,) = session_records(path, SESSION_1)
        assert (stored.record.status == "committed") == (path in holders)
    out = run("recover", holders[0]).stdout
    assert "nothing to recover" in out


def test_the_next_commit_explains_the_siblings_of_the_orphans_it_rolls_forward(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(rollforward, "INTERRUPTED_AFTER", 0.0)
    paths, holders = crash_while_staging(tmp_path, "after-one-record")
    with cirrus.session(["later"], "next commit", support.session_process(2)) as s:
        support.paint(s, holders[0], 5, value=99)
    assert cirrus.history(holders[0])[-1].record.session == s.id
    for path in paths:
        sessions = Counter(h.record.session for h in cirrus.history(path))
        assert sessions[SESSION_0] == sessions[SESSION_1] == 1, path
        (stored,) = session_records(path, SESSION_1)
        assert (stored.record.status == "committed") == (path in holders)
        assert (stored.record.error or {}).get("type") == (
            None if path in holders else "Interrupted"
        )
    run("verify", *paths)
    for path in paths:
        assert cirrus.recover(path) == {}


def test_a_sibling_volume_deleted_since_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(rollforward, "INTERRUPTED_AFTER", 0.0)
    paths, holders = crash_while_staging(tmp_path, "after-one-record")
    gone = next(path for path in paths if path not in holders)
    shutil.rmtree(gone.removeprefix("file://"))
    done = cirrus.recover(holders[0])
    assert gone not in done and not (tmp_path / "layers" / gone.rsplit("/", 1)[-1]).exists()
    for path in set(paths) - set(holders) - {gone}:
        assert [r.record.error["type"] for r in session_records(path, SESSION_1)] == ["Interrupted"]


def test_the_next_commit_completes_the_siblings_from_the_journal(tmp_path):
    paths, holders = crash_while_staging(
        tmp_path, "after-one-record", lose_journal=False, real_clock=True
    )
    with cirrus.session(["later"], "next commit", support.session_process(2)) as s:
        support.paint(s, holders[0], 5, value=99)
    for path in paths:
        (stored,) = session_records(path, SESSION_1)
        assert stored.record.status == "committed", path
    run("verify", *paths)


def test_a_damaged_journal_is_reported_and_recovery_falls_back(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(rollforward, "INTERRUPTED_AFTER", 0.0)
    paths, holders = crash_while_staging(tmp_path, "after-one-record", lose_journal=False)
    journal = Path(paths[0].removeprefix("file://")) / journal_key(SESSION_1)
    journal.write_bytes(journal.read_bytes()[:100])  # truncated
    cirrus.recover(holders[0])
    assert "cannot be completed from its journal" in caplog.text and "is damaged" in caplog.text
    check_explained(paths, holders)
