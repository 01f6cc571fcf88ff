"""One damaged record (changed after it was written, truncated, missing) hides nothing else:
`cirrus.history`, `cirrus log` and `cirrus lineage` show every intact record and mark the damaged
one in place, with what the summary says of it and how to fix it; `cirrus show` shows it so.

Real file:// layers written by real sessions; a record is damaged the way a hand edit or a cut-off
copy would, on disk.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cirrus
from cirrus.errors import IntegrityError
from tests.cli_support import invoke, layers, run, write


def _layer_dir(path: str) -> Path:
    return Path(path[len("file://") :])


def _record_file(path: str, record_id: str) -> Path:
    return _layer_dir(path) / "provenance.d" / "records" / f"{record_id}.json"


def _pointer(path: str, record_id: str) -> dict:
    summary = json.loads((_layer_dir(path) / "provenance").read_text())
    return next(p for p in summary["cirrus"]["records"] if p["id"] == record_id)


@pytest.fixture
def damaged(tmp_path: Path) -> dict:
    """seg: four sessions (v0 from image, v1 from other, v2 from image, v3 from image); v1's
    record is cut short after it was published, then v3 commits."""
    image, other, seg = layers(tmp_path, "image", "other", "seg")
    write([image], ["microscope"], "acquire it", "acquire")
    write([other], ["manual tracing"], "trace it", "trace")
    ids = [
        write([seg], [source], f"pass {i}", f"segment v{i}")[seg]
        for i, source in enumerate([image, other, image])
    ]
    record = _record_file(seg, ids[1])
    record.write_bytes(record.read_bytes()[:-10])  # a cut-off copy
    ids.append(write([seg], [image], "after the damage", "segment v3")[seg])
    return {"image": image, "other": other, "seg": seg, "ids": ids}


def test_history_keeps_every_intact_record_and_lists_the_damaged_one(damaged: dict) -> None:
    seg, ids = damaged["seg"], damaged["ids"]
    found = cirrus.history(seg)
    assert [r.record.process["description"] for r in found] == [
        "segment v0",
        "segment v2",
        "segment v3",  # committed after the damage
    ]
    (bad,) = found.damaged
    pointer = _pointer(seg, ids[1])
    assert (bad.id, bad.status, bad.session) == (ids[1], "committed", pointer["session"])
    assert (bad.started, bad.ended, bad.process_digest) == (
        pointer["started"],
        pointer["ended"],
        pointer["process"],
    )
    assert f"records/{ids[1]}.json was changed after it was written" in bad.problem
    assert f"`cirrus verify {seg}`" in bad.remedy and "backup" in bad.remedy
    assert [entry.id for entry in found.entries] == ids and found.total == 4
    assert found.to_json()["damaged"][0]["damaged"]["problem"] == bad.problem

    text = str(found)
    assert "4 record(s), 1 damaged" in text
    marked = f"record {ids[1][:12]}"
    assert text.index("segment v2") < text.index(marked) < text.index("segment v0")  # in place
    assert "DAMAGED (the summary says committed)" in text and bad.remedy in text
    assert "DAMAGED" in found._repr_html_()
    with pytest.raises(IntegrityError, match="changed after it was written"):
        found.raise_if_damaged()


def test_a_missing_record_is_damaged_and_newest_still_reads_only_n(damaged: dict) -> None:
    from cirrus.storage import wrap_backends
    from tests.session_support import KeyCounter, KeyCountingBackend

    seg, ids = damaged["seg"], damaged["ids"]
    _record_file(seg, ids[2]).unlink()
    keys = KeyCounter()
    with wrap_backends(lambda backend: KeyCountingBackend(backend, keys)):
        newest = cirrus.history(seg, newest=2)
    assert keys.count(method="get", kind="records") == 2
    assert [r.record.process["description"] for r in newest] == ["segment v3"]
    assert [d.id for d in newest.damaged] == [ids[2]] and "is missing" in newest.damaged[0].problem
    assert newest.total == 4 and "4 record(s), newest 2 shown, 1 damaged" in str(newest)


def test_log_shows_the_rest_marks_the_damaged_one_and_exits_3(
    damaged: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    seg, ids = damaged["seg"], damaged["ids"]
    done = run("log", seg, check=3)
    out = done.stdout
    order = [out.index(f"segment v{i}") for i in (3, 2)] + [out.index(f"record {ids[1][:12]}")]
    assert order == sorted(order) and out.index(f"record {ids[1][:12]}") < out.index("segment v0")
    assert "DAMAGED (the summary says committed)" in out
    assert _pointer(seg, ids[1])["session"] in out and "changed after it was written" in out
    assert f"`cirrus verify {seg}`" in out
    (line,) = done.stderr.splitlines()
    assert line.startswith("cirrus: error: ") and "damaged" in line and "cirrus verify" in line

    data = json.loads(invoke("log", seg, "--json", code=3).stdout)
    assert [r["process"]["description"] for r in data["records"]] == [
        "segment v3",
        "segment v2",
        "segment v0",
    ]
    assert [d["id"] for d in data["damaged"]] == [ids[1]]

    import cirrus.cli.volumes

    monkeypatch.setattr(cirrus.cli.volumes, "is_terminal", lambda: True)
    monkeypatch.setenv("COLUMNS", "300")
    table = invoke("log", seg, code=3).stdout
    assert "DAMAGED" in table and "segment v0" in table and "4 record(s), 1 damaged" in table


def test_lineage_skips_the_damaged_record_follows_the_rest_then_exits_3(damaged: dict) -> None:
    seg, image, other = damaged["seg"], damaged["image"], damaged["other"]
    result = invoke("lineage", seg, code=3)
    out = result.stdout
    first, *rest = out.splitlines()
    assert first.startswith(f"{seg}  (3 record(s)") and "1 damaged" in first
    assert "unreadable" not in out
    tree = "\n".join(rest)
    assert f"{image}  (1 record(s)" in tree and "<- segment v0, segment v2, segment v3" in tree
    assert '"microscope"  (free text)' in tree
    # only the damaged record named `other`: the summary still lists it, so it is followed
    assert f"{other}  (1 record(s)" in tree and "listed in the summary" in tree
    assert '"manual tracing"  (free text)' in tree
    # as `cirrus log` does: everything is shown, then one line names what was skipped
    assert f"damaged records on 1 volume(s): {seg} (1)" in result.stderr
    assert "cirrus verify" in result.stderr
    data = json.loads(invoke("lineage", seg, "--format", "json", code=3).stdout)
    assert data["damaged"] == 1 and {s["name"] for s in data["sources"]} == {image, other}


def test_lineage_exits_3_for_a_damaged_record_on_an_ancestor(damaged: dict) -> None:
    image, seg = damaged["image"], damaged["seg"]
    (acquired,) = [r.id for r in cirrus.history(image)]
    _record_file(image, acquired).unlink()
    result = invoke("lineage", seg, code=3)
    assert f"{image}  (0 record(s)" in result.stdout
    assert f"2 volume(s): {seg} (1), {image} (1)" in result.stderr


@pytest.mark.parametrize("how", ["missing", "cut short"])
def test_show_of_a_damaged_record_says_so_and_how_to_restore_it_exit_3(
    damaged: dict, how: str
) -> None:
    """A missing record file used to be `has no record whose id starts with ...` (exit 2),
    though `cirrus log` lists the record, DAMAGED, under that very id."""
    seg, ids = damaged["seg"], damaged["ids"]
    rid = ids[1]  # cut short by the fixture
    if how == "missing":
        _record_file(seg, rid).unlink()
    done = invoke("show", seg, rid[:8], code=3)
    assert done.stdout.startswith(f"record {rid[:12]}")
    assert "DAMAGED (the summary says committed)" in done.stdout
    assert _pointer(seg, rid)["session"] in done.stdout
    problem = "is missing" if how == "missing" else "was changed after it was written"
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"cirrus: error: {seg}/provenance.d/records/{rid}.json {problem}")
    assert "restore it from a backup or an earlier object version" in line
    assert f"`cirrus verify {seg}` lists every damaged object" in line
    data = json.loads(invoke("show", seg, rid, "--json", code=3).stdout)
    assert data["damaged"]["id"] == rid and problem in data["damaged"]["damaged"]["problem"]
    assert "segment v2" in invoke("show", seg, ids[2][:8]).stdout  # the others show as ever


def test_show_counts_an_id_the_summary_points_to_among_the_prefixes(damaged: dict) -> None:
    """A prefix that matches a stored record and a pointer to a missing one is ambiguous; a
    record both stored and pointed to is one record."""
    seg, ids = damaged["seg"], damaged["ids"]
    summary_file = _layer_dir(seg) / "provenance"
    summary = json.loads(summary_file.read_text())
    kept = ids[0]
    lost = kept[:8] + ("0" if kept[8] != "0" else "1") + "f" * 55  # no file under this id
    summary["cirrus"]["records"].append({**_pointer(seg, kept), "id": lost})
    summary_file.write_text(json.dumps(summary))
    result = invoke("show", seg, kept[:8], code=2)
    assert f"'{kept[:8]}' matches 2 records" in result.stderr
    assert "segment v0" in invoke("show", seg, kept[:9]).stdout
    assert f"records/{lost}.json is missing" in invoke("show", seg, lost[:9], code=3).stderr


POINTER_DAMAGE = {
    "a step that is a list": {"step": ["x"]},
    "no session": {"session": None},
    "an id that is no sha256": {"id": "abc"},
    "tasks that are text": {"tasks": "3"},
    "superseded by a number": {"superseded_by": 3},
}


@pytest.mark.parametrize("kind", POINTER_DAMAGE)
def test_a_record_pointer_of_the_wrong_shape_is_refused_and_repaired(
    tmp_path: Path, kind: str
) -> None:
    """Such a pointer used to pass the summary's check, then fail every commit after staging
    (`TypeError: unhashable type`), crash recover and verify, while repair said all was well."""
    from cirrus.errors import CorruptProvenance
    from cirrus.repair import repair_summary

    (seg,) = layers(tmp_path, "seg")
    write([seg], ["microscope"], "first", "segment")
    (kept,) = cirrus.history(seg)
    summary_file = _layer_dir(seg) / "provenance"
    summary = json.loads(summary_file.read_text())
    summary["cirrus"]["records"][0].update(POINTER_DAMAGE[kind])
    summary_file.write_text(json.dumps(summary))
    with pytest.raises(CorruptProvenance, match="record pointer .*cirrus repair"):
        cirrus.history(seg)
    with pytest.raises(CorruptProvenance, match="record pointer"):
        write([seg], ["microscope"], "second", "segment")  # refused before any data
    assert repair_summary(seg)
    assert [stored.id for stored in cirrus.history(seg)] == [kept.id]


def test_a_foreign_processing_entry_of_another_shape_does_not_block_commits(
    tmp_path: Path,
) -> None:
    (seg,) = layers(tmp_path, "seg")
    write([seg], ["microscope"], "first", "segment")
    summary_file = _layer_dir(seg) / "provenance"
    summary = json.loads(summary_file.read_text())
    summary["processing"][0]["code_envfiles"] = 7
    summary_file.write_text(json.dumps(summary))
    write([seg], ["microscope"], "second", "segment")
    assert len(cirrus.history(seg)) == 2


def test_a_file_under_its_own_digest_that_is_no_record_is_damaged_not_a_crash(
    tmp_path: Path,
) -> None:
    """Bytes another tool filed under their sha256 in records/: `cirrus log` used to crash with
    an AttributeError, and commits after staging."""
    import hashlib

    from cirrus.repair import repair_summary

    (seg,) = layers(tmp_path, "seg")
    write([seg], ["microscope"], "first", "segment")
    (first,) = cirrus.history(seg)
    stray = json.dumps({**first.record.to_json(), "notes": ["not a note"]}).encode()
    rid = hashlib.sha256(stray).hexdigest()
    _record_file(seg, rid).write_bytes(stray)
    summary_file = _layer_dir(seg) / "provenance"
    summary = json.loads(summary_file.read_text())
    pointer = {**summary["cirrus"]["records"][0], "id": rid}
    summary["cirrus"]["records"].append(pointer)
    summary_file.write_text(json.dumps(summary))
    history = cirrus.history(seg)
    (damaged,) = history.damaged
    assert damaged.id == rid and "is not a cirrus record" in damaged.problem
    assert "move it out of provenance.d/records/" in damaged.remedy
    write([seg], ["microscope"], "second", "segment")  # commits go on
    summary_file.write_text("{")  # and a repair leaves the stray file out
    assert repair_summary(seg)
    assert [s.record.notes[0]["text"] for s in cirrus.history(seg)] == ["first", "second"]


def test_verify_reports_a_stray_superseded_mark_that_hides_a_record(tmp_path: Path) -> None:
    from cirrus.verify import verify

    (seg,) = layers(tmp_path, "seg")
    write([seg], ["microscope"], "first", "segment")
    summary_file = _layer_dir(seg) / "provenance"
    summary = json.loads(summary_file.read_text())
    summary["cirrus"]["records"][0]["superseded_by"] = "x"
    summary_file.write_text(json.dumps(summary))
    assert list(cirrus.history(seg)) == []  # hidden, as a superseded finish is
    (problem,) = verify(seg).problems
    assert "superseded by x" in problem and "remove `superseded_by`" in problem


def test_repair_keeps_a_damaged_records_pointer_and_verify_calls_it_no_orphan(
    damaged: dict,
) -> None:
    from cirrus.repair import repair_summary
    from cirrus.verify import verify

    seg, bad = damaged["seg"], damaged["ids"][1]
    summary_file = _layer_dir(seg) / "provenance"
    summary = json.loads(summary_file.read_text())
    summary["owners"] = "lab"  # malformed, but its pointers are still readable
    summary_file.write_text(json.dumps(summary))
    assert repair_summary(seg)
    history = cirrus.history(seg)
    assert [d.id for d in history.damaged] == [bad] and [e.id for e in history.entries] == (
        damaged["ids"]
    )
    problems = verify(seg).problems
    assert len(problems) == 1 and bad in problems[0] and "orphan" not in problems[0]


def test_a_summary_rewritten_from_a_stale_copy_is_flagged_until_recovered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain CloudVolume saves `provenance` from the copy it read when opened, after a cirrus
    commit: the record is still stored, but the summary no longer names it. The history must
    not look empty and clean (once the record is older than a commit takes to publish)."""
    import datetime as dt

    from cloudvolume import CloudVolume

    import cirrus.reading

    (seg,) = layers(tmp_path, "seg")
    stale = CloudVolume(seg)  # reads the summary now, before the commit
    record_id = write([seg], ["gs://lab/aff"], "segment it", "segment")[seg]
    stale.provenance.processing.append({"method": "manual edit"})
    stale.commit_provenance()  # a blind rewrite from the stale copy
    assert cirrus.history(seg).unpublished == []  # just staged: it may be being published

    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=2)
    monkeypatch.setattr(cirrus.reading, "utcnow", lambda: later)
    found = cirrus.history(seg)
    assert list(found) == [] and found.unpublished == [record_id]
    assert found.to_json()["unpublished"] == [record_id]
    assert f"UNPUBLISHED: 1 record(s) stored here are not in the summary ({record_id[:12]})" in (
        str(found)
    )
    assert "UNPUBLISHED" in found._repr_html_()
    with pytest.raises(IntegrityError, match="not in the summary") as raised:
        found.raise_if_damaged()
    assert "cirrus recover PATH" in raised.value.remedy
    result = invoke("log", seg, code=3)
    assert "UNPUBLISHED: 1 record(s)" in result.output
    shown = invoke("show", seg, record_id[:12]).output
    assert shown.startswith("NOT PUBLISHED: the summary does not name this record")
    assert f"`cirrus recover {seg}` publishes it" in shown

    cirrus.recover(seg)
    assert not invoke("show", seg, record_id[:12]).output.startswith("NOT PUBLISHED")
    found = cirrus.history(seg)
    assert [r.id for r in found] == [record_id] and found.unpublished == []
    invoke("log", seg)


def test_a_record_of_a_session_still_committing_is_not_flagged(tmp_path: Path) -> None:
    """Staged, not published yet, and its session still listed as writing: a commit under
    way (or one `cirrus log` already shows as an open session), not a lost record."""
    from tests.session_support import chunk_of, hooked

    (seg,) = layers(tmp_path, "seg")

    class Stop(Exception):
        pass

    def stop(_cloudpath: str, key: str) -> None:
        if key.startswith("provenance.d/records/"):
            raise Stop

    s = cirrus.session(["gs://lab/aff"], "why", cirrus.Process("p", {}))
    s.volume(seg)[0:64, 0:64, 0:64] = chunk_of(1)
    with hooked(after=stop), pytest.raises(Stop):
        s.commit()
    found = cirrus.history(seg)
    assert found.unpublished == [] and list(found.open_sessions) == [s.id]
    s.abort("stopped by the test")
