"""Sources as recorded, and as `cirrus lineage` and `cirrus export` follow them: a `file://`
source is resolved when it is recorded, every spelling of a layer is one source, and the
sources another tool listed in the summary are followed after cirrus writes there too.

Real file:// layers under tmp_path, written by real sessions (and by plain CloudVolume, as a
tool before cirrus would).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import cirrus
from tests.cli_support import invoke, layers, write


@pytest.fixture
def wk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory of the walkthrough: layers a, b, c and rel, $HOME beside them."""
    layers(tmp_path, "a", "b", "c", "rel")
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _sources(path: str) -> list[str]:
    (stored,) = cirrus.history(path)
    return list(stored.record.sources)


def test_file_sources_are_resolved_when_recorded_and_read_the_same_from_anywhere(
    wk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rel = f"file://{wk}/rel"
    given = [
        "file://a",
        "file://~/../b",  # $HOME is wk/home
        "precomputed://file://c/",
        "manual annotation",
        "https://example.org/aff/?X-Amz-Signature=REDACTED",  # remote: exactly as given
        "mem://lab/aff/",
        "file://a and file://b merged by hand",  # text that starts like a cloudpath
        "see file://a",
        "gs://",  # cloudpath-looking, not one CloudVolume opens: kept, not refused
        "foo://bar",
    ]
    write([rel], given)
    assert _sources(rel) == [
        f"file://{wk}/a",
        f"file://{wk}/b",
        f"file://{wk}/c",
        *given[3:],
    ]
    assert json.loads((wk / "rel" / "provenance").read_text())["sources"][:3] == [
        f"file://{wk}/{name}" for name in "abc"
    ]  # what CloudVolume reads names the layers too

    monkeypatch.chdir("/")
    monkeypatch.setenv("HOME", "/nonexistent")
    out = invoke("lineage", rel, "--depth", "1").output
    for name in "abc":
        assert f"file://{wk}/{name}  (0 record(s), no provenance recorded)" in out
    assert '"file://a and file://b merged by hand"  (free text)' in out
    assert '"see file://a"  (free text)' in out
    assert "gs://  [not followed: " in out and "foo://bar  [not followed: " in out
    assert "https://example.org/aff/?X-Amz-Signature=REDACTED  [not followed: " in out
    assert "mem://lab/aff  (0 record(s), no layer here" in out


def test_steps_and_the_compat_volume_resolve_file_sources_too(wk: Path) -> None:
    a, rel = f"file://{wk}/a", f"file://{wk}/rel"
    step = cirrus.step(["file://a/"], "tasks", cirrus.Process("p", {}), [rel])
    with cirrus.join(step.token, task="t0") as task:
        task.volume(rel)[0:64, 0:64, 0:64] = np.ones((64, 64, 64), np.uint8)
    step.finish()
    assert _sources(rel) == [a]

    volume = cirrus.CloudVolume(
        f"file://{wk}/b", sources=["file://~/../a"], motivation="m", process=cirrus.Process("q", {})
    )
    volume[0:64, 0:64, 0:64] = np.ones((64, 64, 64), np.uint8)
    volume.commit()
    assert _sources(f"file://{wk}/b") == [a]


def test_a_relative_source_recorded_before_is_not_resolved_against_the_reader(
    wk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records written before cirrus resolved sources keep `file://a`: lineage and export say
    it cannot be followed rather than pick whatever `a` is where they run."""
    import cirrus.demands

    rel = f"file://{wk}/rel"
    with monkeypatch.context() as old:
        old.setattr(cirrus.demands, "recorded_source", lambda source: source)
        write([rel], ["file://a"])
    assert _sources(rel) == ["file://a"]
    for where in (wk, Path("/")):
        monkeypatch.chdir(where)
        out = invoke("lineage", rel).output
        assert "file://a  [not followed: 'file://a' is a relative file:// path" in out
    entities = json.loads(invoke("export", rel).stdout)["entity"]
    assert [e["prov:label"] for e in entities.values()].count("file://a") == 1


def test_a_bare_absolute_path_is_the_layer_it_names(wk: Path) -> None:
    """CloudVolume opens `/data/c` as `file:///data/c`: lineage follows it and export names it
    as that layer's own export does; a relative or spaced path is text."""
    c, rel = f"file://{wk}/c", f"file://{wk}/rel"
    write([c], ["microscope"])
    write([rel], [f"{wk}/c/", "c", f"{wk}/c and more"])
    assert _sources(rel) == [f"{wk}/c/", "c", f"{wk}/c and more"]  # kept as given
    out = invoke("lineage", rel).output
    assert out.count(f"{c}  (1 record(s)") == 1
    assert '"microscope"  (free text)' in out
    assert '"c"  (free text)' in out and f'"{wk}/c and more"  (free text)' in out
    own = json.loads(invoke("export", c).stdout)["entity"]
    (c_id,) = [key for key, entity in own.items() if entity.get("prov:label") == c]
    document = json.loads(invoke("export", rel).stdout)
    assert document["entity"][c_id]["prov:label"] == c


def test_two_spellings_of_one_layer_are_one_source(wk: Path) -> None:
    c, rel = f"file://{wk}/c", f"file://{wk}/rel"
    write([c], ["microscope"])
    spellings = ["mem://bucket/layer/", "precomputed://mem://bucket/layer", f"{wk}/c", c + "/"]
    write([rel], spellings, description="merge")
    out = invoke("lineage", rel).output
    assert out.count("mem://bucket/layer  (0 record(s)") == 1
    assert out.count(f"{c}  (1 record(s)") == 1 and out.count("<- merge") == 2

    document = json.loads(invoke("export", rel).stdout)
    assert len(document["used"]) == 2 and len(document["wasDerivedFrom"]) == 2
    labels = [e.get("prov:label") for e in document["entity"].values()]
    assert labels.count("mem://bucket/layer") == 1 and labels.count(c) == 1


@pytest.fixture
def old(wk: Path) -> str:
    """`old`, made by plain CloudVolume before cirrus: its summary lists two sources."""
    from cloudvolume import CloudVolume

    (path,) = layers(wk, "old")
    volume = CloudVolume(path, progress=False)
    volume.provenance.sources = [f"file://{wk}/a/", "mem://other/thing"]
    volume.provenance.processing.append({"method": {"task": "DownsampleTask"}, "by": "igneous"})
    volume.commit_provenance()
    return path


def test_sources_other_tools_listed_are_followed_after_a_cirrus_write(wk: Path, old: str) -> None:
    a = f"file://{wk}/a"
    write([old], ["manual edits"], description="proofread")
    out = invoke("lineage", old).output
    assert '"manual edits"  (free text)  <- proofread' in out
    assert f"{a}  (0 record(s), no provenance recorded)  <- listed in the summary by another" in out
    assert "mem://other/thing  (0 record(s)" in out
    log = invoke("log", old).output
    others = log[log.index("written by other tools") :]
    assert f"{a}/" in others and "mem://other/thing" in others and "manual edits" not in others
    assert json.loads(invoke("log", old, "--json").stdout)["other_tools"]["sources"] == [
        f"{a}/",
        "mem://other/thing",
    ]


def test_export_carries_the_sources_other_tools_listed_as_theirs(wk: Path, old: str) -> None:
    a = f"file://{wk}/a"

    def derivations(document: dict) -> dict[str, dict]:
        labels = {key: e.get("prov:label") for key, e in document["entity"].items()}
        return {labels[d["prov:usedEntity"]]: d for d in document["wasDerivedFrom"].values()}

    before = derivations(json.loads(invoke("export", old).stdout))
    assert set(before) == {a, "mem://other/thing"}
    for derivation in before.values():
        assert "prov:activity" not in derivation
        assert derivation["cirrus:listedIn"] == "summary"
        assert derivation["cirrus:recordedBy"] == "another tool"

    write([old], ["manual edits"], description="proofread")
    after = derivations(json.loads(invoke("export", old).stdout))
    assert set(after) == {a, "mem://other/thing", "manual edits"}
    assert (
        "prov:activity" in after["manual edits"] and "cirrus:listedIn" not in after["manual edits"]
    )
    assert after[a]["cirrus:listedIn"] == "summary"
