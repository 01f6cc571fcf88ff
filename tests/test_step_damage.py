"""A step's files damaged in storage (a truncated or edited fragment), or refused while the step
opens: the finish, the status, a re-run and a new opening name it and the fix; nothing is
published from it, nothing is lost and no volume is left listing a step nobody can finish."""

from __future__ import annotations

import hashlib
import json
import os
import re

import pytest

import cirrus
from cirrus.errors import IntegrityError, PermanentStorageError, StepError
from cirrus.stepfiles import StepFiles
from cirrus.steptoken import StepToken
from cirrus.verify import verify
from tests import step_support as ss
from tests.cli_support import invoke
from tests.session_support import hooked, plain

GOOD = {
    "task": "t1",
    "status": "committed",
    "error": None,
    "started": "2026-01-01T00:00:00.000000+00:00",
    "ended": "2026-01-01T00:00:01.000000+00:00",
    "host": "worker-1",
    "notes": [{"kind": "result", "text": "ok", "time": "2026-01-01T00:00:01.000000+00:00"}],
    "writes": {"mips": {"0": {"bounds": [0, 0, 0, 16, 16, 16], "chunks": 1, "bytes": 4096}}},
}


def changed(**fields: object) -> bytes:
    return json.dumps({**GOOD, **fields}).encode()


DAMAGE = {
    "cut short": b'{"task": "t1", "stat',
    "not an object": b"[]",
    "no writes": json.dumps({k: v for k, v in GOOD.items() if k != "writes"}).encode(),
    "no host": json.dumps({k: v for k, v in GOOD.items() if k != "host"}).encode(),
    "no error": json.dumps({k: v for k, v in GOOD.items() if k != "error"}).encode(),
    "an unknown status": changed(status="done"),
    "an end that is no time": changed(ended="garbage"),
    "a start without a timezone": changed(started="2026-01-01T00:00:00"),
    "notes that are text": changed(notes="ok"),
    "a note without a time": changed(notes=[{"kind": "result", "text": "ok"}]),
    "a box of 5 numbers": changed(
        writes={"mips": {"0": {"bounds": [0, 0, 0, 16, 16], "chunks": 1, "bytes": 1}}}
    ),
    "a count that is text": changed(writes={"operations": {"put": "1"}}),
    "mips that are a list": changed(writes={"mips": []}),
    "deletes that are text": changed(writes={"deleted": "all"}),
    "a mip written 'all'": changed(writes={"mips": {"0": {"all": True}}}),
    "attempt ids that are a number": changed(attempt_ids=7),
    "nesting deeper than Python reads": b'{"task": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
}


def test_the_undamaged_fragment_is_accepted() -> None:
    """The damage cases differ from this one in one field each, so each is what is refused."""
    from cirrus.readback import parse_fragment

    assert parse_fragment(json.dumps(GOOD).encode(), "file:///l", "t1.json") == GOOD


@pytest.fixture
def layer(tmp_path) -> str:
    path = f"file://{tmp_path}/layer"
    ss.make_layer(path)
    return path


def open_step(layer: str) -> cirrus.Step:
    process = cirrus.Process("paint chunks", {"value": 1})
    return cirrus.step(sources=["gs://lab/aff"], motivation="m", process=process, volumes=[layer])


def fragment_file(layer: str, step: cirrus.Step, task: str) -> str:
    return os.path.join(
        layer.removeprefix("file://"), f"provenance.d/steps/{step.id}/tasks/{task}.json"
    )


def damage(layer: str, step: cirrus.Step, task: str, data: bytes) -> None:
    with open(fragment_file(layer, step, task), "wb") as f:
        f.write(data)


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_fragment_stops_the_finish_naming_the_task_and_the_fix(
    layer: str, kind: str
) -> None:
    step = open_step(layer)
    ss.paint_fn(step.token, "t1", layer, [0, 0, 0])
    ss.paint_fn(step.token, "t2", layer, [16, 0, 0])
    damage(layer, step, "t1", DAMAGE[kind])
    for call in (step.finish, step.status):
        with pytest.raises(IntegrityError, match=r"task t1's fragment .* is damaged") as error:
            call()
        assert "cirrus.join(token, task='t1')" in str(error.value)
    assert list(cirrus.history(layer)) == []  # nothing published from it


def test_rerunning_the_task_replaces_the_damaged_fragment_and_keeps_its_bytes(
    layer: str,
) -> None:
    step = open_step(layer)
    ss.paint_fn(step.token, "t1", layer, [0, 0, 0])
    ss.paint_fn(step.token, "t2", layer, [16, 0, 0])
    damage(layer, step, "t1", DAMAGE["cut short"])
    ss.paint_fn(step.token, "t1", layer, [0, 0, 0])  # the re-run the error asks for
    kept = hashlib.sha256(DAMAGE["cut short"]).hexdigest()
    with open(os.path.join(layer.removeprefix("file://"), "provenance.d/corrupt", kept), "rb") as f:
        assert f.read() == DAMAGE["cut short"]
    step.finish()
    (stored,) = cirrus.history(layer)
    assert stored.record.status == "committed" and stored.record.tasks["count"] == 2
    assert stored.record.writes["mips"]["0"]["bounds"] == [0, 0, 0, 32, 16, 16]


def test_verify_reports_a_damaged_fragment_of_a_step_still_open(layer: str) -> None:
    step = open_step(layer)
    ss.paint_fn(step.token, "t1", layer, [0, 0, 0])
    damage(layer, step, "t1", b"{")
    (problem,) = verify(layer).problems
    assert "task t1's fragment" in problem and "damaged" in problem


def test_a_damaged_fragment_names_a_way_out_when_the_task_cannot_run_again(layer: str) -> None:
    """An unnamed task's id is random: no queue can run it again under it."""
    step = open_step(layer)
    with cirrus.join(step.token) as task:
        ss.paint(task, layer, [0, 0, 0])
    (name,) = os.listdir(os.path.dirname(fragment_file(layer, step, "x")))
    damage(layer, step, name.removesuffix(".json"), b"{")
    with pytest.raises(IntegrityError, match="move the file out of tasks/") as error:
        step.finish()
    os.rename(fragment_file(layer, step, name.removesuffix(".json")), f"{layer[7:]}/kept.json")
    step.finish()  # the way out the message names
    assert "move the file out" in str(error.value)


def test_verify_reports_a_fragment_damaged_after_the_finish(layer: str) -> None:
    step = open_step(layer)
    ss.paint_fn(step.token, "t1", layer, [0, 0, 0])
    step.finish()
    assert verify(layer).ok
    damage(layer, step, "t1", b"")
    (problem,) = verify(layer).problems
    assert "task t1's fragment" in problem and "damaged" in problem


def manifest_file(layer: str, step: cirrus.Step, name: str = "step.json") -> str:
    return os.path.join(layer.removeprefix("file://"), f"provenance.d/steps/{step.id}/{name}")


MANIFEST_DAMAGE = {
    "cut short": lambda good: good[:40],
    "no notes": lambda good: json.dumps({**json.loads(good), "notes": None}).encode(),
    "a count that is text": lambda good: json.dumps(
        {**json.loads(good), "expected_tasks": "3"}
    ).encode(),
    "another step's": lambda good: json.dumps({**json.loads(good), "id": "0" * 32}).encode(),
    "a process without envs": lambda good: json.dumps(
        {**json.loads(good), "process": {**json.loads(good)["process"], "envs": None}}
    ).encode(),
    "expected ids without a count": lambda good: json.dumps(
        {k: v for k, v in json.loads(good).items() if k != "expected_tasks"}
        | {"expected_ids": True}
    ).encode(),
}


@pytest.mark.parametrize("kind", MANIFEST_DAMAGE)
def test_a_damaged_manifest_is_named_and_the_other_volumes_copy_is_read(
    tmp_path, kind: str
) -> None:
    a, b = (f"file://{tmp_path}/{name}" for name in "ab")
    for path in (a, b):
        ss.make_layer(path)
    process = cirrus.Process("paint chunks", {"value": 1})
    step = cirrus.step(["gs://lab/aff"], "m", process, volumes=[a, b], tasks=1)
    with open(manifest_file(a, step), "rb") as f:
        good = f.read()
    with open(manifest_file(a, step), "wb") as f:
        f.write(MANIFEST_DAMAGE[kind](good))
    ss.paint_fn(step.token, "t1", a, [0, 0, 0])  # the task reads b's copy
    invoke("step", "finish", step.token)  # so does the command
    (stored,) = cirrus.history(a)
    assert stored.record.status == "committed" and stored.record.tasks["count"] == 1
    (problem,) = verify(a).problems
    assert "manifest" in problem and "damaged" in problem


def test_a_step_whose_only_manifest_is_damaged_refuses_tasks_before_they_write(
    layer: str,
) -> None:
    step = open_step(layer)
    with open(manifest_file(layer, step), "wb") as f:
        f.write(b"{")
    with pytest.raises(IntegrityError, match=r"manifest .*step\.json is damaged.*copy an intact"):
        ss.paint_fn(step.token, "t1", layer, [0, 0, 0])
    assert plain(layer)[0:16, 0:16, 0:16].max() == 0  # refused before the write
    for call in (step.finish, step.status):
        with pytest.raises(IntegrityError, match="manifest"):
            call()


@pytest.mark.parametrize("stored", [b'{"task_ids": "t1"}', b"{}", b'{"task_ids": [1]}', b"{"])
def test_a_damaged_list_of_expected_tasks_is_named(layer: str, stored: bytes) -> None:
    """`{"task_ids": "t1"}` used to be read as the tasks 't' and '1', and a failed record was
    published saying both filed nothing."""
    process = cirrus.Process("paint chunks", {"value": 1})
    step = cirrus.step(["gs://lab/aff"], "m", process, volumes=[layer], tasks=["t1"])
    ss.paint_fn(step.token, "t1", layer, [0, 0, 0])
    with open(manifest_file(layer, step, "expected.json"), "wb") as f:
        f.write(stored)
    with pytest.raises(IntegrityError, match=r"expected\.json is damaged"):
        step.finish()
    assert list(cirrus.history(layer)) == []


def test_a_list_of_expected_tasks_missing_everywhere_is_stored_data_gone(layer: str) -> None:
    process = cirrus.Process("paint chunks", {"value": 1})
    step = cirrus.step(["gs://lab/aff"], "m", process, volumes=[layer], tasks=["t1"])
    os.remove(manifest_file(layer, step, "expected.json"))
    with pytest.raises(IntegrityError, match=r"none of its volumes holds their list.*backup"):
        step.finish()
    invoke("step", "finish", step.token, code=3)  # stored data, not a usage error


def test_files_in_a_steps_task_folder_that_are_no_fragments_are_skipped(layer: str) -> None:
    """A Finder `.DS_Store` or a console's folder placeholder is no task to run again."""
    step = open_step(layer)
    ss.paint_fn(step.token, "t1", layer, [0, 0, 0])
    folder = os.path.dirname(fragment_file(layer, step, "t1"))
    for name in (".DS_Store", "notes.txt", "bad id!.json"):
        with open(os.path.join(folder, name), "wb") as f:
            f.write(b"\x00\x00\x00\x01Bud1")
    assert step.status()["volumes"][layer]["tasks"] == 1
    step.finish()
    (stored,) = cirrus.history(layer)
    assert stored.record.tasks["count"] == 1 and verify(layer).ok


@pytest.mark.parametrize("how", ["edited", "deleted"])
def test_finishing_again_mends_the_steps_own_record(layer: str, how: str) -> None:
    """A step's record is rebuilt from its fragments at each finish, byte for byte, so a copy
    damaged since is stored again (the damaged bytes kept), not left for a backup."""
    step = open_step(layer)
    ss.paint_fn(step.token, "t1", layer, [0, 0, 0])
    rid = step.finish()[layer]
    record = os.path.join(layer.removeprefix("file://"), f"provenance.d/records/{rid}.json")
    with open(record, "rb") as f:
        good = f.read()
    if how == "edited":
        with open(record, "ab") as f:
            f.write(b" ")
    else:
        os.remove(record)
    assert not verify(layer).ok
    assert step.finish()[layer] == rid
    with open(record, "rb") as f:
        assert f.read() == good
    assert verify(layer).ok and [stored.id for stored in cirrus.history(layer)] == [rid]
    corrupt = os.path.join(layer.removeprefix("file://"), "provenance.d/corrupt")
    kept = os.listdir(corrupt) if os.path.isdir(corrupt) else []
    assert len(kept) == (1 if how == "edited" else 0)


def refuse(cloudpath: str, key_or_folder: str, after: int = 0):
    """A `before` hook refusing writes of a key (or under a folder/) on `cloudpath` after
    `after` of them have landed."""
    landed = []

    def before(path: str, key: str) -> None:
        folder = key_or_folder.endswith("/") and key.startswith(key_or_folder)
        if path == cloudpath and (folder or key == key_or_folder):
            landed.append(key)
            if len(landed) > after:
                raise PermanentStorageError(f"refused {key} on {path}")

    return before


def both(*hooks):
    return lambda path, key: [hook(path, key) for hook in hooks]


def test_a_step_whose_opening_fails_on_a_later_volume_is_unlisted_from_the_earlier(
    tmp_path, layer: str
) -> None:
    second = f"file://{tmp_path}/second"
    ss.make_layer(second)
    with (
        hooked(before=refuse(second, "provenance.d/steps/")),
        pytest.raises(PermanentStorageError, match="refused provenance.d/steps/"),
    ):
        cirrus.step(["gs://lab/aff"], "m", cirrus.Process("p", {}), volumes=[layer, second])
    for path in (layer, second):
        assert cirrus.history(path).open_steps == {}, path
        assert verify(path).ok, path
    assert "OPEN STEP" not in invoke("log", layer).output
    step = open_step(layer)  # the cause gone, the step opens
    assert list(cirrus.history(layer).open_steps) == [step.id]


def test_a_step_that_cannot_be_unlisted_after_a_failed_opening_names_the_volume_and_the_fix(
    tmp_path, layer: str
) -> None:
    second = f"file://{tmp_path}/second"
    ss.make_layer(second)
    # the first volume lists the step, then refuses every later summary write (the unlisting)
    refusals = both(refuse(second, "provenance.d/steps/"), refuse(layer, "provenance", after=1))
    with hooked(before=refusals), pytest.raises(StepError) as raised:
        cirrus.step(["gs://lab/aff"], "m", cirrus.Process("p", {}), volumes=[layer, second])
    (step_id,) = cirrus.history(layer).open_steps
    message = str(raised.value)
    assert f"step {step_id} was not opened: opening it failed on {second}" in message
    assert f"undoing it failed on {layer}, which may still list it" in message
    assert isinstance(raised.value.__cause__, PermanentStorageError)
    token = message.split("(TOKEN: ")[1].split(")")[0]
    finished = invoke("step", "finish", token, code=2)  # unlists it, records nothing
    assert f"step {step_id} was never opened: opening it failed on {second}" in finished.output
    assert cirrus.history(layer).open_steps == {} and cirrus.history(second).open_steps == {}
    assert list(cirrus.history(layer)) == [] and verify(layer).ok


def ghost_step(tmp_path, layer: str) -> tuple[str, str, str]:
    """A step opened over `layer` and a second volume that refuses its step files, as a
    read-only bucket does: (its id, its token, the second volume)."""
    second = f"file://{tmp_path}/second"
    ss.make_layer(second)
    with (
        hooked(before=refuse(second, "provenance.d/steps/")),
        pytest.raises(PermanentStorageError),
    ):
        cirrus.step(["gs://lab/aff"], "m", cirrus.Process("p", {}), volumes=[layer, second])
    (step_id,) = StepFiles.open(layer).step_ids()  # its manifest stays where it was filed
    return step_id, StepToken(step_id, (layer, second)).dumps(), second


def test_a_step_whose_opening_failed_cannot_be_joined_before_a_task_writes(
    tmp_path, layer: str
) -> None:
    step_id, token, second = ghost_step(tmp_path, layer)
    for first in (layer, second):  # the volume a task writes first holds the manifest, or not
        with (
            pytest.raises(StepError, match=f"step {step_id} was never opened: opening it fail"),
            cirrus.join(token, task="t1") as task,
        ):
            ss.paint(task, first, [0, 0, 0])
    for path in (layer, second):
        assert not plain(path)[0:16, 0:16, 0:16].any(), path  # no chunk
        assert StepFiles.open(path).task_count(step_id) == 0, path  # no fragment
        assert verify(path).ok and verify(path).remarks == [], path


def test_a_step_whose_opening_failed_cannot_be_tokened_finished_or_shown(
    tmp_path, layer: str
) -> None:
    step_id, token, second = ghost_step(tmp_path, layer)
    fix = "open a new step with `cirrus.step(...)`"
    for command in (["step", "token", layer, step_id[:8]], ["step", "finish", token]):
        output = invoke(*command, code=2).output
        assert f"step {step_id} was never opened: opening it failed on {second}" in output
        assert fix in output
    invoke("step", "status", token, code=2)
    for call in (cirrus.finish, cirrus.step_status):
        with pytest.raises(StepError, match=re.escape(fix)):
            call(token)
    for path in (layer, second):
        assert list(cirrus.history(path)) == [] and cirrus.history(path).open_steps == {}
    manifest = StepFiles.open(layer).manifest(step_id)  # kept whole, marked
    assert manifest["id"] == step_id and manifest["volumes"] == [layer, second]
