"""Steps: what a task's attempts leave behind when one is cut short, fails late or ran late.

Each test stops a task where users' tasks stop (a storage error while filing, a failure after
an earlier attempt committed, a worker clock behind) and checks what `status`, `verify` and
`finish` then tell the user.
"""

from __future__ import annotations

import gc
import json
import os

import pytest

import cirrus
from cirrus.errors import PermanentStorageError
from cirrus.verify import verify
from tests import step_support as ss
from tests.cli_support import invoke


def open_step(*layers: str, tasks=None) -> cirrus.Step:
    process = cirrus.Process("paint chunks", {"value": 1, "chunk": ss.CHUNK})
    return cirrus.step(["gs://lab/aff"], "bootstrap", process, list(layers), tasks=tasks)


def one_record(layer: str) -> cirrus.Record:
    history = cirrus.history(layer)
    assert len(history) == 1, history
    return history[0].record


@pytest.fixture
def two(tmp_path) -> tuple[str, str]:
    return ss.seg_and_bnd(tmp_path)


def block_fragments(tmp_path, name: str, step: cirrus.Step) -> str:
    """Make filing any fragment on volume `name` fail: a file where its tasks/ folder goes."""
    blocker = tmp_path / name / "provenance.d" / "steps" / step.id / "tasks"
    blocker.write_text("not a folder")
    return str(blocker)


def test_a_task_whose_fragment_cannot_be_filed_is_told_to_rerun_not_to_recover(
    tmp_path, two, capsys
) -> None:
    """`cirrus recover` knows nothing of task fragments; re-running the task files them."""
    seg, bnd = two
    step = open_step(seg, bnd)
    blocker = block_fragments(tmp_path, "bnd", step)
    task = cirrus.join(step.token, task="a")
    with pytest.raises(PermanentStorageError), task:
        ss.paint(task, seg, [0, 0, 0])
        ss.paint(task, bnd, [0, 0, 0])
    os.remove(blocker)
    with pytest.warns(ResourceWarning, match=r"task a of step .* cut short") as caught:
        del task
        gc.collect()
    message = str(caught[0].message)
    assert "re-run task a under its id" in message and "finish the step again" in message
    assert "cirrus recover" not in message
    assert "re-run task a under its id" in capsys.readouterr().err


def test_status_after_a_finish_with_no_tasks_says_a_task_ran_since(tmp_path) -> None:
    layer = f"file://{tmp_path}/layer"
    ss.make_layer(layer)
    step = open_step(layer)
    assert step.finish() == {}
    assert step.status()["volumes"][layer]["finished"]
    ss.paint_fn(step.token, "late", layer, [0, 0, 0])
    report = step.status()["volumes"][layer]
    assert not report["finished"] and "1 tasks filed fragments here" in report["late"]
    out = invoke("step", "status", step.token).stdout
    assert ": 1 task(s) recorded, 0 failed, finished before tasks that ran since (" in out
    assert "finish it again" in out
    step.finish()
    report = step.status()["volumes"][layer]
    assert report["finished"] and report["late"] == ""
    assert one_record(layer).tasks["count"] == 1


def fail_after_writing(step: cirrus.Step, task: str, layer: str, value: int, why: str) -> None:
    """One attempt of `task` that paints its chunk at the origin with `value`, then fails."""
    with pytest.raises(RuntimeError, match=why), cirrus.join(step.token, task=task) as session:
        ss.paint(session, layer, [0, 0, 0], value)
        raise RuntimeError(why)


def test_a_failed_attempt_after_the_task_committed_is_kept_not_erased(tmp_path) -> None:
    """A duplicate delivery overwrites committed data, then fails: the task stays committed,
    but its fragment, the step's record, `status` and `step finish` say an attempt failed
    after it, until an attempt commits again."""
    from cloudvolume import CloudVolume

    from cirrus.stepfiles import StepFiles

    layer = f"file://{tmp_path}/layer"
    ss.make_layer(layer)
    step = open_step(layer, tasks=["a"])
    ss.paint_fn(step.token, "a", layer, [0, 0, 0])
    fail_after_writing(step, "a", layer, 9, "duplicate delivery died")
    assert CloudVolume(layer)[0, 0, 0].flatten().tolist() == [9]  # the committed data is gone
    (fragment,) = StepFiles.open(layer).fragments(step.id)
    assert fragment["status"] == "committed" and fragment["attempts"] == 2
    (late,) = fragment["failed_after_commit"]
    assert late["error"] == {"type": "RuntimeError", "message": "duplicate delivery died"}
    assert late["attempt"] == fragment["attempt_ids"][1]
    assert step.status()["volumes"][layer]["failed_after_commit"] == ["a"]
    out = invoke("step", "finish", step.token).stdout
    assert "1 committed, 0 failed, 1 failed again after it committed" in out
    assert "failed after committing: a: RuntimeError: duplicate delivery died" in out
    tasks = one_record(layer).tasks
    assert (tasks["committed"], tasks["failed"], tasks["failed_after_commit"]) == (1, 0, 1)
    assert tasks["failures_after_commit"] == [
        {"task": "a", "error": {"type": "RuntimeError", "message": "duplicate delivery died"}}
    ]
    ss.paint_fn(step.token, "a", layer, [0, 0, 0])  # run again: it commits what it wrote
    step.finish()
    assert "failed_after_commit" not in one_record(layer).tasks
    assert step.status()["volumes"][layer]["failed_after_commit"] == []


def test_a_rerun_after_the_finish_stands_when_its_worker_clock_is_behind(
    tmp_path, monkeypatch
) -> None:
    """The re-run's fragment ends no later than the first attempt's, and counts no more tasks:
    only its attempt is new. `status` and `verify` must see it, and the finish that records it
    must stand whichever record id sorts first."""
    import datetime as dt
    import sys

    from cirrus.ledger import Ledger
    from cirrus.summary import current_ids, empty_summary, merge

    layer = f"file://{tmp_path}/layer"
    ss.make_layer(layer)
    step = open_step(layer)
    ss.paint_fn(step.token, "t0", layer, [0, 0, 0])
    first = step.finish()[layer]
    hour_behind = lambda: dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)  # noqa: E731
    for module in ("cirrus.step", "cirrus.writescope", "cirrus.records"):
        monkeypatch.setattr(sys.modules[module], "utcnow", hour_behind)
    with cirrus.join(step.token, task="t0") as task:
        ss.paint(task, layer, [0, 0, 0])
        ss.paint(task, layer, [16, 0, 0])  # one chunk more than the first attempt
    monkeypatch.undo()
    report = step.status()["volumes"][layer]
    assert not report["finished"] and "2 attempts" in report["late"]
    (problem,) = verify(layer).problems
    assert "2 attempts" in problem and "finish it again" in problem
    second = step.finish()[layer]
    assert [stored.id for stored in cirrus.history(layer)] == [second]
    assert one_record(layer).writes["mips"]["0"]["chunks"] == 3
    assert verify(layer).ok and step.status()["volumes"][layer]["finished"]
    ledger = Ledger.open(layer)
    older, newer = (ledger.read_record(rid).record.to_json() for rid in (first, second))
    for older_id, newer_id in (("f" * 64, "0" * 64), ("0" * 64, "f" * 64)):
        merged = merge(empty_summary(), {older_id: older, newer_id: newer})
        assert current_ids(merged) == [newer_id]


def test_a_task_killed_between_its_fragments_is_incomplete_on_the_volume_it_missed(
    two,
) -> None:
    seg, bnd = two
    step = open_step(seg, bnd, tasks=["a", "b"])
    ss.paint_fn(step.token, "b", seg, [16, 0, 0])
    ss.paint_fn(step.token, "b", bnd, [16, 0, 0])
    child = ss.context().Process(
        target=ss.killed_between_fragments, args=(step.token, "a", [seg, bnd])
    )
    child.start()
    child.join(60)
    assert child.exitcode == -9
    report = step.status()
    assert report["volumes"][bnd]["incomplete"] == ["a"]
    assert report["volumes"][seg]["incomplete"] == []
    assert "cut short while filing here: a" in invoke("step", "status", step.token).stdout
    out = invoke("step", "finish", step.token, code=1).stdout
    assert "Incomplete" in out
    record = one_record(bnd)
    assert record.status == "failed" and record.error["type"] == "Incomplete"
    assert "task(s) wrote here but their fragment here is missing (a)" in record.error["message"]
    assert record.tasks["incomplete_tasks"] == ["a"]
    assert one_record(seg).status == "committed"
    with cirrus.join(step.token, task="a") as task:  # re-run as told: it files everywhere
        ss.paint(task, seg, [0, 0, 0])
        ss.paint(task, bnd, [0, 0, 0])
    assert step.status()["volumes"][bnd]["incomplete"] == []
    step.finish()
    for path in (seg, bnd):
        record = one_record(path)
        assert record.status == "committed" and record.tasks["count"] == 2, path
        assert record.writes["mips"]["0"]["bounds"] == [0, 0, 0, 32, 16, 16]


def cut_short_on_bnd(tmp_path, seg: str, bnd: str) -> cirrus.Step:
    """A step whose task `a` wrote seg and bnd, and whose fragment on bnd could not be filed."""
    step = open_step(seg, bnd)
    blocker = block_fragments(tmp_path, "bnd", step)
    with pytest.raises(PermanentStorageError), cirrus.join(step.token, task="a") as task:
        ss.paint(task, seg, [0, 0, 0])
        ss.paint(task, bnd, [0, 0, 0])
    os.remove(blocker)
    return step


def test_a_fragment_that_cannot_be_filed_leaves_its_volume_reported(tmp_path, two) -> None:
    """No expected tasks, and the task's only fragment is missing on bnd: bnd is still
    recorded, as failed, naming the task, not left without a record."""
    seg, bnd = two
    step = cut_short_on_bnd(tmp_path, seg, bnd)
    assert step.status()["volumes"][bnd]["incomplete"] == ["a"]
    ids = step.finish()
    assert sorted(ids) == sorted([seg, bnd])
    record = one_record(bnd)
    assert record.status == "failed" and "(a)" in record.error["message"]
    assert "re-run them under their ids, then finish the step again" in record.error["message"]
    assert one_record(seg).status == "committed"


def test_a_fragment_from_the_previous_version_still_finishes(tmp_path, two) -> None:
    """Without `attempt_volumes` (nor `failed_after_commit`) a fragment names no volumes, so
    it is never found cut short, and finishes as before."""
    seg, bnd = two
    step = open_step(seg, bnd)
    ss.paint_fn(step.token, "a", seg, [0, 0, 0])
    path = tmp_path / "seg" / "provenance.d" / "steps" / step.id / "tasks" / "a.json"
    fragment = json.loads(path.read_text())
    del fragment["attempt_volumes"]
    path.write_text(json.dumps(fragment))
    assert step.status()["volumes"][seg]["incomplete"] == []
    assert sorted(step.finish()) == [seg]
    record = one_record(seg)
    assert record.status == "committed" and record.tasks["step_attempts"] == 1


def test_a_rerun_that_writes_only_some_volumes_leaves_the_missed_one_incomplete(
    tmp_path, two
) -> None:
    """The attempt's fragment on bnd failed; the re-run found bnd's chunk written and skipped
    it, so it filed on seg only: bnd still holds writes no fragment accounts for."""
    seg, bnd = two
    step = cut_short_on_bnd(tmp_path, seg, bnd)
    ss.paint_fn(step.token, "a", seg, [0, 0, 0])  # the re-run writes seg only
    assert step.status()["volumes"][bnd]["incomplete"] == ["a"]
    with cirrus.join(step.token, task="a") as task:  # a re-run that writes both settles it
        ss.paint(task, seg, [0, 0, 0])
        ss.paint(task, bnd, [0, 0, 0])
    assert step.status()["volumes"][bnd]["incomplete"] == []


def test_a_rerun_of_a_task_from_the_previous_version_counts_more_attempts_not_fewer(
    tmp_path,
) -> None:
    """A fragment without `attempt_ids` held 3 attempts; a re-run adds a named one: the new
    finish must count 4 and stand, or the older finish would win forever."""
    layer = f"file://{tmp_path}/layer"
    ss.make_layer(layer)
    step = open_step(layer)
    ss.paint_fn(step.token, "t0", layer, [0, 0, 0])
    path = tmp_path / "layer" / "provenance.d" / "steps" / step.id / "tasks" / "t0.json"
    fragment = json.loads(path.read_text())
    del fragment["attempt_ids"]
    fragment.pop("attempt_volumes", None)
    fragment["attempts"] = 3
    path.write_text(json.dumps(fragment))  # as an older cirrus left it
    step.finish()
    assert one_record(layer).tasks["step_attempts"] == 3
    ss.paint_fn(step.token, "t0", layer, [16, 0, 0])  # re-run after the finish: one chunk more
    assert step.status()["volumes"][layer]["late"]
    second = step.finish()[layer]
    assert [stored.id for stored in cirrus.history(layer)] == [second]
    assert one_record(layer).tasks["step_attempts"] == 4
    assert not step.status()["volumes"][layer]["late"]
