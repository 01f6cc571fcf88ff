"""A session killed between stage and publish, and a malformed `provenance`: nothing lost.

The crash is real: a child process runs a session whose storage backend calls os._exit on the
first write of a volume's summary, so records are staged and no summary (or only some) point
to them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import cirrus
from cirrus.errors import CorruptProvenance, InvalidInput
from cirrus.ledger import Ledger, env_blobs
from cirrus.liveness import committing, publishes_itself
from cirrus.repair import repair_summary
from cirrus.storage.paths import normalise_cloudpath
from tests.session_support import (
    REPO,
    chunk_of,
    hooked,
    make_layer,
    plain,
    process,
    provenance_keys,
    put_raw,
    raw_summary,
    summary_json,
)

CRASH_SCRIPT = """
import os, sys, threading, time
import numpy as np
import cirrus
from tests.session_support import hooked

*paths, mode = sys.argv[1:]
published = threading.Semaphore(0)
staged = set()  # layers whose record is staged: their next summary write publishes it

def crash_on_publish(cloudpath, key):
    # mode "all": die at the first publish; "last": let the others publish first; "pause":
    # stop at the first publish, alive
    if key.startswith("provenance.d/records/"):
        staged.add(cloudpath)
    if key != "provenance" or cloudpath not in staged:
        return  # the session listing itself as writing, before its first chunk
    if mode in ("all", "pause") or cloudpath == paths[-1]:
        if mode == "last":
            for _ in paths[:-1]:
                assert published.acquire(timeout=30)
        if mode == "pause":  # stay alive, committing as far as anyone can tell
            print("PAUSED", cloudpath, flush=True)
            time.sleep(600)
        print("CRASH", cloudpath, flush=True)
        os._exit(17)

def published_one(cloudpath, key):
    if key == "provenance" and cloudpath in staged:
        published.release()

with hooked(before=crash_on_publish, after=published_one):
    with cirrus.session(["gs://lab/aff"], "crash test", cirrus.Process("crash", {"n": 1})) as s:
        for i, path in enumerate(paths):
            s.volume(path)[0:64, 0:64, 0:64] = np.full((64, 64, 64), i + 1, np.uint8)
        s.result("never published")
print("NOT REACHED", flush=True)
"""


TEXT = {"capture_output": True, "text": True, "timeout": 60, "check": True}


def crashed_session(tmp_path, mode: str, n: int = 3) -> list[str]:
    paths = [normalise_cloudpath(f"file://{tmp_path}/v{i}") for i in range(n)]
    for path in paths:
        make_layer(path)
    done = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, *paths, mode],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 17, done.stdout + done.stderr
    assert "CRASH" in done.stdout and "NOT REACHED" not in done.stdout
    for i, path in enumerate(paths):
        assert (plain(path)[0:64, 0:64, 0:64] == i + 1).all()  # the data is there
        assert len(Ledger.open(path).record_ids()) == 1  # staged
    return paths


def only_session(paths: list[str]) -> str:
    """The session of the one record staged on `paths` (all the same)."""
    (session,) = {
        Ledger.open(path).read_record(rid).record.session
        for path in paths
        for rid in Ledger.open(path).record_ids()
    }
    return session


def published(path: str) -> list[str]:
    return [stored.id for stored in cirrus.history(path)]


def check_completed(paths: list[str]) -> None:
    """Every volume's summary points to its one record, all of the same session."""
    sessions = set()
    for path in paths:
        (stored,) = cirrus.history(path)
        assert stored.id == Ledger.open(path).record_ids()[0]
        assert stored.record.status == "committed"
        assert sorted(stored.record.siblings) == sorted(p for p in paths if p != path)
        assert [n["text"] for n in stored.record.notes] == ["crash test", "never published"]
        sessions.add(stored.record.session)
        summary = summary_json(path)
        assert summary["sources"] == ["gs://lab/aff"]
        assert [entry["task"] for entry in summary["processing"]] == ["crash"]
    assert len(sessions) == 1


def test_recover_rolls_a_crashed_session_forward_on_every_volume(tmp_path):
    paths = crashed_session(tmp_path, "all")
    for path in paths:
        assert published(path) == []
        assert list(cirrus.history(path).open_sessions) == [only_session(paths)]
    done = cirrus.recover(paths[1])
    assert {layer: len(ids) for layer, ids in done.items()} == {path: 1 for path in paths}
    check_completed(paths)
    for path in paths:  # the records replaced the open listing
        assert cirrus.history(path).open_sessions == {}
    before = {path: raw_summary(path) for path in paths}
    # nothing doubled: a second recover, from any volume, changes nothing
    assert cirrus.recover(paths[1]) == {}
    assert cirrus.recover(paths[0]) == {}
    assert {path: raw_summary(path) for path in paths} == before


def test_the_next_commit_rolls_the_orphan_forward(tmp_path):
    paths = crashed_session(tmp_path, "all")
    with cirrus.session(["later"], "next commit", process()) as s:
        s.volume(paths[0])[64:128, 0:64, 0:64] = chunk_of(9)
    history = cirrus.history(paths[0])
    assert len(history) == 2
    assert history[1].id == s.records[paths[0]]
    assert history[0].record.notes[0]["text"] == "crash test"
    assert summary_json(paths[0])["sources"] == ["gs://lab/aff", "later"]


def test_a_commit_leaves_a_live_process_its_record_and_rolls_a_dead_ones_forward(tmp_path):
    """Processes of one host committing at once must not each read all the others' records:
    a record staged by a process that still runs here is left to it. Once it is gone, the
    next commit rolls the record forward."""
    path = normalise_cloudpath(f"file://{tmp_path}/v0")
    make_layer(path)
    child = subprocess.Popen(
        [sys.executable, "-c", CRASH_SCRIPT, path, "pause"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert child.stdout.readline().startswith("PAUSED"), child.communicate(timeout=60)
        (staged,) = Ledger.open(path).record_ids()
        its_session = only_session([path])
        with cirrus.session(["later"], "while it runs", process()) as s:
            s.volume(path)[64:128, 0:64, 0:64] = chunk_of(9)
        assert published(path) == [s.records[path]]
        assert list(cirrus.history(path).open_sessions) == [its_session]
    finally:
        child.kill()
        child.wait(timeout=60)
    with cirrus.session(["later"], "after it died", process()) as after:
        after.volume(path)[0:64, 64:128, 0:64] = chunk_of(10)
    assert sorted(published(path)) == sorted([s.records[path], staged, after.records[path]])
    assert cirrus.history(path).open_sessions == {}


def test_only_a_session_committing_here_or_in_a_live_process_of_this_host_publishes_itself():
    here = {"host": socket.gethostname(), "pid": os.getpid()}
    assert not publishes_itself("s1", here)  # a session of this process that is not committing
    with committing(["s1"]):
        assert publishes_itself("s1", here)
        assert not publishes_itself("s2", here)
    assert not publishes_itself("s1", here)
    assert not publishes_itself("s1", {**here, "host": f"not-{here['host']}"})  # unknowable
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], **TEXT)
    assert not publishes_itself("s1", {**here, "pid": int(ended.stdout)})  # gone
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as alive:
        try:
            assert publishes_itself("s1", {**here, "pid": alive.pid})
        finally:
            alive.kill()
    for pid in (None, "12", True, 0, -1):
        assert not publishes_itself("s1", {**here, "pid": pid})


def test_recover_completes_siblings_after_a_commit_rolled_one_volume_forward(tmp_path):
    paths = crashed_session(tmp_path, "all")
    with cirrus.session(["later"], "next commit", process()) as s:
        s.volume(paths[0])[64:128, 0:64, 0:64] = chunk_of(9)
    cirrus.recover(paths[0])
    for path in paths[1:]:
        assert len(published(path)) == 1, path


def test_recover_from_a_published_volume_completes_a_partly_published_session(tmp_path):
    paths = crashed_session(tmp_path, "last")
    assert [len(published(path)) for path in paths] == [1, 1, 0]
    cirrus.recover(paths[0])
    check_completed(paths)


def test_recover_from_the_unpublished_volume_completes_a_partly_published_session(tmp_path):
    paths = crashed_session(tmp_path, "last")
    assert [len(published(path)) for path in paths] == [1, 1, 0]
    before = {path: raw_summary(path) for path in paths[:-1]}
    assert cirrus.recover(paths[-1]) == {paths[-1]: Ledger.open(paths[-1]).record_ids()}
    check_completed(paths)
    assert {path: raw_summary(path) for path in paths[:-1]} == before  # nothing doubled
    assert cirrus.recover(paths[-1]) == {}


def test_abandoning_a_session_that_died_while_committing_completes_it_instead(tmp_path):
    paths = crashed_session(tmp_path, "all")
    session = only_session(paths)
    assert all(list(cirrus.history(p).open_sessions) == [session] for p in paths)
    with pytest.raises(InvalidInput, match="just published 1 staged record"):
        cirrus.abandon(paths[0], session[:8])
    check_completed(paths)  # its own records, everywhere: no interrupted one
    assert all(cirrus.history(p).open_sessions == {} for p in paths)


def test_a_session_abandoned_while_alive_keeps_its_real_record_beside_the_interrupted_one(
    tmp_path,
):
    """A forced abandon of a live session, whose commit then dies between staging and
    publishing: recover publishes its record, which carries the writes the interrupted one
    could not know."""
    from cirrus.verify import verify

    path = normalise_cloudpath(f"file://{tmp_path}/v")
    make_layer(path)
    s = cirrus.session(["src"], "alive after all", process())
    s.volume(path)[0:64, 0:64, 0:64] = chunk_of(1)
    interrupted = cirrus.abandon(path, s.id, force=True)  # force: its pid (ours) runs here

    def die_at_publish(_cloudpath: str, key: str) -> None:
        if key == "provenance":
            raise KeyboardInterrupt("killed between staging and publishing")

    with hooked(before=die_at_publish), pytest.raises(KeyboardInterrupt):
        s.commit()
    assert [h.id for h in cirrus.history(path)] == [interrupted]
    (published,) = cirrus.recover(path)[path]
    history = {h.id: h.record for h in cirrus.history(path)}  # same start: ordered by id
    assert sorted(history) == sorted([interrupted, published])
    assert history[published].status == "committed" and history[published].writes["mips"]
    assert verify(path).ok


def test_abandon_loses_to_a_session_that_commits_meanwhile_and_nothing_is_doubled(tmp_path):
    from cirrus.verify import verify

    path = normalise_cloudpath(f"file://{tmp_path}/v")
    make_layer(path)
    s = cirrus.session(["src"], "alive after all", process())
    s.volume(path)[0:64, 0:64, 0:64] = chunk_of(1)
    target = [s]

    def commit_the_session(_cloudpath: str, key: str) -> None:
        if key.startswith("provenance.d/records/") and target:  # abandon's record is staged
            target.pop().commit()  # the session was alive after all

    with (
        hooked(after=commit_the_session),
        pytest.raises(InvalidInput, match="stopped being listed"),
    ):
        cirrus.abandon(path, s.id, force=True)  # force: its pid (ours) runs here
    (stored,) = cirrus.history(path)
    assert stored.id == s.records[path] and stored.record.status == "committed"
    assert len(Ledger.open(path).record_ids()) == 2  # the interrupted one stays unpublished...
    assert cirrus.recover(path) == {}  # ...by recover and by later commits alike
    with cirrus.session(["src"], "later", process()) as later:
        later.volume(path)[64:128, 0:64, 0:64] = chunk_of(2)
    assert [h.record.session for h in cirrus.history(path)] == [s.id, later.id]
    report = verify(path)
    assert report.ok and any("left unpublished" in remark for remark in report.remarks)


def test_an_abandon_whose_swap_response_was_lost_still_reports_its_record(tmp_path):
    """The swap landed; its retry finds the session recorded, by this abandon's own record."""
    from cirrus.storage import wrap_backends
    from cirrus.storage.faults import FaultyBackend

    path = normalise_cloudpath(f"file://{tmp_path}/v")
    make_layer(path)
    s = cirrus.session(["src"], "killed", process())
    s.volume(path)[0:64, 0:64, 0:64] = chunk_of(1)
    s._finalizer.detach()  # as if SIGKILLed: no warning at collection
    with wrap_backends(lambda backend: FaultyBackend(backend, lost_response_rate=1.0)):
        interrupted = cirrus.abandon(path, s.id, force=True)  # force: its pid (ours) runs here
    (stored,) = cirrus.history(path)
    assert stored.id == interrupted and stored.record.error["type"] == "Interrupted"
    assert cirrus.history(path).open_sessions == {}


def test_staged_but_unpublished_records_via_the_ledger_are_rolled_forward(tmp_path):
    """The same crash, staged by hand through the ledger (no subprocess)."""
    from cirrus.model import Note, utcnow
    from cirrus.records import make_record

    paths = [normalise_cloudpath(f"file://{tmp_path}/v{i}") for i in range(2)]
    proc = process("staged by hand")
    ids = {}
    for path in paths:
        make_layer(path)
        record = make_record(
            session="s" * 32,
            layer=path,
            process=proc,
            sources=["src"],
            notes=[Note("motivation", "hand")],
            started=utcnow(),
            siblings=tuple(p for p in paths if p != path),
        )
        ledger = Ledger.open(path)
        ledger.stage_envs(env_blobs(proc.env_documents()))
        ids[path] = ledger.stage_record(record)
        assert ledger.stage_record(record) == ids[path]  # staging is idempotent
    assert cirrus.recover(paths[0]) == {path: [ids[path]] for path in paths}
    assert cirrus.recover(paths[1]) == {}
    for path in paths:
        assert published(path) == [ids[path]]


# -- a malformed `provenance` is never overwritten ------------------------------------------------

MALFORMED = {
    "not_json": b"{not json",
    "sources_string": (
        b'{"description": "", "owners": [], "processing": [], "sources": "gs://lab/aff"}'
    ),
    "array": b"[1, 2, 3]",
    "processing_strings": (
        b'{"description": "", "owners": [], "processing": ["x"], "sources": []}'
    ),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_provenance_is_never_overwritten_and_repair_keeps_it(tmp_path, kind):
    bad = MALFORMED[kind]
    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    make_layer(path)
    # an earlier, good session
    with cirrus.session(["src"], "before", process()) as first:
        first.volume(path)[0:64, 0:64, 0:64] = chunk_of(1)
    # a session is writing when a foreign tool breaks the summary
    with (
        pytest.raises(CorruptProvenance) as raised,
        cirrus.session(["src2"], "during", process()) as s,
    ):
        s.volume(path)[64:128, 0:64, 0:64] = chunk_of(2)
        put_raw(path, "provenance", bad)
    message = str(raised.value)
    assert path in message and "provenance" in message
    assert "repair" in message
    assert raw_summary(path) == bad  # untouched
    with pytest.raises(CorruptProvenance):
        cirrus.history(path)
    with pytest.raises(CorruptProvenance):
        cirrus.add_note(path, "a note")
    assert raw_summary(path) == bad

    repaired = repair_summary(path)
    assert repaired is not None and repaired.kept.startswith("provenance.d/corrupt/")
    kept = repaired.kept
    assert kept in provenance_keys(path)
    from cirrus.storage import open_store

    assert open_store(path).get(kept).data == bad  # the original, byte for byte
    # the rebuilt summary names everything: the published session, and the session that was
    # staged but could not be published (the note was refused before anything was staged)
    history = cirrus.history(path)
    assert [h.record.notes[0]["text"] for h in history] == ["before", "during"]
    # what the foreign tool wrote is carried over where it fits (a lone string as a list)
    expected = (["gs://lab/aff"] if kind == "sources_string" else []) + ["src", "src2"]
    assert summary_json(path)["sources"] == expected
    assert repair_summary(path) is None  # now fine
    # CloudVolume opens the layer again, and the data written meanwhile is there
    assert plain(path).provenance.sources == expected
    assert (plain(path)[64:128, 0:64, 0:64] == 2).all()


def test_a_session_cannot_open_a_volume_whose_provenance_is_not_json(tmp_path):
    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    make_layer(path)
    put_raw(path, "provenance", b"{not json")
    with (
        pytest.raises(CorruptProvenance) as raised,
        cirrus.session(["src"], "why", process()) as s,
    ):
        s.volume(path)[0:64, 0:64, 0:64] = np.ones((64, 64, 64), np.uint8)
    assert "provenance" in str(raised.value) and "cirrus repair" in str(raised.value)
    assert raw_summary(path) == b"{not json"
    assert provenance_keys(path) == ["provenance"]


def test_abandoning_a_session_again_says_it_ended_already(tmp_path):
    """`--abandon` run twice (a script re-run): the second says the session ended, and how."""
    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    make_layer(path)
    s = cirrus.session(["src"], "why", process())
    s.volume(path)[0:64, 0:64, 0:64] = chunk_of(1)
    s._finalizer.detach()  # the process "died": its listing stays
    record_id = cirrus.abandon(path, s.id[:8], force=True)
    with pytest.raises(InvalidInput, match="ended here already, failed") as refused:
        cirrus.abandon(path, s.id[:8], force=True)
    assert f"record {record_id[:12]}" in str(refused.value)
    assert "nothing to abandon" in str(refused.value)
