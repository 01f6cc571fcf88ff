"""cirrus.session: many volumes, many chunk writes, one record per volume, published once.

Real CloudVolume layers on real storage (file, mem, moto S3, fake GCS); storage requests are
counted with a pass-through backend wrapper, never mocked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

import cirrus
from cirrus.errors import InvalidInput, ParameterError, PermanentStorageError, SessionClosed
from cirrus.storage import wrap_backends
from cirrus.storage.paths import normalise_cloudpath
from tests.session_support import (
    CHUNK,
    KeyCounter,
    KeyCountingBackend,
    StaticEnv,
    chunk_files,
    chunk_of,
    chunk_origins,
    hooked,
    make_layer,
    plain,
    process,
    provenance_keys,
    put_raw,
    summary_json,
)

try:
    from cirrus.storage.faults import CountingBackend
except ImportError:  # pragma: no cover - the faults module is optional for these tests
    CountingBackend = None

BIG = (320, 320, 256)  # 5 x 5 x 4 = 100 chunks of 64^3


def three_layers(base: str) -> list[str]:
    paths = [normalise_cloudpath(f"{base}_{name}") for name in ("img", "seg", "aff")]
    for path in paths:
        make_layer(path, size=BIG)
    return paths


def test_three_volumes_hundreds_of_chunks_one_record_and_one_publish_each(layer_path):
    paths = three_layers(layer_path)
    origins = chunk_origins(BIG)
    assert len(origins) == 100
    proc = cirrus.Process("fill three layers", {"value": 7, "axes": ("x", "y")}, StaticEnv())
    counter: Counter[str] = Counter()
    keys = KeyCounter()

    def wrapper(backend):
        counted = KeyCountingBackend(backend, keys)
        return CountingBackend(counted, counter) if CountingBackend else counted

    with (
        wrap_backends(wrapper),
        cirrus.session(sources=["gs://lab/aff", "tracing"], motivation="m1", process=proc) as s,
    ):
        handles = [s.volume(path, progress=False) for path in paths]
        # opening a volume reads its summary once, to refuse a malformed one before any write
        assert keys.calls == {(path, "get", "summary"): 1 for path in paths}
        keys.calls.clear()
        for v, handle in enumerate(handles):
            for i, (x, y, z) in enumerate(origins):
                handle[x : x + CHUNK, y : y + CHUNK, z : z + CHUNK] = chunk_of(v * 100 + i)
        s.result("300 chunks written")
        # 300 chunk writes cost two provenance requests per volume, before the first: the code
        # environment, and the summary listing the session as writing there (both created
        # here: the layers are fresh); none after
        assert keys.calls == {
            (path, "put_new", kind): 1 for path in paths for kind in ("envs", "summary")
        }
        for path in paths:
            assert list(summary_json(path)["cirrus"]["open_sessions"]) == [s.id]

    # one record per volume, one publish (compare-and-swap of `provenance`) per volume, which
    # starts from the summary the session stored: no read
    assert set(s.records) == set(paths)
    for path in paths:
        assert keys.count(path, "put_new", "records") == 1
        assert keys.count(path, "put_if_match", "summary") == 1
        assert keys.count(path, "get", "summary") == 1  # opening the volume
        assert keys.count(path, "put_new", "envs") == 1
        # total provenance traffic per volume is a handful, not proportional to the chunks
        assert keys.count(path) <= 8, keys.calls
        assert "open_sessions" not in summary_json(path)["cirrus"]  # the record replaced it
    # the commit point: one journal of the three records, on the volume written first
    assert [keys.count(path, "put_new", "journals") for path in paths] == [1, 0, 0]
    if CountingBackend:  # 3 x (env, record, open mark, publish) + the journal
        assert counter["put_new"] + counter["put_if_match"] == 13
        assert counter["put_if_match"] == 3

    for path in paths:
        history = cirrus.history(path)
        assert [stored.id for stored in history] == [s.records[path]]
        record = history[0].record
        assert record.status == "committed"
        assert record.session == s.id
        assert record.sources == ("gs://lab/aff", "tracing")
        assert record.process["digest"] == proc.digest
        assert record.process["parameters"] == {"value": 7, "axes": ["x", "y"]}
        assert len(record.process["envs"]) == 1
        assert sorted(record.siblings) == sorted(p for p in paths if p != path)
        assert [(n["kind"], n["text"]) for n in record.notes] == [
            ("motivation", "m1"),
            ("result", "300 chunks written"),
        ]
        writes = record.writes
        assert writes["operations"] == {"upload": 100}
        assert writes["mips"] == {
            "0": {
                "bounds": [0, 0, 0, *BIG],
                "boxes": [[0, 0, 0, *BIG]],
                "chunks": 100,
                "bytes": 100 * CHUNK**3,
            }
        }
        assert len(writes["info"]) == 1
        # the summary points to the record, and readers see sources and the process
        summary = summary_json(path)
        assert [entry["id"] for entry in summary["cirrus"]["records"]] == [s.records[path]]
        assert summary["sources"] == ["gs://lab/aff", "tracing"]
        assert [entry["task"] for entry in summary["processing"]] == ["fill three layers"]

    # the data is really in the volumes: read back with plain CloudVolume
    for v, path in enumerate(paths):
        data = plain(path)[:, :, :][..., 0]
        for i, (x, y, z) in enumerate(origins[:: 7 if v else 1]):
            i = i * (7 if v else 1)
            block = data[x : x + CHUNK, y : y + CHUNK, z : z + CHUNK]
            assert (block == (v * 100 + i) % 251).all(), (path, x, y, z)


def test_a_repeat_session_costs_three_requests_per_volume(layer_path):
    """Writing and committing: the open mark's swap before the first write (from the summary
    read when the volume was opened), the record's create and the publishing swap, which starts
    from the summary the mark stored. No LIST: nobody else is listed, so no orphan can exist.
    The code environment is not written again once the summary names it. One journal of the
    session's records, on the first volume, is its commit point."""
    paths = three_layers(layer_path)
    proc = cirrus.Process("fill", {"value": 1}, StaticEnv())
    for round_ in range(2):
        keys = KeyCounter()
        with cirrus.session(["src"], f"round {round_}", proc) as s:
            handles = [s.volume(path, progress=False) for path in paths]
            with wrap_backends(lambda backend, keys=keys: KeyCountingBackend(backend, keys)):
                for handle in handles:
                    handle[0:CHUNK, 0:CHUNK, 0:CHUNK] = chunk_of(round_)
                s.commit()
        for path in paths:
            assert keys.count(path, "put_new", "envs") == (1 if round_ == 0 else 0)
            assert keys.count(path, "get", "summary") == 0, keys.calls
            assert keys.count(path, "put_new", "records") == 1
            assert keys.count(path, "list") == 0
            swaps = keys.count(path, "put_if_match", "summary") + keys.count(
                path, "put_new", "summary"
            )
            assert swaps == 2  # listed as writing, then the record
            journal = int(path == paths[0])  # the commit point, on the volume written first
            assert keys.count(path, "put_new", "journals") == journal
            assert keys.count(path) == (4 if round_ == 0 else 3) + journal, keys.calls
    for path in paths:
        history = cirrus.history(path)
        assert [r.record.notes[0]["text"] for r in history] == ["round 0", "round 1"]
        env = history[1].record.process["envs"][0]
        assert cirrus.ledger.Ledger.open(path).read_env(env)  # named, stored, verified


def test_a_commit_looks_for_orphans_while_another_session_is_listed(layer_path):
    """Another session listed on the volume may have died mid-commit: the commit lists the
    records once to roll such a record forward. Once that session ends, commits stop listing."""
    (path, *_) = three_layers(layer_path)
    other = cirrus.session(["src"], "still writing", process("other"))
    other.volume(path, progress=False)[0:CHUNK, 0:CHUNK, 0:CHUNK] = chunk_of(1)

    def commit_counting(note: str) -> KeyCounter:
        keys = KeyCounter()
        with cirrus.session(["src"], note, process()) as s:
            handle = s.volume(path, progress=False)
            with wrap_backends(lambda backend: KeyCountingBackend(backend, keys)):
                handle[0:CHUNK, 0:CHUNK, 0:CHUNK] = chunk_of(2)
                s.commit()
        return keys

    assert commit_counting("beside a listed session").count(path, "list", "records") == 1
    other.commit()
    assert commit_counting("alone again").count(path, "list") == 0
    notes = [stored.record.notes[0]["text"] for stored in cirrus.history(path)]
    assert notes == ["still writing", "beside a listed session", "alone again"]


def test_a_summary_pointer_does_not_grow_with_the_volumes_of_its_session(tmp_path):
    """The record names the session's other volumes; the summary, which every commit on the
    volume reads and rewrites, points to it with a few fixed fields only."""
    paths = [normalise_cloudpath(f"file://{tmp_path}/v{i:02d}") for i in range(12)]
    for path in paths:
        make_layer(path, size=(64, 64, 64))
    with cirrus.session(["src"], "wide", process()) as s:
        for path in paths:
            s.volume(path, progress=False)[0:CHUNK, 0:CHUNK, 0:CHUNK] = chunk_of(1)
    for path in paths:
        (pointer,) = summary_json(path)["cirrus"]["records"]
        assert set(pointer) == {"id", "session", "status", "started", "ended", "process"}
        (stored,) = cirrus.history(path)
        assert sorted(stored.record.siblings) == sorted(set(paths) - {path})


def test_write_set_of_disjoint_regions_and_two_mips(tmp_path):
    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    make_layer(path, size=(256, 256, 128))
    with cirrus.session(["src"], "two regions", process()) as s:
        vol = s.volume(path, progress=False)
        vol.add_scale((2, 2, 1), chunk_size=[64, 64, 64])
        vol.commit_info()
        vol[0:128, 0:64, 0:64] = np.ones((128, 64, 64), np.uint8)
        vol[192:256, 192:256, 64:128] = np.full((64, 64, 64), 2, np.uint8)
        low = s.volume(path, mip=1, progress=False)
        low[0:64, 0:64, 0:64] = np.full((64, 64, 64), 3, np.uint8)
    writes = cirrus.history(path)[0].record.writes
    assert writes["operations"] == {"add_scale": 1, "info": 1, "upload": 3}
    assert writes["mips"]["0"] == {
        "bounds": [0, 0, 0, 256, 256, 128],
        "boxes": [[0, 0, 0, 128, 64, 64], [192, 192, 64, 256, 256, 128]],
        "chunks": 3,
        "bytes": 3 * CHUNK**3,
    }
    assert writes["mips"]["1"]["chunks"] == 1
    assert writes["mips"]["1"]["bounds"] == [0, 0, 0, 64, 64, 64]
    # two handles on one layer in one session still make one record
    assert len(cirrus.history(path)) == 1
    assert (plain(path)[192:256, 192:256, 64:128] == 2).all()
    assert (plain(f"{path}")[0:128, 0:64, 0:64] == 1).all()


def test_write_set_counts_chunks_on_an_offset_grid_for_unaligned_multichannel_writes(tmp_path):
    from cloudvolume import CloudVolume

    path = normalise_cloudpath(f"file://{tmp_path}/offset")
    info = CloudVolume.create_new_info(
        num_channels=2,
        layer_type="image",
        data_type="uint8",
        encoding="raw",
        resolution=[4, 4, 40],
        voxel_offset=[10, 20, 30],
        volume_size=[192, 128, 64],
        chunk_size=[64, 64, 64],
    )
    CloudVolume(path, info=info, progress=False).commit_info()
    with cirrus.session(["src"], "offset grid", process()) as s:
        vol = s.volume(path, progress=False, non_aligned_writes=True, fill_missing=True)
        vol[10:74, 20:84, 30:94] = np.ones((64, 64, 64, 2), np.uint8)  # one chunk of the grid
        vol[100:150, 20:84, 30:94] = np.full((50, 64, 64, 2), 2, np.uint8)  # across two
    writes = cirrus.history(path)[0].record.writes
    assert writes["mips"]["0"] == {
        "bounds": [10, 20, 30, 150, 84, 94],
        "boxes": [[10, 20, 30, 74, 84, 94], [100, 20, 30, 150, 84, 94]],
        "chunks": 3,
        "bytes": (64 + 50) * 64 * 64 * 2,
    }
    assert (plain(path)[100:150, 20:84, 30:94] == 2).all()


# -- validation, before anything is written ----------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"sources": "gs://lab/aff"}, InvalidInput, ["sources", "list"]),
        ({"sources": []}, InvalidInput, ["sources", "empty"]),
        ({"sources": ["gs://a", 3]}, InvalidInput, ["sources[1]", "3"]),
        ({"sources": ["gs://a", ""]}, InvalidInput, ["sources[1]", "non-empty"]),
        ({"sources": ["  "]}, InvalidInput, ["sources[0]"]),
        ({"sources": None}, InvalidInput, ["sources"]),
        ({"motivation": ""}, InvalidInput, ["motivation"]),
        ({"motivation": "   "}, InvalidInput, ["motivation"]),
        ({"motivation": None}, InvalidInput, ["motivation"]),
        ({"process": "watershed"}, InvalidInput, ["process", "cirrus.Process", "str"]),
        ({"process": {"task": "x"}}, InvalidInput, ["process", "cirrus.Process", "dict"]),
    ],
)
def test_invalid_session_arguments_are_refused_before_any_write(tmp_path, kwargs, error, words):
    path = f"file://{tmp_path}/layer"
    make_layer(path)
    arguments = {"sources": ["gs://lab/aff"], "motivation": "why", "process": process()}
    arguments.update(kwargs)
    with pytest.raises(error) as raised, cirrus.session(**arguments) as s:
        s.volume(path)[0:64, 0:64, 0:64] = chunk_of(1)
    for word in words:
        assert word in str(raised.value)
    assert provenance_keys(path) == []
    assert chunk_files(path) == []


@pytest.mark.parametrize(
    ("parameters", "words"),
    [
        ({"ids": {1, 2}}, ["parameters.ids", "set"]),
        ({"mask": np.zeros(3)}, ["parameters.mask", "ndarray", ".tolist()"]),
        ({"threshold": float("nan")}, ["parameters.threshold", "finite"]),
        ({"nested": {"f": object()}}, ["parameters.nested.f", "object"]),
        ({"by_mip": {1: "a"}}, ["parameters.by_mip", "key"]),
        ({"aws_secret_access_key": "AKIA..."}, ["secret"]),
    ],
)
def test_parameters_that_are_not_json_are_refused_before_any_write(tmp_path, parameters, words):
    path = f"file://{tmp_path}/layer"
    make_layer(path)
    with (
        pytest.raises(ParameterError) as raised,
        cirrus.session(["src"], "why", cirrus.Process("step", parameters)) as s,
    ):
        s.volume(path)[0:64, 0:64, 0:64] = chunk_of(1)
    for word in words:
        assert word in str(raised.value)
    assert isinstance(raised.value, InvalidInput)
    assert provenance_keys(path) == []
    assert chunk_files(path) == []


def test_sources_keep_order_without_duplicates(tmp_path):
    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    make_layer(path)
    with cirrus.session(["b", "a", "b", "c", "a"], "why", process()) as s:
        s.volume(path)[0:64, 0:64, 0:64] = chunk_of(1)
    assert cirrus.history(path)[0].record.sources == ("b", "a", "c")
    assert summary_json(path)["sources"] == ["b", "a", "c"]


# -- notebook style ------------------------------------------------------------------------------


def test_notebook_style_commit(tmp_path):
    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    make_layer(path)
    s = cirrus.session(sources=["src"], motivation="explore", process=process())
    vol = s.volume(path)
    vol[0:64, 0:64, 0:64] = chunk_of(5)
    s.note("looked fine")
    s.result("kept it")
    # until the commit no record exists; the summary lists the session as writing there
    assert provenance_keys(path) == ["provenance"]
    history = cirrus.history(path)
    assert list(history) == [] and list(history.open_sessions) == [s.id]
    assert history.open_sessions[s.id]["motivation"] == "explore"
    assert f"OPEN SESSION {s.id[:12]}" in str(history)
    ids = s.commit()
    assert ids == s.records == {path: cirrus.history(path)[0].id}
    notes = [(n["kind"], n["text"]) for n in cirrus.history(path)[0].record.notes]
    assert notes == [("motivation", "explore"), ("generic", "looked fine"), ("result", "kept it")]
    with pytest.raises(SessionClosed):
        s.commit()
    with pytest.raises(SessionClosed):
        s.volume(path)
    with pytest.raises(SessionClosed):
        s.result("too late")
    with pytest.raises(SessionClosed):  # closed is the problem, before what the reason is
        s.abort(123)


def test_a_session_whose_every_write_was_refused_is_not_left_listed_as_writing(tmp_path):
    from cloudvolume.exceptions import AlignmentError

    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    make_layer(path)  # 64^3 chunks
    with cirrus.session(["src"], "misaligned", process()) as s:
        vol = s.volume(path)
        with pytest.raises(AlignmentError):  # CloudVolume refuses it before writing
            vol[0:32, 0:32, 0:32] = np.ones((32, 32, 32), np.uint8)
        assert list(cirrus.history(path).open_sessions) == [s.id]  # listed before the attempt
    assert s.records == {} and s.touched == []
    history = cirrus.history(path)
    assert list(history) == [] and history.open_sessions == {}


def fail_first_summary_write(failed: list[str]):
    """A hook that fails the first write of a summary for good (recording that it did)."""

    def hook(cloudpath: str, key: str) -> None:
        if key == "provenance" and not failed:
            failed.append(key)
            raise PermanentStorageError("connection reset", cloudpath=cloudpath, key=key)

    return hook


def test_a_listing_whose_response_was_lost_is_cleared_when_nothing_was_written(tmp_path):
    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    make_layer(path)
    failed: list[str] = []
    with (
        hooked(after=fail_first_summary_write(failed)),  # it lands, then the caller is told no
        cirrus.session(["src"], "lost response", process()) as s,
    ):
        vol = s.volume(path)
        with pytest.raises(PermanentStorageError):  # the write is refused: no data goes out
            vol[0:64, 0:64, 0:64] = chunk_of(1)
        assert list(cirrus.history(path).open_sessions) == [s.id]  # but the listing landed
    assert failed and s.records == {}
    assert cirrus.history(path).open_sessions == {}
    assert (plain(path)[0:64, 0:64, 0:64] == 0).all()


def test_a_listing_that_failed_is_tried_again_before_the_next_write(tmp_path):
    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    make_layer(path)
    failed: list[str] = []
    with (
        hooked(before=fail_first_summary_write(failed)),  # refused before it lands
        cirrus.session(["src"], "listing retried", process()) as s,
    ):
        vol = s.volume(path)
        with pytest.raises(PermanentStorageError):
            vol[0:64, 0:64, 0:64] = chunk_of(1)  # refused: not listed, so not written
        assert cirrus.history(path).open_sessions == {}
        vol[0:64, 0:64, 0:64] = chunk_of(2)
        assert list(cirrus.history(path).open_sessions) == [s.id]  # listed this time
    assert failed and cirrus.history(path)[0].record.writes["operations"] == {"upload": 1}


def test_a_session_that_wrote_nothing_warns_that_its_notes_are_recorded_nowhere(caplog):
    with cirrus.session(["src"], "why", process()) as s:
        s.result("the important finding")
    assert s.records == {}
    assert "wrote to no volume, so its 1 note(s) (the important finding)" in caplog.text
    assert "cirrus.add_note(path, text)" in caplog.text


def test_notebook_style_abort_writes_a_failed_record(tmp_path):
    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    untouched = normalise_cloudpath(f"file://{tmp_path}/untouched")
    make_layer(path)
    make_layer(untouched)
    s = cirrus.session(sources=["src"], motivation="explore", process=process())
    s.volume(path)[0:64, 0:64, 0:64] = chunk_of(5)
    s.volume(untouched)  # opened, never written
    ids = s.abort("wrong parameters")
    (stored,) = cirrus.history(path)
    assert ids == {path: stored.id}
    assert stored.record.status == "failed"
    assert stored.record.error == {"type": "Aborted", "message": "wrong parameters"}
    assert stored.record.writes["operations"] == {"upload": 1}
    assert summary_json(path)["cirrus"]["records"][0]["status"] == "failed"
    assert provenance_keys(untouched) == []


@pytest.mark.parametrize("reason", [123, None, "", "  ", "bad \udcff"])
def test_an_abort_with_a_bad_reason_is_refused_and_leaves_the_session_able_to_end(tmp_path, reason):
    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    make_layer(path)
    s = cirrus.session(sources=["src"], motivation="explore", process=process())
    s.volume(path)[0:64, 0:64, 0:64] = chunk_of(5)
    with pytest.raises(InvalidInput, match="abort"):
        s.abort(reason)
    assert s.state == "open" and cirrus.history(path) == []
    s.abort("wrong parameters")
    assert s.state == "failed"
    assert cirrus.history(path)[0].record.error["message"] == "wrong parameters"


def test_an_exception_that_cannot_say_what_it_is_still_fails_the_session(tmp_path):
    """Its `__str__` raises: the record falls back to its repr, and the session still ends."""

    class Unprintable(Exception):
        def __str__(self) -> str:
            return self.missing  # AttributeError

    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    make_layer(path)
    with pytest.raises(Unprintable), cirrus.session(["src"], "why", process()) as s:
        s.volume(path)[0:64, 0:64, 0:64] = chunk_of(5)
        raise Unprintable()
    assert s.state == "failed"
    (stored,) = cirrus.history(path)
    assert stored.record.error == {"type": "Unprintable", "message": "Unprintable()"}
    assert not summary_json(path)["cirrus"].get("open_sessions")  # no longer listed as writing


def test_a_ctrl_c_in_the_body_is_recorded_as_an_interruption(tmp_path):
    """A bare KeyboardInterrupt has no text: the record says what happened, not its repr (one
    with a text keeps it)."""
    from cirrus.display import status_text
    from cirrus.model import error_message

    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    make_layer(path)
    with pytest.raises(KeyboardInterrupt), cirrus.session(["src"], "why", process()) as s:
        s.volume(path)[0:64, 0:64, 0:64] = chunk_of(5)
        raise KeyboardInterrupt
    (stored,) = cirrus.history(path)
    assert stored.record.error == {"type": "KeyboardInterrupt", "message": "interrupted (Ctrl-C)"}
    assert status_text(stored.record.to_json()) == "failed: KeyboardInterrupt: interrupted (Ctrl-C)"
    assert error_message(KeyboardInterrupt("stopped at chunk 3")) == "stopped at chunk 3"


def test_an_empty_session_records_nothing(tmp_path):
    path = f"file://{tmp_path}/layer"
    make_layer(path)
    with cirrus.session(["src"], "why", process()) as s:
        vol = s.volume(path, fill_missing=True)
        assert (vol[0:64, 0:64, 0:64] == 0).all()  # reads are not writes
    assert s.records == {}
    assert provenance_keys(path) == []


GC_SCRIPT = """
import gc, sys
import numpy as np
import cirrus
path, quiet = sys.argv[1], sys.argv[2]
def run():
    s = cirrus.session(["src"], "never committed", cirrus.Process("leak", {}))
    s.volume(path)[0:64, 0:64, 0:64] = np.ones((64, 64, 64), np.uint8)
    print("SESSION", s.id, flush=True)
    q = cirrus.session(["src"], "read only", cirrus.Process("leak", {}))
    q.volume(quiet, fill_missing=True)[0:64, 0:64, 0:64]
    print("QUIET", q.id, flush=True)
run()
gc.collect()
print("DONE", flush=True)
"""


def test_a_garbage_collected_session_with_unrecorded_writes_warns(tmp_path):
    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    quiet = normalise_cloudpath(f"file://{tmp_path}/quiet")
    make_layer(path)
    make_layer(quiet)
    result = subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-c", GC_SCRIPT, path, quiet],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
    )
    output = result.stdout
    assert result.returncode == 0, output
    ids = dict(
        line.split(" ", 1) for line in output.split("\n") if line[:1].isupper() and " " in line
    )
    warning = output.index("ResourceWarning")
    assert "never committed" in output
    assert path in output[warning:]
    assert ids["SESSION"] in output[warning:]
    assert ids["QUIET"] not in output[warning:]  # nothing written: nothing to warn about
    assert warning < output.index("DONE")  # when the session goes, not at exit
    assert provenance_keys(path) == ["provenance"]  # no record; the session is listed as open
    assert list(cirrus.history(path).open_sessions) == [ids["SESSION"].strip()]


# -- an exception in the body ----------------------------------------------------------------


def test_exception_in_body_records_failed_on_written_volumes_and_propagates(tmp_path):
    written = [normalise_cloudpath(f"file://{tmp_path}/w{i}") for i in range(2)]
    opened = normalise_cloudpath(f"file://{tmp_path}/opened")
    for path in [*written, opened]:
        make_layer(path)

    class Boom(RuntimeError):
        pass

    with (
        pytest.raises(Boom, match="disk full at chunk 3"),
        cirrus.session(["src"], "will fail", process()) as s,
    ):
        handles = [s.volume(path) for path in written]
        s.volume(opened)
        for i, handle in enumerate(handles):
            handle[0:64, 0:64, 0:64] = chunk_of(i)
        raise Boom("disk full at chunk 3")

    assert set(s.records) == set(written)
    for path in written:
        (stored,) = cirrus.history(path)
        assert stored.id == s.records[path]
        assert stored.record.status == "failed"
        assert stored.record.error == {"type": "Boom", "message": "disk full at chunk 3"}
        assert stored.record.writes["mips"]["0"]["chunks"] == 1
        assert summary_json(path)["cirrus"]["records"][0]["status"] == "failed"
    assert provenance_keys(opened) == []
    with pytest.raises(SessionClosed):
        s.commit()


def test_exception_before_any_write_records_nothing(tmp_path):
    path = f"file://{tmp_path}/layer"
    make_layer(path)
    with pytest.raises(KeyError), cirrus.session(["src"], "will fail", process()) as s:
        s.volume(path)
        raise KeyError("early")
    assert s.records == {}
    assert provenance_keys(path) == []


ATEXIT_SCRIPT = """
import atexit, sys
import numpy as np
import cirrus

s = cirrus.session(["src"], "committed at exit", cirrus.Process("late", {}))
for path in sys.argv[1:]:
    s.volume(path)[0:64, 0:64, 0:64] = np.full((64, 64, 64), 3, np.uint8)
atexit.register(s.commit)  # runs after threading's shutdown: no new thread may start
"""


def test_a_commit_over_several_volumes_at_interpreter_exit_runs_without_threads(tmp_path):
    """Frameworks commit from atexit handlers; by then the thread pool refuses new work, so the
    volumes are committed one after another instead of failing."""
    paths = [normalise_cloudpath(f"file://{tmp_path}/v{i}") for i in range(3)]
    for path in paths:
        make_layer(path)
    done = subprocess.run(
        [sys.executable, "-c", ATEXIT_SCRIPT, *paths], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    for path in paths:
        (stored,) = cirrus.history(path)
        assert stored.record.status == "committed"
        assert sorted(stored.record.siblings) == sorted(set(paths) - {path})


def test_a_summary_past_a_megabyte_warns_once_to_use_a_step(layer_path, caplog):
    path = normalise_cloudpath(layer_path)
    make_layer(path, size=(64, 64, 64))
    big = {"description": "x" * (1 << 20), "owners": [], "sources": [], "processing": []}
    put_raw(path, "provenance", json.dumps(big).encode())
    for motivation in ("first", "second"):
        with cirrus.session(["src"], motivation, process()) as s:
            s.volume(path, progress=False)[0:CHUNK, 0:CHUNK, 0:CHUNK] = chunk_of(1)
    warnings = [r.getMessage() for r in caplog.records if "and every commit here" in r.message]
    assert len(warnings) == 1 and "cirrus.step" in warnings[0]
    assert summary_json(path)["description"].startswith("x" * 100)
    assert len(cirrus.history(path)) == 2


def test_a_malformed_direct_upload_is_refused_before_writing_and_the_session_commits(tmp_path):
    from cloudvolume.lib import Vec

    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    make_layer(path, size=(128, 128, 64))
    with cirrus.session(["src"], "direct uploads", process()) as s:
        vol = s.volume(path, progress=False)
        with pytest.raises(InvalidInput, match="offset and an image of 3 or 4 axes"):
            vol.image.upload(np.ones((64, 64), np.uint8), Vec(0, 0, 0), 0)
        with pytest.raises(InvalidInput, match="got offset \\[0, 0\\]"):
            vol.image.upload(np.ones((64, 64, 64), np.uint8), [0, 0], 0)
        assert s.id not in cirrus.history(path).open_sessions  # refused before listing
        with pytest.raises(ValueError, match="data type must match"):
            vol[0:64, 64:128, 0:64] = np.ones((64, 64, 64), np.float32)  # CloudVolume refuses
        assert s.touched == []  # nothing was written, nothing is tallied
        vol[0:64, 0:64, 0:64] = chunk_of(3)
    assert [key for key in chunk_files(path) if not key.startswith(".")] == [
        "4_4_40/0-64_0-64_0-64"
    ]
    (stored,) = cirrus.history(path)
    assert stored.record.writes["mips"]["0"]["chunks"] == 1


def test_a_scale_without_voxel_offset_counts_from_zero(tmp_path):
    from cloudvolume import CloudVolume

    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    volume = make_layer(path, size=(128, 64, 64))
    del volume.info["scales"][0]["voxel_offset"]
    volume.commit_info()
    with cirrus.session(["src"], "no offset", process()) as s:
        s.volume(path, progress=False)[0:128, 0:64, 0:64] = np.ones((128, 64, 64), np.uint8)
    (stored,) = cirrus.history(path)
    assert stored.record.writes["mips"]["0"]["chunks"] == 2
    assert (CloudVolume(path, progress=False)[0:128, 0:64, 0:64] == 1).all()


def test_threads_writing_through_one_session_are_all_recorded(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from cloudvolume.exceptions import AlignmentError

    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    make_layer(path, size=(256, 256, 64))
    with cirrus.session(["src"], "threaded", process()) as s:
        shared = s.volume(path, progress=False)

        def write(row: int) -> None:
            own = s.volume(path, progress=False) if row % 2 else shared
            for x in range(0, 256, CHUNK):
                own[x : x + CHUNK, row * CHUNK : (row + 1) * CHUNK, 0:CHUNK] = chunk_of(row + 1)
            with pytest.raises(AlignmentError):  # refused by CloudVolume: taken back
                own[0:10, 0:CHUNK, 0:CHUNK] = np.zeros((10, CHUNK, CHUNK), np.uint8)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(write, range(4)))
    (stored,) = cirrus.history(path)
    writes = stored.record.writes
    assert writes["operations"]["upload"] == 16
    assert writes["mips"]["0"] == {
        "bounds": [0, 0, 0, 256, 256, 64],
        "boxes": [[0, 0, 0, 256, 256, 64]],
        "chunks": 16,
        "bytes": 16 * CHUNK**3,
    }
    assert all((plain(path)[:, r * CHUNK : (r + 1) * CHUNK, :] == r + 1).all() for r in range(4))
