"""Every write path of a handle is tracked while its session is open and refused once it closed.

Also cirrus's CloudVolume in cirrus-volume's shape: no provenance, no writes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import cirrus
from cirrus.errors import (
    InvalidInput,
    NotPublished,
    PermanentStorageError,
    ProvenanceRequired,
)
from cirrus.storage import wrap_backends
from cirrus.storage.paths import normalise_cloudpath
from tests.session_support import (
    KeyCounter,
    KeyCountingBackend,
    chunk_files,
    chunk_of,
    hooked,
    make_layer,
    plain,
    process,
    provenance_keys,
)


def snapshot(root: str) -> dict[str, str]:
    """Every file under a directory with the sha256 of its bytes."""
    found = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return found


def mesh_and_skeleton(segid: int):
    from cloudvolume import Mesh, Skeleton

    mesh = Mesh(
        np.array([[0, 0, 0], [8, 0, 0], [0, 8, 0]], np.float32),
        np.array([[0, 1, 2]], np.uint32),
        None,
        segid=segid,
    )
    skeleton = Skeleton([[0, 0, 0], [40, 40, 40]], [[0, 1]], segid=segid)
    return mesh, skeleton


def shared_array(value: int):
    """A 64^3 array in (emulated or real) shared memory, as upload_from_shared_memory reads it."""
    from cloudvolume import sharedmemory

    location = f"cirrus-test-{uuid.uuid4().hex}"
    handle, array = sharedmemory.ndarray((64, 64, 64, 1), np.uint8, location)
    array[:] = value
    handle.close()
    return location


def file_array(directory, value: int) -> str:
    from cloudvolume import sharedmemory

    location = os.path.join(str(directory), f"mmap-{uuid.uuid4().hex}")
    handle, array = sharedmemory.ndarray_fs((64, 64, 64, 1), np.uint8, location, lock=None)
    array[:] = value
    handle.close()
    return location


def write_paths(tmp_path):
    """(name, operation recorded, write) for each write path; each call writes something new."""
    from cloudvolume import Bbox, sharedmemory

    box = Bbox((0, 0, 0), (64, 64, 64))

    def setitem(vol):
        vol[0:64, 0:64, 0:64] = chunk_of(1)

    def shared_memory(vol):
        location = shared_array(2)
        try:
            vol.upload_from_shared_memory(location, box)
        finally:
            sharedmemory.unlink(location)

    def from_file(vol):
        vol.upload_from_file(file_array(tmp_path, 3), Bbox((64, 0, 0), (128, 64, 64)))

    def image_upload(vol):
        vol.image.upload(np.full((64, 64, 64, 1), 4, np.uint8), (0, 64, 0), 0)

    def delete(vol):
        vol.delete(np.s_[0:64, 0:64, 0:64])

    def commit_info(vol):
        vol.info["cirrus_test"] = uuid.uuid4().hex
        vol.commit_info()

    def add_scale(vol):
        vol.add_scale((2, 2, 1))

    def mesh_put(vol):
        vol.mesh.put(mesh_and_skeleton(7)[0])

    def skeleton_upload(vol):
        vol.skeleton.upload(mesh_and_skeleton(8)[1])

    return [
        ("setitem", "upload", setitem),
        ("upload_from_shared_memory", "upload", shared_memory),
        ("upload_from_file", "upload", from_file),
        ("image.upload", "upload", image_upload),
        ("delete", "delete", delete),
        ("commit_info", "info", commit_info),
        ("add_scale", "add_scale", add_scale),
        ("mesh.put", "mesh", mesh_put),
        ("skeleton.upload", "skeleton", skeleton_upload),
    ]


@pytest.fixture
def seg_layer(tmp_path):
    root = tmp_path / "seg"
    path = normalise_cloudpath(f"file://{root}")
    make_layer(path, layer_type="segmentation", dtype="uint8")
    return path, str(root)


def test_every_write_path_is_tracked_then_refused_after_close(tmp_path, seg_layer):
    path, root = seg_layer
    paths = write_paths(tmp_path)
    with cirrus.session(["src"], "all write paths", process()) as s:
        vol = s.volume(path, progress=False)
        expected: dict[str, int] = {}
        for name, operation, write in paths:
            write(vol)
            expected[operation] = expected.get(operation, 0) + 1
            operations = s._trackers[path].to_json()["operations"]
            assert operations[operation] == expected[operation], name
        with pytest.raises(ProvenanceRequired, match="commit_provenance"):
            vol.commit_provenance()

    (stored,) = cirrus.history(path)
    operations = stored.record.writes["operations"]
    for operation, count in expected.items():
        assert operations[operation] >= count, operation
    assert stored.record.writes["mips"]["0"]["chunks"] == 4  # four image uploads of one chunk
    assert plain(path).mesh.get(7) is not None
    assert plain(path).skeleton.get(8).id == 8

    # after the session closed, the same handle refuses every write and writes nothing
    before = snapshot(root)
    for name, _operation, write in paths:
        with pytest.raises(ProvenanceRequired) as refused:
            write(vol)
        message = str(refused.value)
        assert "this session is committed: its record is made without this write" in message
        assert "write in a new session (`with cirrus.session(...) as s:" in message, name
        assert snapshot(root) == before, name
    with pytest.raises(ProvenanceRequired):
        vol.commit_provenance()
    assert snapshot(root) == before
    # reads keep working
    assert (vol[64:128, 0:64, 0:64] == 3).all()
    assert vol.mesh.get(7) is not None
    assert vol.skeleton.get(8).id == 8
    assert vol.info["scales"][0]["chunk_sizes"] == [[64, 64, 64]]
    assert len(cirrus.history(path)) == 1


def test_commit_provenance_is_refused_while_open_and_writes_nothing(seg_layer):
    path, root = seg_layer
    with cirrus.session(["src"], "why", process()) as s:
        vol = s.volume(path)
        vol.provenance.description = "overwritten blindly"
        before = snapshot(root)
        with pytest.raises(ProvenanceRequired, match="blindly"):
            vol.commit_provenance()
        assert snapshot(root) == before
    assert s.records == {}
    assert provenance_keys(path) == []


# -- cirrus.CloudVolume, cirrus-volume's call shape ---------------------------------------------


def test_deletes_are_recorded_with_their_mip_and_box(tmp_path):
    """A delete destroys data: the record says where, not only that one happened."""
    from cloudvolume import Bbox
    from cloudvolume.exceptions import AlignmentError

    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    make_layer(path, size=(256, 128, 64))
    with cirrus.session(["src"], "write then prune", process()) as s:
        vol = s.volume(path)
        vol[0:256, 0:64, 0:64] = np.ones((256, 64, 64), np.uint8)
        vol.delete(np.s_[0:64, 0:64, 0:64])
        vol.delete(Bbox((64, 0, 0), (128, 64, 64)))
        with pytest.raises(AlignmentError):  # refused by CloudVolume: nothing deleted
            vol.delete(np.s_[0:10, 0:10, 0:10])
    (stored,) = cirrus.history(path)
    writes = stored.record.writes
    assert writes["deleted"] == {
        "0": {"bounds": [0, 0, 0, 128, 64, 64], "boxes": [[0, 0, 0, 128, 64, 64]]}
    }
    assert writes["operations"]["delete"] == 2
    assert "deleted mip 0: [0,0,0]-[128,64,64]" in str(stored)
    assert (plain(path)[0:128, 0:64, 0:64] == 0).all() and (
        plain(path)[128:256, 0:64, 0:64] == 1
    ).all()


def test_deleting_a_whole_mip_is_recorded_as_all(tmp_path):
    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    make_layer(path)
    with cirrus.session(["src"], "start over", process()) as s:
        vol = s.volume(path)
        vol[0:64, 0:64, 0:64] = chunk_of(1)
        vol.image.delete_all(0)
    (stored,) = cirrus.history(path)
    assert stored.record.writes["deleted"] == {"0": {"all": True}}
    assert "deleted mip 0: every chunk" in str(stored)


def test_plain_cirrus_cloudvolume_refuses_writes_naming_the_three_rules(tmp_path):
    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    make_layer(path)
    vol = cirrus.CloudVolume(path, fill_missing=True)
    assert (vol[0:64, 0:64, 0:64] == 0).all()  # reads work
    for write in (
        lambda: vol.__setitem__(np.s_[0:64, 0:64, 0:64], chunk_of(1)),
        lambda: vol.delete(np.s_[0:64, 0:64, 0:64]),
        vol.commit_info,
        vol.commit_provenance,
    ):
        with pytest.raises(ProvenanceRequired) as refused:
            write()
        message = str(refused.value)
        if "commit_provenance" not in message:
            for rule in ("sources", "motivation", "cirrus.Process"):
                assert rule in message
    vol.sources = ["gs://lab/aff"]
    with pytest.raises(ProvenanceRequired, match="no motivation, process: set them on it") as e:
        vol[0:64, 0:64, 0:64] = chunk_of(1)
    assert "vol.motivation = '...'" in str(e.value)
    assert chunk_files(path) == []
    assert provenance_keys(path) == []


def test_cirrus_cloudvolume_many_writes_then_commit_make_one_record(tmp_path):
    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    make_layer(path, size=(320, 320, 64))
    keys = KeyCounter()
    with wrap_backends(lambda backend: KeyCountingBackend(backend, keys)):
        vol = cirrus.CloudVolume(path)
        vol.sources = ["gs://lab/aff"]
        vol.motivation = "compat"
        vol.process = process("compat step")
        for i, x in enumerate(range(0, 320, 64)):
            for j, y in enumerate(range(0, 320, 64)):
                vol[x : x + 64, y : y + 64, 0:64] = chunk_of(i * 5 + j)
        # cirrus-volume logged on every write; cirrus lists the session as writing, then waits
        assert provenance_keys(path) == ["provenance"] and cirrus.history(path) == []
        ids = vol.commit()
    (stored,) = cirrus.history(path)
    assert ids == {path: stored.id}
    assert stored.record.writes["operations"] == {"upload": 25}
    assert stored.record.writes["mips"]["0"]["chunks"] == 25
    assert keys.count(path, "put_new", "records") == 1
    assert keys.count(path, None, "summary") - keys.count(path, "get", "summary") == 2
    assert vol.commit() == {}  # nothing new
    assert (plain(path)[256:320, 256:320, 0:64] == 24).all()

    # writing again opens a new session; changing the motivation commits the previous one
    vol[0:64, 0:64, 0:64] = chunk_of(100)
    vol.motivation = "second pass"
    vol[64:128, 0:64, 0:64] = chunk_of(101)
    vol.commit()
    history = cirrus.history(path)
    assert len(history) == 3
    assert [h.record.notes[0]["text"] for h in history] == ["compat", "compat", "second pass"]


def test_cirrus_cloudvolume_with_provenance_in_the_constructor(tmp_path):
    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    make_layer(path)
    vol = cirrus.CloudVolume(path, sources=["s"], motivation="m", process=process())
    vol[0:64, 0:64, 0:64] = chunk_of(9)
    vol.commit()
    assert cirrus.history(path)[0].record.sources == ("s",)


def compat_volume_with_a_write(tmp_path) -> tuple[str, Any]:
    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    make_layer(path)
    vol = cirrus.CloudVolume(path, sources=["s"], motivation="m", process=process())
    vol[0:64, 0:64, 0:64] = chunk_of(9)
    return path, vol


def refusing(refused: Callable[[str], bool]) -> Any:
    """Every backend in the block refuses writes of the keys `refused` picks."""

    def refuse(_cloudpath: str, key: str) -> None:
        if refused(key):
            raise PermanentStorageError("refused by the test", key=key)

    return hooked(before=refuse)


def test_a_cirrus_cloudvolume_commit_that_failed_is_retried_by_the_next_commit(tmp_path):
    path, vol = compat_volume_with_a_write(tmp_path)
    records = refusing(lambda key: key.startswith("provenance.d/records/"))
    with records, pytest.raises(PermanentStorageError):
        vol.commit()
    with pytest.raises(ProvenanceRequired, match=r"commit failed .*here: vol.commit\(\)"):
        vol[64:128, 0:64, 0:64] = chunk_of(7)  # it would be in no record: refused, unwritten
    assert (plain(path)[64:128, 0:64, 0:64] == 0).all()
    ids = vol.commit()
    (stored,) = cirrus.history(path)
    assert ids == {path: stored.id} and stored.record.writes["operations"] == {"upload": 1}
    assert cirrus.history(path).open_sessions == {}
    vol[64:128, 0:64, 0:64] = chunk_of(7)  # after the retry: a new session
    vol.commit()
    assert [h.record.writes["mips"]["0"]["bounds"][0] for h in cirrus.history(path)] == [0, 64]


def test_a_cirrus_cloudvolume_write_after_an_unpublished_commit_opens_a_new_session(tmp_path):
    path, vol = compat_volume_with_a_write(tmp_path)
    with refusing(lambda key: key == "provenance"), pytest.raises(NotPublished):
        vol.commit()
    vol[64:128, 0:64, 0:64] = chunk_of(7)
    vol.commit()
    cirrus.recover(path)
    bounds = sorted(h.record.writes["mips"]["0"]["bounds"][0] for h in cirrus.history(path))
    assert bounds == [0, 64]  # both writes recorded, each in its own session


_FORKED_HANDLE = None  # a session handle a forked worker inherits, as a module global


def _write_through_inherited_handle(x: int) -> str:
    try:
        _FORKED_HANDLE[x : x + 64, 0:64, 0:64] = chunk_of(3)
    except ProvenanceRequired as refused:
        return str(refused)
    return "written"


def test_a_forked_worker_cannot_write_through_its_parents_session_handle(tmp_path):
    """Its writes would be tallied in the child's copy of the session and never recorded."""
    import multiprocessing

    global _FORKED_HANDLE
    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    make_layer(path)
    with cirrus.session(["src"], "fork", process()) as s:
        _FORKED_HANDLE = s.volume(path)
        try:
            with multiprocessing.get_context("fork").Pool(2) as pool:
                outcomes = pool.map(_write_through_inherited_handle, [0, 64])
        finally:
            _FORKED_HANDLE = None
        for outcome in outcomes:
            assert "belongs to a session of process" in outcome and "cirrus.join" in outcome
    assert s.records == {} and chunk_files(path) == [] and provenance_keys(path) == []


FORK_EXIT_SCRIPT = """
import os, sys
import numpy as np
import cirrus
path, kind = sys.argv[1], sys.argv[2]
why = dict(sources=["src"], motivation="fork", process=cirrus.Process("p", {}))
if kind == "compat":
    vol = cirrus.CloudVolume(path, **why)
    handle, end = (lambda: vol), vol.commit
else:
    s = cirrus.session(**why)
    handle, end = (lambda: s.volume(path)), s.commit
handle()[0:64, 0:64, 0:64] = np.ones((64, 64, 64), np.uint8)
pid = os.fork()
if pid == 0:
    sys.exit(0)  # a child ending normally: exit hooks and finalizers run
assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
print("AFTER CHILD", len(cirrus.history(path)), flush=True)
handle()[64:128, 0:64, 0:64] = np.ones((64, 64, 64), np.uint8)
print("COMMITTED", end()[path], flush=True)
"""


@pytest.mark.parametrize("kind", ["compat", "session"])
def test_a_forked_child_ending_normally_leaves_its_parents_session_alone(tmp_path, kind):
    """The child's exit hooks neither commit the parent's session (a record of the writes so
    far, under the child's pid) nor warn that it was never committed: the parent still owns it
    and commits every write."""
    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    make_layer(path)
    done = subprocess.run(
        [sys.executable, "-c", FORK_EXIT_SCRIPT, path, kind],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "AFTER CHILD 0" in done.stdout, done.stdout
    assert "never committed" not in done.stderr
    (stored,) = cirrus.history(path)
    assert f"COMMITTED {stored.id}" in done.stdout
    assert stored.record.status == "committed"
    assert stored.record.writes["mips"]["0"]["chunks"] == 2
    assert cirrus.history(path).open_sessions == {}


def test_a_session_handle_cannot_be_pickled_to_another_process(tmp_path):
    import copy
    import pickle

    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    make_layer(path)
    with cirrus.session(["src"], "pickle", process()) as s:
        handle = s.volume(path)
        for send in (pickle.dumps, copy.deepcopy):
            with pytest.raises(InvalidInput, match="cannot be pickled or copied.*cirrus.step"):
                send(handle)
        handle[0:64, 0:64, 0:64] = chunk_of(1)  # the handle itself still writes
    assert len(cirrus.history(path)) == 1


EXIT_SCRIPT = """
import sys
import numpy as np
import cirrus
vol = cirrus.CloudVolume(sys.argv[1], sources=["s"], motivation="at exit",
                         process=cirrus.Process("exit", {}))
vol[0:64, 0:64, 0:64] = np.ones((64, 64, 64), np.uint8)
"""


def test_cirrus_cloudvolume_commits_at_exit(tmp_path):
    path = normalise_cloudpath(f"file://{tmp_path}/layer")
    make_layer(path)
    done = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, path], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    (stored,) = cirrus.history(path)
    assert stored.record.notes[0]["text"] == "at exit"
    assert stored.record.writes["operations"] == {"upload": 1}
