"""`cirrus lineage` says what `cirrus log` says of what is not recorded whole: PATH's own
unreadable summary is an error, sessions killed before they committed show with their sources,
records the summary lost are UNPUBLISHED; and it exits 3 where log does.

Real file:// layers under tmp_path, written by real sessions; damage done as a hand edit, a
killed process or a stale plain-CloudVolume rewrite would do it.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

import cirrus
from tests.cli_support import invoke, layers, write


def _layer_dir(path: str) -> Path:
    return Path(path[len("file://") :])


def test_an_unreadable_summary_on_path_is_an_error_naming_the_fix(tmp_path: Path) -> None:
    (seg,) = layers(tmp_path, "seg")
    write([seg], ["microscope"])
    (_layer_dir(seg) / "provenance").write_text("[]")
    log = invoke("log", seg, code=3)
    result = invoke("lineage", seg, code=3)
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line == log.stderr.strip()  # the same error as `cirrus log`
    assert "is a JSON list, not an object" in line and "`cirrus repair PATH`" in line
    invoke("lineage", seg, "--format", "json", code=3)


def test_an_unreadable_ancestor_is_a_leaf_with_its_fix_then_exit_3(tmp_path: Path) -> None:
    image, seg = layers(tmp_path, "image", "seg")
    write([image], ["microscope"])
    write([seg], [image, "notes"])
    (_layer_dir(image) / "provenance").write_text("{not json")
    result = invoke("lineage", seg, code=3)
    assert f"{image}  [unreadable: {image}/provenance is not valid JSON" in result.stdout
    assert f"run `cirrus repair {image}`]" in result.stdout
    assert '"notes"  (free text)' in result.stdout  # the rest is shown
    assert f"could not be read: {image}" in result.stderr
    tree = json.loads(invoke("lineage", seg, "--format", "json", code=3).stdout)
    assert tree["sources"][0]["kind"] == "unreadable"


def _killed_session(path: str, sources: list[str]) -> cirrus.Session:
    """A session that wrote `path` and never committed, as after a SIGKILL."""
    s = cirrus.session(sources, "killed early", cirrus.Process("paint", {}))
    s.volume(path)[0:64, 0:64, 0:64] = np.ones((64, 64, 64), np.uint8)
    s._finalizer.detach()  # no warning, no commit
    return s


def test_a_volume_written_only_by_a_killed_session_shows_its_sources(tmp_path: Path) -> None:
    image, seg = layers(tmp_path, "image", "seg")
    write([image], ["microscope"])
    s = _killed_session(seg, [image, "brush strokes"])
    assert f"OPEN SESSION {s.id[:12]}" in invoke("log", seg).output
    out = invoke("lineage", seg).output  # as log: exit 0, the session may still be running
    first, *rest = out.splitlines()
    assert first == f"{seg}  (0 record(s), 1 open session(s): not committed, not recorded yet)"
    how = f"<- paint (open session {s.id[:12]}: not recorded yet)"
    assert f"{image}  (1 record(s)" in rest[0] and rest[0].endswith(how)
    assert any('"brush strokes"  (free text)' in line and line.endswith(how) for line in rest)
    assert "no provenance recorded" not in out
    assert json.loads(invoke("lineage", seg, "--format", "json").stdout)["open_sessions"] == 1


def test_an_unpublished_record_is_shown_with_its_sources_and_exits_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cloudvolume import CloudVolume

    import cirrus.reading

    image, seg = layers(tmp_path, "image", "seg")
    write([image], ["microscope"])
    stale = CloudVolume(seg)  # reads the summary now, before the commit
    record_id = write([seg], [image], description="segment")[seg]
    stale.commit_provenance()  # a blind rewrite from the stale copy
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=2)
    monkeypatch.setattr(cirrus.reading, "utcnow", lambda: later)

    invoke("log", seg, code=3)
    result = invoke("lineage", seg, code=3)
    first, second, *_ = result.stdout.splitlines()
    assert first == f"{seg}  (0 record(s), 1 UNPUBLISHED: run cirrus recover)"
    assert f"{image}  (1 record(s)" in second
    assert second.endswith(f"<- segment (UNPUBLISHED record {record_id[:12]})")
    assert f"records stored but not in the summary on 1 volume(s): {seg} (1)" in result.stderr
    assert "cirrus recover PATH" in result.stderr

    cirrus.recover(seg)
    out = invoke("lineage", seg).output
    assert out.splitlines()[1].endswith("<- segment")


def test_lineage_reads_each_record_once_when_nothing_is_amiss(tmp_path: Path) -> None:
    """What lineage costs per volume: the summary, its records once, one LIST of the records
    (for unpublished ones); no second read of the summary or of a record."""
    from cirrus.storage import wrap_backends
    from tests.session_support import KeyCounter, KeyCountingBackend

    image, seg = layers(tmp_path, "image", "seg")
    write([image], ["microscope"])
    for i in range(3):
        write([seg], [image], description=f"pass {i}")
    keys = KeyCounter()
    with wrap_backends(lambda backend: KeyCountingBackend(backend, keys)):
        invoke("lineage", seg)
    for layer, records in ((seg, 3), (image, 1)):
        assert keys.count(layer, "get", "records") == records
        assert keys.count(layer, "list", "records") == 1
    assert keys.count(image, "get", "summary") == 1  # seg's: once more, as PATH's check
