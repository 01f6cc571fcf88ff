"""Edges of the write path found in review: refused writes, odd files, retries, odd infos."""

from __future__ import annotations

import json
from configparser import ConfigParser
from typing import Any

import numpy as np
import pytest

import cirrus
from cirrus.errors import (
    CorruptProvenance,
    InvalidInput,
    NotPublished,
    ProvenanceRequired,
    SessionClosed,
    StorageError,
)
from cirrus.repair import repair_summary
from cirrus.storage import wrap_backends
from cirrus.storage.paths import normalise_cloudpath
from cirrus.verify import verify
from tests.session_support import (
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


@pytest.fixture
def layer(tmp_path) -> str:
    path = f"file://{tmp_path}/layer"
    make_layer(path)
    return path


def test_parallel_uploads_are_refused_before_anything_is_written(layer):
    """CloudVolume's parallel upload pickles the volume into children, where writes got lost."""
    with cirrus.session(["src"], "why", process()) as s:
        with pytest.raises(InvalidInput, match="parallel=2"):
            s.volume(layer, parallel=2)
        handle = s.volume(layer)
        handle.parallel = 2
        with pytest.raises(InvalidInput, match="parallel=2"):
            handle[0:64, 0:64, 0:64] = chunk_of(1)
    assert s.records == {}
    assert (plain(layer)[0:64, 0:64, 0:64] == 0).all()


def test_a_write_cloudvolume_refuses_is_not_recorded(layer):
    with cirrus.session(["src"], "why", process()) as s:
        handle = s.volume(layer)
        with pytest.raises(Exception, match="Non-Aligned"):
            handle[0:10, 0:10, 0:10] = np.ones((10, 10, 10), np.uint8)
        handle[0:64, 0:64, 0:64] = chunk_of(2)
    (record,) = [h.record for h in cirrus.history(layer)]
    assert record.writes["operations"] == {"upload": 1}
    assert record.writes["mips"]["0"]["chunks"] == 1


def test_info_with_numpy_values_commits_like_cloudvolume(layer):
    with cirrus.session(["src"], "rescale", process()) as s:
        handle = s.volume(layer)
        handle.info["scales"][0]["resolution"] = np.array([8, 8, 40])
        handle.commit_info()
    (record,) = [h.record for h in cirrus.history(layer)]
    assert record.writes["operations"] == {"info": 1}
    assert list(plain(layer).info["scales"][0]["resolution"]) == [8, 8, 40]


def test_transfer_to_and_meta_commit_provenance_are_refused(layer, tmp_path):
    with cirrus.session(["src"], "why", process()) as s:
        handle = s.volume(layer)
        with pytest.raises(ProvenanceRequired, match="transfer_to"):
            handle.transfer_to(f"file://{tmp_path}/copy", handle.bounds)
        with pytest.raises(ProvenanceRequired, match="commit_provenance"):
            handle.meta.commit_provenance()
    assert not (tmp_path / "copy").exists()


def writing_beside(layer: str) -> cirrus.Session:
    """A session listed as writing on `layer`, so commits there look for orphans."""
    other = cirrus.session(["src"], "still writing", process("other"))
    other.volume(layer)[64:128, 64:128, 0:64] = chunk_of(9)
    return other


def test_a_stray_file_among_the_records_does_not_block_commits(layer, caplog):
    put_raw(layer, "provenance.d/records/README.json", b"notes by hand")
    other = writing_beside(layer)
    with cirrus.session(["src"], "why", process()) as s:
        s.volume(layer)[0:64, 0:64, 0:64] = chunk_of(3)
    assert [h.id for h in cirrus.history(layer)] == [s.records[layer]]
    assert "README.json, which is not a record" in caplog.text
    other.commit()


def test_a_damaged_staged_record_does_not_block_commits(layer, caplog):
    with cirrus.session(["src"], "first", process()) as first:
        first.volume(layer)[0:64, 0:64, 0:64] = chunk_of(1)
    damaged = "provenance.d/records/" + "0" * 64 + ".json"
    put_raw(layer, damaged, b"{}")  # an orphan whose bytes do not match its name
    other = writing_beside(layer)
    with cirrus.session(["src"], "second", process()) as second:
        second.volume(layer)[64:128, 0:64, 0:64] = chunk_of(2)
    assert [h.id for h in cirrus.history(layer)] == [first.records[layer], second.records[layer]]
    assert "damaged record not rolled forward" in caplog.text
    other.commit()


def written_session(tmp_path, names: str = "ab") -> tuple[cirrus.Session, list[str]]:
    """An open session that wrote a chunk to each of the new volumes `names`."""
    paths = [normalise_cloudpath(f"file://{tmp_path}/{name}") for name in names]
    for path in paths:
        make_layer(path)
    s = cirrus.session(["src"], "why", process())
    for path in paths:
        s.volume(path)[0:64, 0:64, 0:64] = chunk_of(4)
    return s, paths


def failed_commit(
    tmp_path, names: str = "ab", refuse: str = "journals", landed: bool = False, close="commit"
) -> tuple[cirrus.Session, list[str]]:
    """A session over volumes `names` whose commit (or `close`) failed at its first create of
    a `refuse` object (the create applied first if `landed`: its response was lost). That is
    before the commit point, the journal of several volumes or the one record, so it stays
    open."""
    s, paths = written_session(tmp_path, names)
    refused = []

    class RefuseTheCreate:
        def __init__(self, backend):
            self.backend, self.cloudpath = backend, backend.cloudpath

        def __getattr__(self, name):
            return getattr(self.backend, name)

        def put_new(self, key, data):
            if key.startswith(f"provenance.d/{refuse}/") and not refused:
                refused.append(key)
                if landed:
                    self.backend.put_new(key, data)
                raise StorageError("refused by the test", cloudpath=self.cloudpath, key=key)
            return self.backend.put_new(key, data)

    with wrap_backends(RefuseTheCreate), pytest.raises(StorageError, match="refused"):
        getattr(s, close)()
    assert s.state == "open" and refused
    return s, paths


def test_a_commit_that_fails_before_its_journal_stays_open_and_retries_without_doubling(
    tmp_path,
):
    s, paths = failed_commit(tmp_path, landed=True)  # the journal is there; its answer is not
    ids = s.commit()  # the same journal again: found equal, not doubled
    assert s.state == "committed"
    for path in paths:
        assert [h.id for h in cirrus.history(path)] == [ids[normalise_cloudpath(path)]]


def test_a_session_dropped_after_its_commit_was_cut_short_says_to_recover(tmp_path, capsys):
    """Not "never committed": its journal may be stored, and recover then publishes it all."""
    import gc

    from cirrus.rollforward import recover

    s, paths = failed_commit(tmp_path, landed=True)
    with pytest.warns(ResourceWarning, match=r"commit was cut short \(StorageError\)"):
        del s
        gc.collect()
    assert "`cirrus recover PATH` on one of them" in capsys.readouterr().err
    a, b = (normalise_cloudpath(path) for path in paths)
    assert sorted(recover(b)) == [a, b]  # b lists the session and names a, its journal's
    for path in (a, b):
        assert [h.record.status for h in cirrus.history(path)] == ["committed"]


def test_after_a_failed_commit_new_writes_are_refused_until_it_is_retried(tmp_path):
    """The records are built when the commit starts: a write after a failed commit would be in
    none of them, so it is refused before any data is written."""
    s, paths = failed_commit(tmp_path)
    late = f"file://{tmp_path}/c"
    make_layer(late)
    with pytest.raises(ProvenanceRequired, match=r"commit failed .* call commit\(\) or abort"):
        s.volume(late)[0:64, 0:64, 0:64] = chunk_of(5)
    assert (plain(late)[0:64, 0:64, 0:64] == 0).all()
    ids = s.commit()
    assert sorted(ids) == sorted(normalise_cloudpath(p) for p in paths)
    assert cirrus.history(late) == [] and cirrus.history(late).open_sessions == {}


def test_an_abort_after_a_commit_failed_before_its_journal_fails_it_on_every_volume(tmp_path):
    s, paths = failed_commit(tmp_path)
    ids = s.abort("gave up after the storage error")
    assert s.state == "failed"
    for path in paths + paths:  # and again after a recover
        (stored,) = cirrus.history(path)
        assert stored.id == ids[normalise_cloudpath(path)] and stored.record.status == "failed"
        cirrus.recover(path)
    assert verify(paths[0]).ok


def test_an_abort_after_a_journal_that_landed_unanswered_publishes_the_commit(tmp_path, caplog):
    """The journal is the commit point: once stored, the session committed, whatever the
    process heard. An abort then publishes the committed records, and says so."""
    s, paths = failed_commit(tmp_path, landed=True)
    ids = s.abort("gave up after the storage error")
    assert s.state == "committed"
    assert "had ended already, committed" in caplog.text
    for path in paths:
        (stored,) = cirrus.history(path)
        assert stored.id == ids[normalise_cloudpath(path)] and stored.record.status == "committed"
        assert stored.record.writes["mips"]


def test_a_commit_that_fails_after_its_journal_is_committed_and_recover_publishes_it(tmp_path):
    """Staging b failed after the journal: the session committed, so it may not end again
    with an abort; recover from either volume publishes the journal's records on both."""
    s, paths = written_session(tmp_path)

    def refuse_records_on_b(cloudpath: str, key: str) -> None:
        if cloudpath.endswith("/b") and key.startswith("provenance.d/records/"):
            raise StorageError("refused by the test", cloudpath=cloudpath, key=key)

    with hooked(before=refuse_records_on_b), pytest.raises(NotPublished, match="committed"):
        s.commit()
    assert s.state == "unpublished" and sorted(s.records) == paths
    with pytest.raises(SessionClosed, match="cirrus recover"):
        s.abort()
    report = verify(paths[1])
    assert any("committed (its journal on" in problem for problem in report.problems)
    assert cirrus.recover(paths[1]) == {path: [s.records[path]] for path in paths}
    for path in paths:
        (stored,) = cirrus.history(path)
        assert stored.id == s.records[path] and stored.record.status == "committed"
        assert cirrus.history(path).open_sessions == {}
    assert all(verify(path).ok for path in paths)


def test_an_abort_after_another_commit_published_the_staged_record_keeps_that_one(tmp_path):
    """One volume: its record is the commit point, and it landed unanswered. Another session's
    commit on the volume rolls it forward; the session has ended there, so the abort's
    `failed` record stays unpublished and the abort returns the record that stands."""
    s, (a,) = failed_commit(tmp_path, names="a", refuse="records", landed=True)
    a = normalise_cloudpath(a)
    with cirrus.session(["src"], "another writer", process()) as other:
        other.volume(a)[64:128, 0:64, 0:64] = chunk_of(5)
    (rolled,) = [h for h in cirrus.history(a) if h.record.session == s.id]
    assert rolled.record.status == "committed"
    ids = s.abort("gave up after the storage error")
    assert ids[a] == rolled.id
    mine = [h for h in cirrus.history(a) if h.record.session == s.id]
    assert [(h.id, h.record.status) for h in mine] == [(ids[a], "committed")]
    cirrus.recover(a)
    assert [h.record.session for h in cirrus.history(a)].count(s.id) == 1
    assert verify(a).ok


def test_a_ctrl_c_while_publishing_leaves_the_session_unpublished_not_open(tmp_path):
    """Some volumes may have the record already: an abort now would end the session twice
    there. The session refuses and names `cirrus recover`, which publishes the rest."""
    s, paths = written_session(tmp_path)

    def ctrl_c_on_b(cloudpath: str, key: str) -> None:
        if cloudpath.endswith("/b") and key == "provenance":
            raise KeyboardInterrupt

    with hooked(before=ctrl_c_on_b), pytest.raises(KeyboardInterrupt):
        s.commit()
    assert s.state == "unpublished" and sorted(s.records) == paths
    with pytest.raises(SessionClosed, match="cirrus recover"):
        s.abort()
    cirrus.recover(paths[1])
    for path in paths:
        (stored,) = cirrus.history(path)
        assert stored.id == s.records[path] and stored.record.status == "committed"


def test_record_pointers_of_the_wrong_shape_are_refused_when_a_volume_opens(layer):
    bad = (
        b'{"description": "", "owners": [], "processing": [], "sources": [],'
        b' "cirrus": {"records": [{"id": 1}]}}'
    )
    put_raw(layer, "provenance", bad)
    with cirrus.session(["src"], "why", process()) as s, pytest.raises(CorruptProvenance):
        s.volume(layer)
    assert raw_summary(layer) == bad


def test_configparser_values_are_recorded_raw():
    config = ConfigParser()
    config.read_string("[watershed]\nthreshold = 50%\nlabel = %(threshold)s\n")
    proc = cirrus.Process("p", config)
    assert proc.parameters == {"watershed": {"threshold": "50%", "label": "%(threshold)s"}}


def test_repair_keeps_steps_that_are_still_open(layer, caplog):
    step = cirrus.step(["src"], "why", process(), volumes=[layer])
    done = cirrus.step(["src"], "finished", process(), volumes=[layer])
    with cirrus.join(done.token, task="t0") as task:
        task.volume(layer, progress=False)[0:64, 0:64, 0:64] = chunk_of(1)
    cirrus.finish(done.token)
    put_raw(layer, "provenance.d/steps/not-a-step/step.json", b"{}")
    put_raw(layer, "provenance", b"{broken")
    repaired = repair_summary(layer)
    assert repaired.kept in provenance_keys(layer) and repaired.dropped == (
        "everything: it is not JSON",
    )
    assert set(summary_json(layer)["cirrus"]["open_steps"]) == {step.id}
    assert "not-a-step/step.json, which is not a step manifest" in caplog.text


def test_repair_keeps_a_session_listed_while_it_is_still_writing(layer):
    """Another tool broke one field; the listing is readable and the session is alive."""
    s = cirrus.session(["src"], "still writing", process())
    s.volume(layer)[0:64, 0:64, 0:64] = chunk_of(1)
    broken = summary_json(layer)
    broken["owners"] = "lab"  # valid JSON, wrong shape
    put_raw(layer, "provenance", json.dumps(broken).encode())
    assert repair_summary(layer)
    assert list(cirrus.history(layer).open_sessions) == [s.id]
    s.commit()
    assert cirrus.history(layer).open_sessions == {} and len(cirrus.history(layer)) == 1


def test_repair_publishes_one_record_per_session_the_last_it_staged(tmp_path):
    # a's `committed` record is staged, unpublished: a commit point nobody heard of
    s, paths = failed_commit(tmp_path, names="a", refuse="records", landed=True)
    ids = s.abort("gave up")
    put_raw(paths[0], "provenance", b"{broken")
    assert repair_summary(paths[0])
    (stored,) = cirrus.history(paths[0])
    assert stored.id == ids[normalise_cloudpath(paths[0])] and stored.record.status == "failed"


def test_repair_keeps_the_record_a_readable_summary_pointed_to(tmp_path):
    """The staged `committed` record was rolled forward before the abort: it stands, and the
    abort's `failed` one stays unpublished, also after repair while the pointers can be read."""
    s, paths = failed_commit(tmp_path, names="a", refuse="records", landed=True)
    a = normalise_cloudpath(paths[0])
    with cirrus.session(["src"], "another writer", process()) as other:
        other.volume(a)[64:128, 0:64, 0:64] = chunk_of(5)
    standing = s.abort("gave up")[a]
    broken = summary_json(a)
    broken["owners"] = "lab"  # valid JSON, wrong shape: the pointers are still readable
    put_raw(a, "provenance", json.dumps(broken).encode())
    assert repair_summary(a)
    mine = [h for h in cirrus.history(a) if h.record.session == s.id]
    assert [(h.id, h.record.status) for h in mine] == [(standing, "committed")]


@pytest.mark.parametrize("records", [None, 5, "x", [{"id": ["x"]}], [{"id": None}, 3]])
def test_repair_reads_no_pointers_from_a_records_section_of_the_wrong_shape(layer, records):
    with cirrus.session(["src"], "why", process()) as s:
        s.volume(layer)[0:64, 0:64, 0:64] = chunk_of(1)
    broken = summary_json(layer)
    broken["cirrus"]["records"] = records
    put_raw(layer, "provenance", json.dumps(broken).encode())
    assert repair_summary(layer)
    assert [h.id for h in cirrus.history(layer)] == [s.records[layer]]


def test_repair_does_not_reopen_a_finished_step_on_a_volume_its_tasks_skipped(tmp_path):
    paths = [normalise_cloudpath(f"file://{tmp_path}/{name}") for name in "ab"]
    for path in paths:
        make_layer(path)
    step = cirrus.step(["src"], "only a is written", process(), volumes=paths)
    with cirrus.join(step.token, task="t0") as task:
        task.volume(paths[0])[0:64, 0:64, 0:64] = chunk_of(1)
    step.finish()
    put_raw(paths[1], "provenance", b"{broken")
    assert repair_summary(paths[1])
    assert "open_steps" not in summary_json(paths[1]).get("cirrus", {})


def test_repair_does_not_reopen_a_step_finished_with_no_task(tmp_path):
    """No record says such a step was finished; its finish leaves a file that does."""
    paths = [normalise_cloudpath(f"file://{tmp_path}/{name}") for name in "ab"]
    for path in paths:
        make_layer(path)
    empty = cirrus.step(["src"], "nothing to do", process(), volumes=paths)
    running = cirrus.step(["src"], "still running", process(), volumes=paths)
    assert empty.finish() == {}
    assert [empty.status()["volumes"][p]["finished"] for p in paths] == [True, True]
    assert [running.status()["volumes"][p]["finished"] for p in paths] == [False, False]
    for path in paths:
        put_raw(path, "provenance", b"{broken")
        assert repair_summary(path)
        assert set(summary_json(path)["cirrus"]["open_steps"]) == {running.id}


def test_repair_lists_a_step_finished_with_no_task_open_again_once_a_late_task_files(layer):
    empty = cirrus.step(["src"], "nothing to do, then a late task", process(), volumes=[layer])
    empty.finish()
    with cirrus.join(empty.token, task="late") as task:
        task.volume(layer)[0:64, 0:64, 0:64] = chunk_of(1)
    assert empty.status()["volumes"][layer]["finished"] is False  # the late task is unfinished
    put_raw(layer, "provenance", b"{broken")
    assert repair_summary(layer)
    assert set(summary_json(layer)["cirrus"]["open_steps"]) == {empty.id}
    empty.finish()
    assert [h.record.tasks["count"] for h in cirrus.history(layer)] == [1]


COMPAT_SCRIPT = """
import os, signal, sys, time
import numpy as np
import cirrus
path, ending = sys.argv[1], sys.argv[2]
vol = cirrus.CloudVolume(path, sources=["src"], motivation="why", process=cirrus.Process("p", {}))
vol[0:64, 0:64, 0:64] = np.ones((64, 64, 64), np.uint8)
if ending == "ctrl-c":
    raise KeyboardInterrupt
if ending == "sigterm":
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
"""


@pytest.mark.parametrize(
    ("ending", "code", "status", "error"),
    [
        ("normal", 0, "committed", None),
        ("ctrl-c", -2, "failed", "KeyboardInterrupt"),  # Python re-raises SIGINT
        ("sigterm", 143, "failed", "Terminated"),
    ],
)
def test_a_compat_volume_records_how_the_program_ended(layer, ending, code, status, error):
    """cirrus-volume committed at exit; a program stopped by Ctrl-C or SIGTERM is no success."""
    entry = one_record_after(COMPAT_SCRIPT, layer, ending, code)
    assert entry.record.status == status
    assert (entry.record.error or {}).get("type") == error


def one_record_after(script: str, layer: str, argument: str, code: int) -> Any:
    """Run `script` on `layer` in a child that must exit with `code`; the one record it left,
    of its one chunk, with no session left open."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", script, layer, argument], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == code, done.stderr
    (entry,) = cirrus.history(layer)
    assert entry.record.writes["mips"]["0"]["chunks"] == 1
    assert cirrus.history(layer).open_sessions == {}
    return entry


SESSION_EXIT_SCRIPT = """
import ast, sys
import numpy as np
import cirrus
path, code = sys.argv[1], ast.literal_eval(sys.argv[2])
with cirrus.session(["src"], "why", cirrus.Process("p", {})) as s:
    s.volume(path)[0:64, 0:64, 0:64] = np.ones((64, 64, 64), np.uint8)
    sys.exit(code)
"""


@pytest.mark.parametrize(
    ("code", "returncode", "status", "message"),
    [
        ("None", 0, "committed", None),
        ("0", 0, "committed", None),
        ("False", 0, "committed", None),
        ("1", 1, "failed", "1"),
        ("'no input'", 1, "failed", "no input"),
    ],
)
def test_sys_exit_in_a_session_records_what_its_status_says(
    layer, code, returncode, status, message
):
    """`sys.exit()` or `sys.exit(0)` in the body is a script ending well: the session commits
    (and the program still exits 0); any other status records the session as failed."""
    entry = one_record_after(SESSION_EXIT_SCRIPT, layer, code, returncode)
    assert entry.record.status == status
    assert (entry.record.error or {}).get("message") == message


THREAD_COMMIT_SCRIPT = """
import os, signal, sys, threading, time
import numpy as np
import cirrus
vol = cirrus.CloudVolume(
    sys.argv[1], sources=["src"], motivation="why", process=cirrus.Process("p", {})
)
vol[0:64, 0:64, 0:64] = np.ones((64, 64, 64), np.uint8)
worker = threading.Thread(target=vol.commit)
worker.start()
worker.join()
print("COMMITTED", flush=True)
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(30)
"""


def test_a_compat_volume_committed_from_a_thread_gives_sigterm_its_default_back(layer):
    """No session is open any more: SIGTERM ends the process as if cirrus had never been."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", THREAD_COMMIT_SCRIPT, layer],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "COMMITTED" in done.stdout, done.stderr
    assert done.returncode == -15, done.stderr  # killed by the signal, not Terminated (143)
    assert [h.record.status for h in cirrus.history(layer)] == ["committed"]


def test_a_compat_volume_commits_when_it_is_deleted(layer):
    """cirrus-volume had no explicit end: dropping the volume records its writes, at once."""
    import gc

    gc.disable()  # no cyclic collection: the handle must not keep itself alive
    try:
        vol = cirrus.CloudVolume(layer, sources=["src"], motivation="why", process=process())
        vol[0:64, 0:64, 0:64] = chunk_of(5)
        del vol
        assert len(cirrus.history(layer)) == 1
    finally:
        gc.enable()


class _Killed(BaseException):
    """A process dying at a chosen storage write, as far as this process can tell."""


def _deny(cloudpath_end: str, methods: tuple[str, ...]):
    """A backend wrapper refusing `methods` on the layer ending with `cloudpath_end` (a 403)."""
    from cirrus.errors import PermanentStorageError

    class Deny:
        def __init__(self, backend):
            self.backend, self.cloudpath = backend, backend.cloudpath

        def __getattr__(self, name):
            attribute = getattr(self.backend, name)
            if name in methods and self.cloudpath.endswith(cloudpath_end):

                def refused(*args, **kwargs):
                    raise PermanentStorageError("403 Forbidden", cloudpath=self.cloudpath)

                return refused
            return attribute

    return Deny


def killed_after_its_journal(s: cirrus.Session) -> None:
    """Commit `s` and "die" right after its journal is stored: nothing staged, nothing else."""

    def die(_cloudpath: str, key: str) -> None:
        if key.startswith("provenance.d/journals/"):
            raise _Killed

    with hooked(after=die), pytest.raises(_Killed):
        s.commit()
    s._finalizer.detach()


def test_a_journal_holds_the_very_bytes_its_commit_stages_as_canonical_json(tmp_path):
    """The journal splices in each record's canonical JSON, as staged: it must still be the
    canonical JSON of its document, whatever characters the volumes' names hold."""
    from cirrus.canonical import canonical_json
    from cirrus.journal import journal_key, read_journal

    s, paths = written_session(tmp_path, ["seg-\u00fc\u6f22", 'q"x\\y', "a"])
    ids = s.commit()
    data = (tmp_path / "seg-\u00fc\u6f22" / journal_key(s.id)).read_bytes()
    document = json.loads(data)
    assert data == canonical_json(document)
    assert sorted(document["records"]) == sorted(paths)
    for layer, record in document["records"].items():
        name = layer.rsplit("/", 1)[1]
        staged = tmp_path / name / "provenance.d" / "records" / f"{ids[layer]}.json"
        assert staged.read_bytes() == canonical_json(record)
    assert read_journal(paths[0], s.id).ids() == ids


def test_a_volume_whose_listing_failed_does_not_hold_the_journal(tmp_path):
    """The first write goes to a read-only volume: its listing fails, so the journal goes to
    the first volume listed, and the session over the others commits."""
    a, b, c = (normalise_cloudpath(f"file://{tmp_path}/{n}") for n in "abc")
    for path in (a, b, c):
        make_layer(path)
    s = cirrus.session(["src"], "why", process())
    with wrap_backends(_deny("/a", ("put_new", "put_if_match"))):
        with pytest.raises(StorageError, match="403"):
            s.volume(a)[0:64, 0:64, 0:64] = chunk_of(1)
        s.volume(b)[0:64, 0:64, 0:64] = chunk_of(2)
        s.volume(c)[0:64, 0:64, 0:64] = chunk_of(3)
        ids = s.commit()
    assert sorted(ids) == [b, c] and s.state == "committed"
    for path in (b, c):
        assert [h.record.status for h in cirrus.history(path)] == ["committed"]
        assert cirrus.history(path).open_sessions == {}


def test_a_journal_home_that_cannot_be_read_leaves_the_session_alone(tmp_path, caplog):
    """Its home is unreadable from here (another account's bucket, a deleted one): recover,
    abandon and verify on the other volume still work, and nothing is guessed."""
    s, (a, b) = written_session(tmp_path, "ab")
    s._finalizer.detach()  # as if the process died in the body: no journal
    with wrap_backends(_deny("/a", ("get",))):
        assert cirrus.recover(b) == {}
        assert "could not be read" in caplog.text
        report = verify(b)
        assert report.ok and any("whether it committed is unknown" in r for r in report.remarks)
        cirrus.abandon(b, s.id, force=True)
    (stored,) = cirrus.history(b)
    assert stored.record.error["type"] == "Interrupted"


def test_the_home_that_got_no_data_stops_listing_a_committed_session(tmp_path):
    """CloudVolume refused the first write (after the listing), then the process died after
    its journal: recovery publishes the records and drops the home's leftover listing, so no
    one is told to abandon a session that committed."""
    import numpy as np

    a, b, c = (normalise_cloudpath(f"file://{tmp_path}/{n}") for n in "abc")
    for path in (a, b, c):
        make_layer(path)
    s = cirrus.session(["src"], "why", process())
    with pytest.raises(ValueError):  # CloudVolume refuses float32 for a uint8 layer
        s.volume(a)[0:64, 0:64, 0:64] = np.zeros((64, 64, 64), dtype=np.float32)
    s.volume(b)[0:64, 0:64, 0:64] = chunk_of(2)
    s.volume(c)[0:64, 0:64, 0:64] = chunk_of(3)
    assert s.touched == [b, c] and list(cirrus.history(a).open_sessions) == [s.id]
    killed_after_its_journal(s)
    assert sorted(cirrus.recover(b)) == [b, c]
    for path in (b, c):
        assert [h.record.status for h in cirrus.history(path)] == ["committed"]
    assert cirrus.history(a) == [] and cirrus.history(a).open_sessions == {}
    assert all(verify(path).ok for path in (a, b, c))


def test_an_abort_whose_journal_landed_unanswered_then_a_commit_ends_failed(tmp_path, caplog):
    """The abort's journal was stored: the session ended failed, whatever the retry asks."""
    s, paths = failed_commit(tmp_path, landed=True, close="abort")
    ids = s.commit()
    assert s.state == "failed"
    assert "had ended already, failed" in caplog.text
    for path in paths:
        (stored,) = cirrus.history(path)
        assert stored.id == ids[normalise_cloudpath(path)] and stored.record.status == "failed"


def test_a_journal_completes_no_volume_that_does_not_list_its_session(tmp_path, caplog):
    """Only a volume that lists the session (so the session wrote there) gets a record from its
    journal: a journal naming another volume (edited, or copied with a layer) adds none there."""
    import json as _json

    s, (a, c) = written_session(tmp_path, "ac")
    killed_after_its_journal(s)
    unlisted = summary_json(c)
    del unlisted["cirrus"]["open_sessions"][s.id]  # c never listed it, as far as c says
    put_raw(c, "provenance", _json.dumps(unlisted).encode())
    assert sorted(cirrus.recover(a)) == [a]
    assert [h.record.status for h in cirrus.history(a)] == ["committed"]
    assert cirrus.history(c) == []
    assert "does not list the session as writing" in caplog.text
