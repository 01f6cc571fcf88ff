"""Steps: many tasks, one record per volume, through python-task-queue and plain processes."""

from __future__ import annotations

import contextlib
import json
import os
from functools import partial
from pathlib import Path

import pytest
from taskqueue import TaskQueue

import cirrus
from cirrus.errors import CorruptProvenance, InvalidInput, StepError
from cirrus.ledger import Ledger
from cirrus.stepfiles import StepFiles
from cirrus.stepfinish import status as step_status
from cirrus.storage import wrap_backends
from tests import step_support as ss
from tests.cli_support import invoke
from tests.session_support import KeyCounter, KeyCountingBackend, hooked, summary_json


def open_step(*layers: str, description: str = "paint chunks") -> cirrus.Step:
    process = cirrus.Process(description, {"value": 1, "chunk": ss.CHUNK})
    return cirrus.step(
        sources=["gs://lab/aff"], motivation="bootstrap", process=process, volumes=list(layers)
    )


def run_workers(queue: str, workers: int, lease_seconds: int = 60, timeout: float = 90) -> list:
    ctx = ss.context()
    procs = [
        ctx.Process(target=ss.poll_worker, args=(queue, lease_seconds)) for _ in range(workers)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout)
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            pytest.fail(f"worker {proc.pid} still running after {timeout} s")
    return [proc.exitcode for proc in procs]


def one_record(layer: str) -> cirrus.Record:
    history = cirrus.history(layer)
    assert len(history) == 1, history
    return history[0].record


def fail_attempt(step: cirrus.Step, task: str, layer: str, origin: list[int], why: str) -> None:
    """One attempt of `task` that paints its chunk at `origin`, then fails with `why`."""
    with pytest.raises(RuntimeError, match=why), cirrus.join(step.token, task=task) as session:
        ss.paint(session, layer, origin)
        raise RuntimeError(why)


@pytest.fixture
def layer(tmp_path) -> str:
    path = f"file://{tmp_path}/layer"
    ss.make_layer(path)
    return path


def running(tasks: int) -> dict:
    """`step.status()` of a volume where `tasks` tasks committed and the step is still open."""
    return {
        "tasks": tasks,
        "failed": [],
        "failed_after_commit": [],
        "incomplete": [],
        "open": True,
        "finished": False,
        "late": "",
    }


def test_200_tasks_on_4_task_queue_workers_leave_one_record(tmp_path, layer: str) -> None:
    step = open_step(layer)
    never_finished = open_step(layer, description="a step nobody finishes")
    with cirrus.join(never_finished.token, task="lone") as session:
        ss.paint(session, layer, [0, 0, 0])

    queue = f"fq://{tmp_path}/queue"
    tq = TaskQueue(queue, progress=False)
    tasks = [ss.PaintTask(step.token, ss.task_id(o), layer, o) for o in ss.origins()]
    assert tq.insert(tasks) == 200
    payload = tasks[0].payload()  # what a task carries: no sources, motivation or process
    assert set(payload) == {"class", "token", "task_id", "layer", "origin", "marker", "action"}
    assert len(payload["token"]) < 300

    assert run_workers(queue, 4) == [0, 0, 0, 0]
    assert tq.is_empty()

    report = step.status()["volumes"][layer]
    assert report == running(200)
    assert step.id in summary_json(layer)["cirrus"]["open_steps"]

    ids = step.finish()
    record = one_record(layer)
    assert record.status == "committed" and record.step == step.id
    assert record.tasks["count"] == 200 and record.tasks["committed"] == 200
    assert record.tasks["hosts"] == 1 and record.tasks["failures"] == []
    assert record.sources == ("gs://lab/aff",)
    assert record.process["description"] == "paint chunks"
    mip0 = record.writes["mips"]["0"]
    assert mip0["bounds"] == [0, 0, 0, *ss.SIZE]
    assert mip0["boxes"] == [[0, 0, 0, *ss.SIZE]]
    assert mip0["chunks"] == 200 and mip0["bytes"] == 200 * ss.CHUNK**3
    assert record.writes["operations"] == {"upload": 200}

    assert step.finish() == ids  # finishing again changes nothing
    assert [h.id for h in cirrus.history(layer)] == [ids[layer]]

    section = summary_json(layer)["cirrus"]
    assert step.id not in section["open_steps"]
    assert never_finished.id in section["open_steps"]
    assert section["open_steps"][never_finished.id]["description"] == "a step nobody finishes"
    assert never_finished.status()["volumes"][layer] == running(1)
    assert step_status(step.token)["volumes"][layer]["finished"] is True
    assert step_status(step.token)["volumes"][layer]["open"] is False


def test_plain_multiprocessing_pool(tmp_path) -> None:
    a, b = f"file://{tmp_path}/a", f"file://{tmp_path}/b"
    for path in (a, b):
        ss.make_layer(path, size=(64, 64, 16))
    step = open_step(a, b)
    jobs = [
        (step.token, ss.task_id(o), layer, o) for layer in (a, b) for o in ss.origins((4, 4, 1))
    ]
    with ss.context().Pool(4) as pool:
        done = pool.map(ss.pool_task, jobs)
    assert len({entry.split(":")[0] for entry in done}) > 1  # really several processes
    ids = step.finish()
    assert set(ids) == {a, b}
    for path in (a, b):
        record = one_record(path)
        assert record.tasks["count"] == 16
        assert record.writes["mips"]["0"]["bounds"] == [0, 0, 0, 64, 64, 16]
        assert record.siblings == tuple({a, b} - {path})


def test_killed_worker_task_is_redelivered_and_counted_once(tmp_path, layer: str) -> None:
    """A worker SIGKILLed after writing a chunk, before its fragment: the lease expires, another
    worker runs the task again, and the step counts it once."""
    step = open_step(layer)
    origins = ss.origins((3, 2, 1))
    doomed = origins[2]
    queue = f"fq://{tmp_path}/queue"
    marker = str(tmp_path / "killed-once")
    TaskQueue(queue, progress=False).insert(
        partial(
            ss.paint_fn, step.token, ss.task_id(o), layer, o, marker if o == doomed else "", "kill"
        )
        for o in origins
    )
    exitcodes = run_workers(queue, 2, lease_seconds=2)
    assert sorted(exitcodes) == [-9, 0]  # one worker died by SIGKILL
    # The other one drains the queue, unless it ran out of work before the kill: then a
    # restarted worker (as Kubernetes would start) picks the task up after its lease expires.
    assert run_workers(queue, 1, lease_seconds=2) == [0]
    assert os.path.exists(marker)
    assert step.status()["volumes"][layer]["tasks"] == 6
    step.finish()
    record = one_record(layer)
    assert record.tasks["count"] == 6 and record.status == "committed"
    assert record.writes["mips"]["0"]["chunks"] == 6


def test_killed_task_rerun_by_id_after_its_data_was_written(tmp_path, layer: str) -> None:
    step = open_step(layer)
    ctx = ss.context()
    marker = str(tmp_path / "killed-once")
    task = ss.PaintTask(step.token, "x0_y0_z0", layer, [0, 0, 0], marker, "kill")
    proc = ctx.Process(target=task.execute)
    proc.start()
    proc.join(60)
    assert proc.exitcode == -9
    assert step.status()["volumes"][layer]["tasks"] == 0  # the data is there, no fragment yet
    ss.PaintTask(**{k: v for k, v in task.payload().items() if k != "class"}).execute()
    step.finish()
    assert one_record(layer).tasks["count"] == 1


def test_task_delivered_twice_is_counted_once(layer: str) -> None:
    step = open_step(layer)
    for _ in range(2):
        ss.PaintTask(step.token, "x0_y0_z0", layer, [0, 0, 0]).execute()
    ss.paint_fn(step.token, "x16_y0_z0", layer, [16, 0, 0])
    ss.paint_fn(step.token, "x16_y0_z0", layer, [16, 0, 0])
    step.finish()
    record = one_record(layer)
    assert record.tasks["count"] == 2 and record.tasks["committed"] == 2
    # each delivery wrote its chunk: two chunk writes per task, over the same two chunks
    assert record.writes["mips"]["0"]["chunks"] == 4
    assert record.writes["mips"]["0"]["bounds"] == [0, 0, 0, 32, 16, 16]


def test_a_task_rejoined_after_it_committed_keeps_both_attempts_writes(layer: str) -> None:
    """Task ids name the unit of work, so a user re-runs one under the same id: its new chunks
    must be in the record, not dropped because an earlier attempt committed."""
    step = open_step(layer)
    ss.paint_fn(step.token, "t1", layer, [0, 0, 0])
    ss.paint_fn(step.token, "t1", layer, [16, 0, 0])  # a later attempt writes further
    step.finish()
    record = one_record(layer)
    assert record.tasks["count"] == 1 and record.status == "committed"
    assert record.writes["mips"]["0"]["bounds"] == [0, 0, 0, 32, 16, 16]


def test_storing_an_attempt_again_does_not_fold_it_twice(layer: str) -> None:
    """A retried store (its first response lost) or a retried abort must not double writes."""
    step = open_step(layer)
    fail_attempt(step, "t", layer, [0, 0, 0], "attempt 1")
    fail_attempt(step, "t", layer, [16, 0, 0], "attempt 2")
    files = StepFiles.open(layer)
    (stored,) = files.fragments(step.id)
    assert stored["attempts"] == 2 and len(stored["attempt_ids"]) == 2
    second = {**stored, "attempt_ids": stored["attempt_ids"][1:]}  # attempt 2, stored again
    assert files.put_fragment(step.id, "t", second) is False
    assert files.fragments(step.id) == [stored]
    assert stored["writes"]["mips"]["0"]["chunks"] == 2


def test_a_late_task_after_finish_supersedes_the_first_record_not_doubles_it(layer: str) -> None:
    step = open_step(layer)
    ss.paint_fn(step.token, "x0_y0_z0", layer, [0, 0, 0])
    first = step.finish()[layer]
    ss.paint_fn(step.token, "x16_y0_z0", layer, [16, 0, 0])  # a late redelivery
    second = step.finish()[layer]
    assert first != second
    record = one_record(layer)  # the history shows the step once, with both tasks
    assert record.tasks["count"] == 2 and record.writes["mips"]["0"]["chunks"] == 2
    pointers = summary_json(layer)["cirrus"]["records"]
    assert {p["id"]: p.get("superseded_by") for p in pointers} == {first: second, second: None}
    keys = KeyCounter()
    with wrap_backends(lambda backend: KeyCountingBackend(backend, keys)):
        assert step.finish()[layer] == second  # and finishing again changes nothing
    assert keys.count(method="put_new") == keys.count(method="put_if_match") == 0, keys.calls
    assert "open_steps" not in summary_json(layer)["cirrus"]
    # `cirrus show` of the older record says the later one stands instead
    shown = invoke("show", layer, first[:12]).output
    assert shown.startswith(f"SUPERSEDED by record {second[:12]}, a later finish of its step")
    assert f"`cirrus show {layer} {second[:12]}`" in shown
    assert not invoke("show", layer, second[:12]).output.startswith("SUPERSEDED")
    standing = json.loads(invoke("show", layer, first, "--json").output)["standing"]
    assert standing == {"published": True, "superseded_by": second}


def test_a_late_task_on_another_volume_makes_the_new_finish_stand_here_too(tmp_path) -> None:
    """Here the second finish differs from the first only in its siblings (same tasks, same
    end): it must still stand, whichever record id sorts first."""
    from cirrus.summary import current_ids, empty_summary, merge

    a, b = (f"file://{tmp_path}/{name}" for name in "ab")
    for path in (a, b):
        ss.make_layer(path)
    step = open_step(a, b)
    ss.paint_fn(step.token, "t1", a, [0, 0, 0])
    first = step.finish()[a]
    ss.paint_fn(step.token, "t2", b, [0, 0, 0])  # late, and only on b
    second = step.finish()[a]
    ledger = Ledger.open(a)
    older, newer = (ledger.read_record(rid).record.to_json() for rid in (first, second))
    assert older["tasks"]["count"] == newer["tasks"]["count"] and older["ended"] == newer["ended"]
    for older_id, newer_id in (("f" * 64, "0" * 64), ("0" * 64, "f" * 64)):
        merged = merge(empty_summary(), {older_id: older, newer_id: newer})
        assert current_ids(merged) == [newer_id]
    assert [stored.id for stored in cirrus.history(a)] == [second]


def test_verify_reports_tasks_that_ran_after_the_finish_until_it_is_finished_again(
    layer: str,
) -> None:
    from cirrus.verify import verify

    step = open_step(layer)
    ss.paint_fn(step.token, "x0_y0_z0", layer, [0, 0, 0])
    step.finish()
    assert verify(layer).ok
    ss.paint_fn(step.token, "x16_y0_z0", layer, [16, 0, 0])  # the queue redelivered it late
    report = verify(layer)
    (problem,) = report.problems
    assert "2 tasks filed fragments here but its record" in problem and "counts 1" in problem
    assert "cirrus step finish TOKEN" in problem
    step.finish()
    assert verify(layer).ok


def test_verify_reports_a_late_task_on_a_volume_the_finish_left_without_a_record(
    tmp_path,
) -> None:
    """At the finish only a had fragments, so b got no record and its listing was cleared."""
    from cirrus.verify import verify

    a, b = (f"file://{tmp_path}/{name}" for name in "ab")
    for path in (a, b):
        ss.make_layer(path)
    step = open_step(a, b)
    ss.paint_fn(step.token, "x0_y0_z0", a, [0, 0, 0])
    step.finish()
    assert verify(b).ok
    ss.paint_fn(step.token, "x16_y0_z0", b, [16, 0, 0])  # redelivered after the finish
    (problem,) = verify(b).problems
    assert "1 tasks filed fragments here, but the step is neither open here nor recorded" in (
        problem
    )
    step.finish()
    assert verify(b).ok and one_record(b).tasks["count"] == 1


def test_verify_reports_a_failed_task_rerun_after_the_finish(layer: str) -> None:
    from cirrus.verify import verify

    step = open_step(layer)
    ss.paint_fn(step.token, "x0_y0_z0", layer, [0, 0, 0])
    fail_attempt(step, "x16_y0_z0", layer, [16, 0, 0], "preempted")
    step.finish()
    assert verify(layer).ok and one_record(layer).status == "failed"
    ss.paint_fn(step.token, "x16_y0_z0", layer, [16, 0, 0])  # same count, now committed
    (problem,) = verify(layer).problems
    assert "2 tasks here have committed but its record" in problem and "counts 1" in problem
    step.finish()
    assert verify(layer).ok and one_record(layer).status == "committed"


def test_a_rerun_that_skips_what_its_failed_attempt_wrote_completes_the_task_everywhere(
    tmp_path,
) -> None:
    """Idempotent tasks (igneous's) skip chunks that exist: the failed attempt's writes on a and
    b stay in the records, and its fragment on b, which the re-run never wrote, is no failure."""
    a, b = (f"file://{tmp_path}/{name}" for name in "ab")
    for path in (a, b):
        ss.make_layer(path)
    step = open_step(a, b)
    with pytest.raises(RuntimeError), cirrus.join(step.token, task="t") as session:
        ss.paint(session, a, [0, 0, 0])
        ss.paint(session, b, [0, 0, 0])
        raise RuntimeError("preempted")
    assert step.status()["volumes"][b]["failed"] == ["t"]
    with cirrus.join(step.token, task="t") as session:  # b's chunk is there already
        ss.paint(session, a, [16, 0, 0])
    assert step.status()["volumes"][b]["failed"] == []
    step.finish()
    for path, bounds in ((a, [0, 0, 0, 32, 16, 16]), (b, [0, 0, 0, 16, 16, 16])):
        record = one_record(path)
        assert record.status == "committed" and record.error is None
        assert record.tasks["count"] == 1 and record.tasks["failed"] == 0
        assert record.writes["mips"]["0"]["bounds"] == bounds
    (fragment,) = StepFiles.open(a).fragments(step.id)
    assert fragment["attempts"] == 2 and fragment["status"] == "committed"


def test_every_failed_attempt_of_a_task_keeps_its_writes(layer: str) -> None:
    step = open_step(layer)
    for attempt, origin in enumerate(([0, 0, 0], [16, 0, 0]), 1):
        fail_attempt(step, "t", layer, origin, f"attempt {attempt} failed")
    step.finish()
    record = one_record(layer)
    assert record.status == "failed" and record.tasks["count"] == 1
    assert record.writes["mips"]["0"]["bounds"] == [0, 0, 0, 32, 16, 16]
    assert record.tasks["failures"] == [
        {"task": "t", "error": {"type": "RuntimeError", "message": "attempt 2 failed"}}
    ]


def test_a_late_fragment_that_ended_first_still_makes_the_second_finish_stand(
    tmp_path, layer: str
) -> None:
    """Task a ends first but its fragment lands after the first finish (a slow upload): both
    finishes end at task b's time, and the one with both tasks must stand whatever the ids."""
    step = open_step(layer)
    ss.paint_fn(step.token, "a", layer, [0, 0, 0])
    tasks = tmp_path / "layer" / "provenance.d" / "steps" / step.id / "tasks"
    in_flight = tmp_path / "a.json"
    os.rename(tasks / "a.json", in_flight)  # not landed yet
    ss.paint_fn(step.token, "b", layer, [16, 0, 0])
    first = step.finish()[layer]
    os.rename(in_flight, tasks / "a.json")
    second = step.finish()[layer]
    pointers = summary_json(layer)["cirrus"]["records"]
    assert {p["id"]: p.get("superseded_by") for p in pointers} == {first: second, second: None}
    assert [p["ended"] for p in pointers][0] == [p["ended"] for p in pointers][1]
    assert one_record(layer).tasks["count"] == 2


def test_a_second_finish_that_dies_before_publishing_is_rolled_forward_by_the_next_commit(
    layer: str,
) -> None:
    """Finishing again lists the step again until its new record is published, so the next
    commit on the volume looks for the record a dead finish staged, and publishes it."""
    step = open_step(layer)
    ss.paint_fn(step.token, "x0_y0_z0", layer, [0, 0, 0])
    first = step.finish()[layer]
    ss.paint_fn(step.token, "x16_y0_z0", layer, [16, 0, 0])  # a late redelivery
    staged = []

    def die_at_publish(_cloudpath: str, key: str) -> None:
        if key.startswith("provenance.d/records/"):
            staged.append(key)
        elif key == "provenance" and staged:
            raise KeyboardInterrupt("the finish dies between staging and publishing")

    with hooked(before=die_at_publish), pytest.raises(KeyboardInterrupt):
        step.finish()
    assert [h.id for h in cirrus.history(layer)] == [first]
    assert list(summary_json(layer)["cirrus"]["open_steps"]) == [step.id]

    with cirrus.session(["src"], "next", cirrus.Process("other step", {})) as s:
        s.volume(layer)[0:16, 0:16, 0:16] = 1
    history = cirrus.history(layer)
    assert history[0].record.step == step.id and history[0].record.tasks["count"] == 2
    assert [h.record.step for h in history] == [step.id, None]
    assert "open_steps" not in summary_json(layer)["cirrus"]


def test_task_failed_then_succeeded_counts_as_committed(tmp_path, layer: str) -> None:
    step = open_step(layer)
    task = ss.PaintTask(step.token, "x0_y0_z0", layer, [0, 0, 0], str(tmp_path / "m"), "fail")
    with pytest.raises(RuntimeError, match="on purpose"):
        task.execute()
    assert step.status()["volumes"][layer]["failed"] == ["x0_y0_z0"]
    task.execute()
    assert step.status()["volumes"][layer]["failed"] == []
    step.finish()
    record = one_record(layer)
    assert record.status == "committed"
    assert record.tasks == {
        "count": 1,
        "committed": 1,
        "failed": 0,
        "failures": [],
        "hosts": 1,
        "attempts": 2,  # the failed attempt and the re-run, folded into one fragment
        "step_attempts": 2,
    }


def test_finishing_with_failed_tasks_records_them(tmp_path, layer: str) -> None:
    step = open_step(layer)
    for i, origin in enumerate(ss.origins((3, 1, 1))):
        marker = str(tmp_path / f"m{i}") if i == 1 else ""
        with contextlib.suppress(RuntimeError):
            ss.paint_fn(step.token, ss.task_id(origin), layer, origin, marker, "fail")
    step.finish()
    record = one_record(layer)
    assert record.status == "failed"
    assert record.error["type"] == "TaskFailures" and "1 of 3" in record.error["message"]
    assert record.tasks["count"] == 3 and record.tasks["failed"] == 1
    assert record.tasks["failures"] == [
        {
            "task": "x16_y0_z0",
            "error": {"type": "RuntimeError", "message": "first attempt fails on purpose (m1)"},
        }
    ]
    assert summary_json(layer)["cirrus"]["records"][0]["status"] == "failed"


def test_a_task_that_fails_before_its_first_write_is_counted_as_failed(layer: str) -> None:
    step = open_step(layer)
    ss.paint_fn(step.token, "x0_y0_z0", layer, [0, 0, 0])
    with pytest.raises(OSError), cirrus.join(step.token, task="no-input"):
        raise OSError("the input chunk is missing")
    with cirrus.join(step.token, task="empty-region"):
        pass  # nothing to write here: a success that wrote nothing
    assert step.status()["volumes"][layer]["failed"] == ["no-input"]
    step.finish()
    record = one_record(layer)
    assert record.status == "failed" and record.tasks["count"] == 3
    assert record.tasks["failures"] == [
        {"task": "no-input", "error": {"type": "OSError", "message": "the input chunk is missing"}}
    ]
    assert record.writes["mips"]["0"]["chunks"] == 1


def test_a_step_with_expected_task_ids_is_failed_until_every_one_has_filed(
    tmp_path, layer: str
) -> None:
    """The killed task leaves no trace of its own; the step knew it was expected."""
    process = cirrus.Process("paint chunks", {"value": 1})
    step = cirrus.step(["gs://lab/aff"], "all or nothing", process, [layer], tasks=["a", "b", "c"])
    ss.paint_fn(step.token, "a", layer, [0, 0, 0])
    ss.paint_fn(step.token, "b", layer, [16, 0, 0])
    assert step.status()["missing_tasks"] == ["c"]
    first = step.finish()[layer]
    record = one_record(layer)
    assert record.status == "failed" and record.error["type"] == "Incomplete"
    assert record.error["message"].startswith("1 of 3 expected tasks filed nothing (c)")
    assert record.tasks["expected"] == 3 and record.tasks["missing_tasks"] == ["c"]
    ss.paint_fn(step.token, "c", layer, [32, 0, 0])  # re-run
    second = step.finish()[layer]
    record = one_record(layer)
    assert record.status == "committed" and record.tasks["missing"] == 0
    pointers = summary_json(layer)["cirrus"]["records"]
    assert {p["id"]: p.get("superseded_by") for p in pointers} == {first: second, second: None}


def test_an_incomplete_step_finished_again_is_superseded_on_every_volume(tmp_path) -> None:
    """Volume a's fragments did not change between the finishes, but its first record said a
    task was missing: the second, with none missing, stands there too."""
    a, b = (f"file://{tmp_path}/{name}" for name in "ab")
    for path in (a, b):
        ss.make_layer(path)
    process = cirrus.Process("paint chunks", {"value": 1})
    step = cirrus.step(["gs://lab/aff"], "two tasks", process, [a, b], tasks=["t1", "t2"])
    ss.paint_fn(step.token, "t1", a, [0, 0, 0])
    step.finish()
    ss.paint_fn(step.token, "t2", b, [0, 0, 0])
    second = step.finish()
    for path in (a, b):
        record = one_record(path)
        assert (record.status, record.tasks["missing"]) == ("committed", 0), path
        assert cirrus.history(path)[0].id == second[path]


def test_a_step_whose_expected_tasks_all_died_is_recorded_incomplete(tmp_path) -> None:
    """No fragment anywhere: the step's listing was its only trace, so finishing records it."""
    a, b = (f"file://{tmp_path}/{name}" for name in "ab")
    for path in (a, b):
        ss.make_layer(path)
    process = cirrus.Process("paint chunks", {"value": 1})
    step = cirrus.step(["gs://lab/aff"], "all killed", process, [a, b], tasks=2)
    ids = step.finish()
    assert sorted(ids) == [a, b]
    for path in (a, b):
        record = one_record(path)
        assert record.status == "failed" and record.error["type"] == "Incomplete"
        assert record.error["message"].startswith("2 of 2 expected tasks filed nothing")
        assert record.writes["mips"] == {}
    ss.paint_fn(step.token, "x0", a, [0, 0, 0])
    ss.paint_fn(step.token, "x1", a, [16, 0, 0])
    step.finish()
    assert [one_record(path).status for path in (a, b)] == ["committed", "committed"]
    assert one_record(a).tasks["count"] == 2 and one_record(b).tasks["count"] == 0


def test_expected_task_ids_are_kept_beside_the_manifest_every_task_reads(layer: str) -> None:
    ids = [f"x{i}" for i in range(5000)]
    step = cirrus.step(["s"], "m", cirrus.Process("p", {}), [layer], tasks=ids)
    files = StepFiles.open(layer)
    assert files.expected(step.id) == sorted(ids)
    manifest = files.manifest(step.id)
    assert manifest["expected_tasks"] == 5000 and "x4999" not in json.dumps(manifest)


def test_a_step_with_an_expected_task_count_names_how_many_are_missing(layer: str) -> None:
    process = cirrus.Process("paint chunks", {"value": 1})
    step = cirrus.step(["gs://lab/aff"], "count them", process, [layer], tasks=3)
    ss.paint_fn(step.token, "a", layer, [0, 0, 0])
    step.finish()
    record = one_record(layer)
    assert record.status == "failed"
    assert record.error["message"].startswith("2 of 3 expected tasks filed nothing; run them")
    assert step.status()["missing"] == 2


@pytest.mark.parametrize("tasks", [0, -1, True, "abc", [], ["a", "a"], ["a/b"], 2.5])
def test_expected_tasks_must_be_a_count_or_task_ids(layer: str, tasks) -> None:
    with pytest.raises(InvalidInput):
        cirrus.step(["s"], "m", cirrus.Process("p", {}), [layer], tasks=tasks)
    assert Ledger.open(layer).store.get("provenance") is None


def test_join_refuses_a_volume_outside_the_step(tmp_path, layer: str) -> None:
    other = f"file://{tmp_path}/other"
    ss.make_layer(other)
    step = open_step(layer)
    session = cirrus.join(step.token, task="t1")
    with pytest.raises(StepError, match="not one of this step's volumes"):
        session.volume(other)
    session.commit()
    assert Ledger.open(other).store.list("provenance.d/") == []


def test_join_refuses_a_token_of_a_step_never_opened_before_writing(layer: str) -> None:
    """A hand-made or mistyped token: its fragments could never be finished."""
    token = json.dumps({"cirrus_step": 1, "id": "ab" * 16, "volumes": [layer]})
    with (
        cirrus.join(token, task="t1") as task,
        pytest.raises(StepError, match="never opened on .*no manifest"),
    ):
        task.volume(layer)
    assert Ledger.open(layer).store.list("provenance.d/") == []
    assert Ledger.open(layer).store.get("provenance") is None


def test_a_task_reads_one_manifest_and_files_one_fragment_per_volume(tmp_path) -> None:
    """What a task costs the provenance store, however many volumes it writes: the manifest
    once, then a create per volume. It never reads the summary, which only finishes touch."""
    paths = [f"file://{tmp_path}/{name}" for name in "abc"]
    for path in paths:
        ss.make_layer(path)
    step = open_step(*paths)
    keys = KeyCounter()
    with (
        wrap_backends(lambda backend: KeyCountingBackend(backend, keys)),
        cirrus.join(step.token, task="t1") as task,
    ):
        for path in paths:
            ss.paint(task, path, [0, 0, 0])
    assert sum(keys.calls.values()) == 4, keys.calls
    assert keys.count(method="get", kind="steps") == 1
    assert keys.count(method="put_new", kind="steps") == 3
    assert all(len(StepFiles.open(path).fragments(step.id)) == 1 for path in paths)


def test_join_refuses_a_volume_added_to_the_token_by_hand(tmp_path, layer: str) -> None:
    """A token whose volumes are not the step's is refused at the task's first volume, as the
    finish refuses it: before any write, on the step's volumes too (`test_step_token`)."""
    other = f"file://{tmp_path}/other"
    ss.make_layer(other)
    step = open_step(layer)
    edited = json.loads(step.token)
    edited["volumes"].append(other)
    for target in (layer, other):
        with (
            cirrus.join(json.dumps(edited), task="t1") as task,
            pytest.raises(StepError, match=f"it adds {other}, which the step was not opened on"),
        ):
            task.volume(target)
    assert Ledger.open(other).store.list("provenance.d/") == []
    assert StepFiles.open(layer).fragments(step.id) == []


def test_opening_a_step_checks_every_volume_before_writing_to_any(tmp_path, layer: str) -> None:
    broken = f"file://{tmp_path}/broken"
    ss.make_layer(broken)
    (tmp_path / "broken" / "provenance").write_bytes(b"{not json")
    typo = f"file://{tmp_path}/typo"
    with pytest.raises(CorruptProvenance, match="cirrus repair"):
        open_step(layer, broken)
    with pytest.raises(InvalidInput, match="no info file, so it is not a CloudVolume layer"):
        open_step(layer, typo)
    assert Ledger.open(layer).store.list("provenance.d/") == []
    assert Ledger.open(layer).store.get("provenance") is None
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize(
    "token",
    [
        "not json",
        "[]",
        "42",
        "null",
        '{"id": "0123456789abcdef0123456789abcdef", "volumes": ["file:///x"]}',
        '{"cirrus_step": 1, "id": "../../etc", "volumes": ["file:///x"]}',
        '{"cirrus_step": 1, "id": "0123456789abcdef0123456789abcdef"}',
        '{"cirrus_step": 1, "id": "0123456789abcdef0123456789abcdef", "volumes": ["nope"]}',
        {"cirrus_step": 1},
        None,
    ],
)
def test_malformed_token_is_a_clear_step_error(token) -> None:
    with pytest.raises(StepError, match="not a cirrus step token .*pass the string `step.token`"):
        cirrus.join(token, task="t1")


@pytest.mark.parametrize("task", ["a/b", "..", "../x", "x/../y", "/abs", "", "a b", 7])
def test_unsafe_task_ids_are_refused(layer: str, task) -> None:
    step = open_step(layer)
    with pytest.raises(InvalidInput, match="task id"):
        cirrus.join(step.token, task=task)
    with pytest.raises(InvalidInput, match="task id"):
        ss.PaintTask(step.token, task, layer, [0, 0, 0])


def test_tasks_need_no_provenance_arguments(layer: str) -> None:
    """A task knows only the token and its id; the record carries the step's provenance."""
    step = open_step(layer)
    token = json.loads(step.token)
    assert set(token) == {"cirrus_step", "id", "volumes"}
    ss.paint_fn(step.token, "x0_y0_z0", layer, [0, 0, 0])
    record = step.finish()
    stored = Ledger.open(layer).read_record(record[layer]).record
    assert stored.notes[0]["kind"] == "motivation" and stored.notes[0]["text"] == "bootstrap"
    assert stored.process["parameters"] == {"chunk": ss.CHUNK, "value": 1}


def test_step_task_accepts_a_step_object_and_checks_the_token_early(layer: str) -> None:
    step = open_step(layer)
    assert ss.PaintTask(step, "t1", layer, [0, 0, 0]).token == step.token
    with pytest.raises(StepError):
        ss.PaintTask("garbage", "t1", layer, [0, 0, 0])


def test_import_cirrus_does_not_import_taskqueue() -> None:
    import subprocess
    import sys

    code = (
        "import sys, cirrus; print('taskqueue' in sys.modules, 'cirrus.taskqueue' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_a_step_expecting_tasks_refuses_an_unnamed_task_before_it_writes(layer: str) -> None:
    """A random id would count as one more task at every re-run, filling the expected count."""
    process = cirrus.Process("paint chunks", {"value": 1})
    step = cirrus.step(["gs://lab/aff"], "counted", process, [layer], tasks=2)
    with (
        pytest.raises(StepError, match=r"expects 2 tasks.*task=") as caught,
        cirrus.join(step.token) as session,
    ):
        ss.paint(session, layer, [0, 0, 0])
    assert "cirrus.join(token, task=...)" in str(caught.value)
    assert StepFiles.open(layer).task_count(step.id) == 0
    keys = Ledger.open(layer).store.list("")
    assert all(key == "info" or key.startswith("provenance") for key in keys), keys  # no chunk


def test_a_task_filed_under_an_id_the_step_does_not_expect_is_named(layer: str) -> None:
    process = cirrus.Process("paint chunks", {"value": 1})
    step = cirrus.step(["gs://lab/aff"], "named", process, [layer], tasks=["t1", "t2"])
    ss.paint_fn(step.token, "t1", layer, [0, 0, 0])
    ss.paint_fn(step.token, "T2", layer, [16, 0, 0])  # a typo in the task's id
    assert step.status()["unexpected_tasks"] == ["T2"]
    step.finish()
    record = one_record(layer)
    assert record.status == "failed" and record.tasks["unexpected_tasks"] == ["T2"]
    message = record.error["message"]
    assert message.startswith("1 of 2 expected tasks filed nothing (t2); tasks filed under ids")
    assert "(T2)" in message


def test_step_task_functions_check_token_and_task_id_when_queued(tmp_path, layer: str) -> None:
    """Checked at insert time: a bad id queued as a plain partial fails in every worker, and
    the queue re-delivers it forever."""
    step = open_step(layer)
    with pytest.raises(InvalidInput, match="task id 'a/b' is not usable"):
        ss.paint_fn.task(step, "a/b", layer, [0, 0, 0])
    with pytest.raises(StepError):
        ss.paint_fn.task("garbage", "x0_y0_z0", layer, [0, 0, 0])
    queue = f"fq://{tmp_path}/queue"
    TaskQueue(queue).insert([ss.paint_fn.task(step, "x0_y0_z0", layer, [0, 0, 0])])
    assert run_workers(queue, 1) == [0]
    step.finish()
    assert one_record(layer).tasks["count"] == 1


def test_verify_reports_any_attempt_after_the_finish_even_with_the_same_counts(
    layer: str,
) -> None:
    """A failed task that fails again, or a committed one run again, changes no count: its
    fragment's end time says it ran after the record was made."""
    from cirrus.verify import verify

    step = open_step(layer)
    ss.paint_fn(step.token, "done", layer, [0, 0, 0])
    fail_attempt(step, "flaky", layer, [16, 0, 0], "attempt 1")
    step.finish()
    assert verify(layer).ok
    fail_attempt(step, "flaky", layer, [32, 0, 0], "attempt 2")
    (problem,) = verify(layer).problems
    assert "after its record's last task" in problem and "finish it again" in problem
    step.finish()
    assert verify(layer).ok
    ss.paint_fn(step.token, "done", layer, [48, 0, 0])  # run again after it committed
    (problem,) = verify(layer).problems
    assert "after its record's last task" in problem
    step.finish()
    assert verify(layer).ok
    assert one_record(layer).writes["mips"]["0"]["bounds"] == [0, 0, 0, 64, 16, 16]


def test_the_summary_shows_a_few_task_notes_and_counts_the_rest_which_the_record_keeps(
    layer: str,
) -> None:
    """Thousands of tasks' result notes would make every later commit rewrite them all."""
    from cirrus.summary import NOTES_SHOWN

    step = open_step(layer)
    for i in range(25):
        with cirrus.join(step.token, task=f"t{i:02}") as task:
            task.result(f"chunk {i} done")
    rid = step.finish()[layer]
    notes = [(note["kind"], note["text"]) for note in one_record(layer).notes]
    assert notes == [("motivation", "bootstrap")] + [
        ("result", f"chunk {i} done") for i in range(25)
    ]
    lines = summary_json(layer)["description"].split(" \n ")
    assert len(lines) == NOTES_SHOWN
    assert lines[0].endswith(";MOTIVATION;bootstrap")
    assert lines[-1].endswith(
        f";GENERIC;17 more notes in cirrus record {rid[:12]} (`cirrus show PATH {rid[:12]}`)"
    )
    assert "chunk 24 done" in invoke("show", layer, rid[:12]).output
    invoke("verify", layer)  # the notes counted, not shown, are no missing notes
    # a repair rebuilds on the old description: the record's notes are not shown twice
    broken = summary_json(layer)
    broken["sources"] = "gs://lab/aff"
    (Path(layer.removeprefix("file://")) / "provenance").write_text(json.dumps(broken))
    invoke("repair", layer)
    assert summary_json(layer)["description"].split(" \n ") == lines
    invoke("verify", layer)
