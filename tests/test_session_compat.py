"""What a session writes stays readable by CloudVolume, provenance-toolbox 0.1.5 and cirrus-volume
0.1.10, and what others wrote before is kept untouched."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import warnings

import pytest

import cirrus
from cirrus.errors import InvalidInput
from cirrus.storage.paths import normalise_cloudpath
from tests.session_support import (
    StaticEnv,
    chunk_of,
    make_layer,
    plain,
    process,
    put_raw,
    raw_summary,
    summary_json,
)

MOTIVATION = "find the merge errors"
ODD_MOTIVATION = "find; the\nmerge errors ; again"
PARAMETERS = {"threshold": 0.5, "sizes": (1, 2), "nested": {"b": 1, "a": [True, None]}}


def run(path: str, sources, motivation: str, proc, value: int = 1, result: str | None = None):
    with cirrus.session(sources, motivation, proc) as s:
        s.volume(path)[0:64, 0:64, 0:64] = chunk_of(value)
        if result:
            s.result(result)
    return s


@pytest.fixture
def layer(tmp_path) -> str:
    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    make_layer(path)
    return path


def test_cloudvolume_reads_sources_processing_and_notes(layer):
    proc = cirrus.Process("watershed", PARAMETERS, StaticEnv())
    run(layer, ["gs://lab/aff", "tracer annotation"], MOTIVATION, proc, result="2.1M segments")
    provenance = plain(layer).provenance
    assert list(provenance.sources) == ["gs://lab/aff", "tracer annotation"]
    (entry,) = provenance.processing
    assert entry["task"] == "watershed"
    assert entry["parameters"] == json.loads(json.dumps(PARAMETERS))
    assert len(entry["code_envfiles"]) == 1
    assert entry["code_envfiles"][0].startswith("provenance.d/envs/")
    assert f";MOTIVATION;{MOTIVATION}" in provenance.description
    assert ";RESULT;2.1M segments" in provenance.description


def test_provenance_toolbox_sees_our_process_and_parses_our_notes(layer):
    import provenancetoolbox as ptb

    proc = cirrus.Process("watershed", PARAMETERS)
    run(layer, ["src"], ODD_MOTIVATION, proc, result="done; really")
    run(layer, ["src"], MOTIVATION, proc)
    vol = plain(layer)
    same = ptb.Process("watershed", json.loads(json.dumps(PARAMETERS)))
    assert ptb.process_absent(vol, same) is False
    assert ptb.process_absent(vol, ptb.Process("watershed", {"threshold": 0.6})) is True
    notes = ptb.parsenotes(vol)
    kinds = [note.note_type for note in notes]
    assert kinds == [
        ptb.NoteType.MOTIVATION,
        ptb.NoteType.RESULT,
        ptb.NoteType.MOTIVATION,
    ]
    # written as provenance-toolbox writes its own (no zone; UTC), so a lab's mixed notes sort
    ptb.addgeneric(vol, "added by provenance-toolbox")
    mixed = ptb.parsenotes(plain(layer))
    assert sorted(note.timestamp for note in mixed)  # naive and aware mixed: TypeError
    recorded = cirrus.history(layer)[0].record.notes[0]["time"]
    assert notes[0].timestamp == dt.datetime.fromisoformat(recorded).replace(tzinfo=None)
    # a ';' or a newline in the text does not break the old parser; the text stays recognisable
    assert "find" in notes[0].content and "again" in notes[0].content
    assert "\n" not in notes[0].content and ";" not in notes[0].content
    assert notes[2].content == MOTIVATION
    assert ptb.note_absent(vol, MOTIVATION, ptb.NoteType.MOTIVATION) is False
    # the record keeps the text exactly as given
    texts = [h.record.notes[0]["text"] for h in cirrus.history(layer)]
    assert texts == [ODD_MOTIVATION, MOTIVATION]


def test_cirrus_volume_finds_everything_documented_and_writes_no_provenance(layer):
    import cirrusvolume
    import provenancetoolbox as ptb
    from cirrusvolume import rules

    run(layer, ["gs://lab/aff"], MOTIVATION, cirrus.Process("watershed", PARAMETERS))
    before = raw_summary(layer)
    vol = plain(layer)
    ptb_process = ptb.Process("watershed", json.loads(json.dumps(PARAMETERS)))
    rules.check_writing_rules(["gs://lab/aff"], MOTIVATION, ptb_process)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rules.documentvolume(vol, ["gs://lab/aff"], MOTIVATION, ptb_process)
        # and its CloudVolume writes data without touching the provenance either
        old = cirrusvolume.CloudVolume(
            layer, sources=["gs://lab/aff"], motivation=MOTIVATION, process=ptb_process
        )
        old[64:128, 0:64, 0:64] = chunk_of(5)
    assert any("already logged" in str(w.message) for w in caught)
    assert raw_summary(layer) == before
    assert (plain(layer)[64:128, 0:64, 0:64] == 5).all()


def test_cirrus_keeps_working_after_cirrus_volume_wrote_the_provenance(layer):
    import cirrusvolume
    import provenancetoolbox as ptb

    run(layer, ["gs://lab/aff"], MOTIVATION, cirrus.Process("watershed", {"t": 1}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = cirrusvolume.CloudVolume(
            layer,
            sources=["gs://old/source"],
            motivation="old tool",
            process=ptb.Process("old step", {"x": 1}),
        )
        old[64:128, 0:64, 0:64] = chunk_of(5)  # logs sources, a note and a process blindly
    run(layer, ["gs://new"], "new pass", cirrus.Process("watershed", {"t": 2}), value=2)
    summary = summary_json(layer)
    # cirrus-volume rewrites the sources as an unordered set; cirrus appends after them
    assert set(summary["sources"]) == {"gs://lab/aff", "gs://old/source", "gs://new"}
    assert summary["sources"][-1] == "gs://new"
    assert [entry["task"] for entry in summary["processing"]] == [
        "watershed",
        "old step",
        "watershed",
    ]
    assert ";MOTIVATION;old tool" in summary["description"]
    assert len(cirrus.history(layer)) == 2


def test_foreign_processing_entries_and_description_are_kept_untouched(layer):
    foreign = {
        "description": "Raw EM, aligned by hand",
        "owners": ["someone@lab.org"],
        "sources": ["gs://lab/raw"],
        "processing": [
            {
                "method": {"task": "DownsampleTask", "mip": 0, "num_mips": 3},
                "by": "someone@lab.org",
                "date": "2021-03-04 10:11",
            },
            {"method": "downsample", "by": "igneous"},
        ],
        "extra": {"kept": True},
    }
    put_raw(layer, "provenance", json.dumps(foreign).encode())
    proc = cirrus.Process("watershed", {"t": 1})
    run(layer, ["gs://lab/raw", "gs://lab/aff"], MOTIVATION, proc)
    summary = summary_json(layer)
    assert summary["processing"][:2] == foreign["processing"]
    assert summary["processing"][2]["task"] == "watershed"
    assert summary["description"].startswith("Raw EM, aligned by hand \n ")
    assert summary["owners"] == ["someone@lab.org"]
    assert summary["sources"] == ["gs://lab/raw", "gs://lab/aff"]
    assert summary["extra"] == {"kept": True}
    provenance = plain(layer).provenance  # and CloudVolume still reads it
    assert list(provenance.sources) == ["gs://lab/raw", "gs://lab/aff"]


def test_a_process_is_logged_once_by_digest_not_by_description(layer):
    proc = cirrus.Process("watershed", {"t": 1})
    run(layer, ["a", "b"], MOTIVATION, proc)
    run(layer, ["c", "a"], MOTIVATION, cirrus.Process("watershed", {"t": 1}), value=2)
    summary = summary_json(layer)
    assert [entry["task"] for entry in summary["processing"]] == ["watershed"]
    assert summary["sources"] == ["a", "b", "c"]
    assert summary["description"].count(f";MOTIVATION;{MOTIVATION}") == 1
    assert len(cirrus.history(layer)) == 2

    # new parameters, or new code with the same parameters, is a new process
    run(layer, ["a"], MOTIVATION, cirrus.Process("watershed", {"t": 2}), value=3)
    run(layer, ["a"], MOTIVATION, cirrus.Process("watershed", {"t": 2}, StaticEnv("v2")))
    summary = summary_json(layer)
    assert [entry["parameters"] for entry in summary["processing"]] == [
        {"t": 1},
        {"t": 2},
        {"t": 2},
    ]
    digests = [entry["cirrus_process"] for entry in summary["processing"]]
    assert len(set(digests)) == 3
    assert [h.record.process["digest"] for h in cirrus.history(layer)] == [
        digests[0],
        digests[0],
        digests[1],
        digests[2],
    ]


def test_annotations_refuse_a_mistyped_path_before_writing(tmp_path) -> None:
    """A typo'd layer name would quietly collect the notes meant for the real volume."""
    typo = f"file://{tmp_path}/sgementation"
    process = cirrus.Process("p", {})
    for annotate, argument in (
        (cirrus.add_note, "x"),
        (cirrus.add_result, "x"),
        (cirrus.add_motivation, "x"),
        (cirrus.log_process, process),
    ):
        with pytest.raises(InvalidInput, match="is not a CloudVolume layer"):
            annotate(typo, argument)
    assert not os.path.exists(tmp_path / "sgementation")


def test_provenance_toolbox_calls_port_by_changing_the_import(tmp_path) -> None:
    """Its README's calls, `import provenancetoolbox as ptb` become `import cirrus as ptb`."""
    ptb = cirrus
    path = f"file://{tmp_path}/layer"
    make_layer(path)
    volume = plain(path)
    ptb.logprocess(volume, ptb.Process("Properly documenting a process", {"prudence": 1.0}))
    ptb.addmotivation(volume, "Bootstrapping: adding segments 19&34")
    ptb.addresult(volume, "Found more synapses")
    ptb.addgeneric(volume, "Bizarre output in slice 37")
    notes = [(n["kind"], n["text"]) for h in cirrus.history(path) for n in h.record.notes]
    assert notes == [
        ("motivation", "Bootstrapping: adding segments 19&34"),
        ("result", "Found more synapses"),
        ("generic", "Bizarre output in slice 37"),
    ]
    assert cirrus.history(path)[0].record.process["description"] == (
        "Properly documenting a process"
    )


def test_recover_and_abandon_dead_refuse_a_mistyped_path(tmp_path) -> None:
    typo = f"file://{tmp_path}/nope"
    for call in (cirrus.recover, cirrus.abandon_dead):
        with pytest.raises(InvalidInput, match="is not a CloudVolume layer"):
            call(typo)


def test_annotations_and_recover_work_where_info_is_stored_compressed(tmp_path) -> None:
    """CloudFiles may store `info` brotli-compressed (`info.br`); CloudVolume reads it, and the
    layer check must not take it for a missing layer."""
    from cloudfiles import CloudFiles

    path = f"file://{tmp_path}/layer"
    make_layer(path)
    info = (tmp_path / "layer" / "info").read_bytes()
    os.remove(tmp_path / "layer" / "info")
    CloudFiles(path).put("info", info, compress="br")
    assert plain(path).info["scales"]  # CloudVolume reads it
    record_id = cirrus.add_note(path, "checked by hand")
    assert cirrus.recover(path) == {}
    assert [stored.id for stored in cirrus.history(path)] == [record_id]


def test_from_numpy_makes_a_recorded_layer_and_never_overwrites_one(tmp_path) -> None:
    """cirrus-volume had `CloudVolume.from_numpy`: a new layer from an array, recorded in one
    session (CloudVolume's own overwrites `provenance` blindly)."""
    import numpy as np
    from cloudvolume import CloudVolume

    path = normalise_cloudpath(f"file://{tmp_path}/fromnp")
    labels = np.arange(64 * 64 * 32, dtype=np.uint32).reshape(64, 64, 32)
    why = {"sources": ["gs://lab/aff"], "motivation": "seed a toy segmentation"}
    with pytest.raises(InvalidInput, match="process must be a cirrus.Process"):
        cirrus.CloudVolume.from_numpy(labels, path, process=None, **why)
    assert not (tmp_path / "fromnp").exists()  # refused before anything was written
    with pytest.raises(InvalidInput, match="cannot be stored with encoding='jpeg'.*Only accepts"):
        cirrus.CloudVolume.from_numpy(labels, path, encoding="jpeg", process=process(), **why)
    assert not (tmp_path / "fromnp").exists()  # so a retry with another encoding may make it
    assert importlib.util.find_spec("fpzip") is None, "this needs an optional codec not installed"
    with pytest.raises(
        InvalidInput,
        match="encoding='fpzip' needs a codec that is not installed.*pip install fpzip",
    ):
        cirrus.CloudVolume.from_numpy(
            labels.astype(np.float32), path, encoding="fpzip", process=process(), **why
        )
    assert not (tmp_path / "fromnp").exists()

    volume = cirrus.CloudVolume.from_numpy(
        labels, path, resolution=(8, 8, 40), chunk_size=(32, 32, 16), process=process(), **why
    )
    plain_volume = CloudVolume(path, progress=False)
    assert plain_volume.layer_type == "segmentation" and plain_volume.resolution.tolist() == [
        8,
        8,
        40,
    ]
    assert (plain_volume[:, :, :][..., 0] == labels).all()
    (stored,) = cirrus.history(path)
    assert stored.record.status == "committed" and stored.record.sources == ("gs://lab/aff",)
    assert stored.record.writes["mips"]["0"]["chunks"] == 8
    assert [e.get("method") for e in summary_json(path)["processing"]] == [None]  # no blind entry

    volume[0:32, 0:32, 0:16] = np.zeros((32, 32, 16), np.uint32)  # later writes are recorded too
    volume.commit()
    assert len(cirrus.history(path)) == 2

    with pytest.raises(InvalidInput, match="is a layer already"):
        cirrus.CloudVolume.from_numpy(labels, path, process=process(), **why)
    assert len(cirrus.history(path)) == 2 and (CloudVolume(path)[0:1, 0:1, 0:1] == 0).all()
