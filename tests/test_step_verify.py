"""`cirrus verify` on a volume that a task wrote after its step was finished, but where its
fragment was never filed: only the fragments on the step's other volumes say it wrote there.

Each test leaves a step where users' steps end up (a task killed between its volumes, a volume
refusing the fragment, another volume deleted or unreadable) and checks what `cirrus verify`
prints and its exit status.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

import cirrus
from cirrus import stepfinish
from cirrus.errors import PermanentStorageError
from cirrus.storage import wrap_backends
from tests import step_support as ss
from tests.cli_support import invoke
from tests.test_step_attempts import block_fragments, cut_short_on_bnd, one_record, open_step


@pytest.fixture
def two(tmp_path) -> tuple[str, str]:
    return ss.seg_and_bnd(tmp_path)


def write_both(step: cirrus.Step, task: str, seg: str, bnd: str, x: int = 0) -> None:
    """One whole attempt of `task`: paints its chunk on seg, then on bnd, and files both."""
    with cirrus.join(step.token, task=task) as session:
        ss.paint(session, seg, [x, 0, 0])
        ss.paint(session, bnd, [x, 0, 0])


def finished_then_killed(seg: str, bnd: str) -> cirrus.Step:
    """A step finished after task b wrote seg and bnd; then task a, delivered late, wrote both
    and was SIGKILLed after filing its fragment on seg, before bnd (a preempted worker)."""
    step = open_step(seg, bnd)
    write_both(step, "b", seg, bnd, x=16)
    step.finish()
    invoke("verify", seg, bnd)  # both ok before
    child = ss.context().Process(
        target=ss.killed_between_fragments, args=(step.token, "a", [seg, bnd])
    )
    child.start()
    child.join(60)
    assert child.exitcode == -9
    return step


def test_verify_reports_a_task_killed_after_the_finish_on_the_volume_it_never_filed_on(
    two,
) -> None:
    seg, bnd = two
    step = finished_then_killed(seg, bnd)
    out = invoke("verify", bnd, code=1).stdout
    assert f"PROBLEM: step {step.id[:12]}: 1 task(s) (a) wrote here" in out
    assert "cut short (killed, or a storage error)" in out
    assert "after the step was finished: no record holds their writes here" in out
    assert "Re-run them under their ids (`cirrus.join(token, task=...)`)" in out
    assert f"(`cirrus step finish TOKEN`; `cirrus step token {bnd} {step.id[:12]}`" in out
    assert "1 problem(s)" in out
    token = invoke("step", "token", bnd, step.id[:12]).stdout  # the command it names works
    assert json.loads(token)["id"] == step.id
    out = invoke("verify", seg, code=1).stdout  # a's fragment is here: reported as before
    assert "tasks ran after it was finished" in out and "wrote here" not in out


def test_verify_reads_the_volumes_its_record_names_when_the_manifest_here_is_damaged(
    tmp_path, two
) -> None:
    seg, bnd = two
    step = finished_then_killed(seg, bnd)
    manifest = tmp_path / "bnd" / "provenance.d" / "steps" / step.id / "step.json"
    manifest.write_text("{")
    out = invoke("verify", bnd, code=1).stdout
    assert "step.json is damaged" in out and "1 task(s) (a) wrote here" in out


def test_verify_leaves_to_the_record_a_task_its_finish_counted_incomplete(two) -> None:
    """Finishing again records bnd as failed, naming task a: verify does not report it again."""
    seg, bnd = two
    step = finished_then_killed(seg, bnd)
    assert "Incomplete" in invoke("step", "finish", step.token, code=1).stdout
    assert one_record(bnd).tasks["incomplete_tasks"] == ["a"]
    out = invoke("verify", seg, bnd).stdout
    assert "PROBLEM" not in out and out.count("  ok\n") == 2


def test_verify_leaves_to_the_record_a_task_cut_short_before_the_finish(tmp_path, two) -> None:
    seg, bnd = two
    step = cut_short_on_bnd(tmp_path, seg, bnd)
    step.finish()
    assert one_record(bnd).tasks["incomplete_tasks"] == ["a"]
    assert "PROBLEM" not in invoke("verify", bnd).stdout


def test_verify_counts_a_task_the_record_counts_without_naming_it(
    tmp_path, two, monkeypatch
) -> None:
    """A record names at most MAX_LISTED_FAILURES incomplete tasks (1 here): the unnamed ones
    it counts are not reported, but a task cut short after the finish still is."""
    seg, bnd = two
    monkeypatch.setattr(stepfinish, "MAX_LISTED_FAILURES", 1)
    step = open_step(seg, bnd)

    def cut_short(task: str) -> None:
        blocker = block_fragments(tmp_path, "bnd", step)
        with pytest.raises(PermanentStorageError):
            write_both(step, task, seg, bnd)
        os.remove(blocker)

    for task in ("a", "b"):
        cut_short(task)
    step.finish()
    tasks = one_record(bnd).tasks
    assert (tasks["incomplete"], tasks["incomplete_tasks"]) == (2, ["a"])
    assert "PROBLEM" not in invoke("verify", bnd).stdout
    cut_short("c")
    assert "(b, c) wrote here" in invoke("verify", bnd, code=1).stdout


def test_verify_reports_a_task_cut_short_where_the_finish_left_no_record(tmp_path, two) -> None:
    """Only seg had a fragment at the finish, so bnd has no record of the step; a task that
    then wrote both could not file on bnd (storage refused it)."""
    seg, bnd = two
    step = open_step(seg, bnd)
    ss.paint_fn(step.token, "b", seg, [16, 0, 0])
    assert sorted(step.finish()) == [seg]
    blocker = block_fragments(tmp_path, "bnd", step)
    with pytest.raises(PermanentStorageError):
        write_both(step, "a", seg, bnd)
    os.remove(blocker)
    assert "1 task(s) (a) wrote here" in invoke("verify", bnd, code=1).stdout
    invoke("step", "finish", step.token, code=1)  # as told: bnd now records a as incomplete
    assert "PROBLEM" not in invoke("verify", bnd).stdout


def test_a_whole_rerun_settles_the_task_and_verify_asks_only_to_finish_again(two) -> None:
    seg, bnd = two
    step = finished_then_killed(seg, bnd)
    write_both(step, "a", seg, bnd)  # the queue re-runs it: filed on both
    out = invoke("verify", bnd, code=1).stdout
    assert "cut short" not in out and "tasks ran after it was finished" in out
    invoke("step", "finish", step.token)
    out = invoke("verify", seg, bnd).stdout
    assert "PROBLEM" not in out and out.count("  ok\n") == 2


def finished_on_both(seg: str, bnd: str) -> cirrus.Step:
    step = open_step(seg, bnd)
    write_both(step, "b", seg, bnd)
    step.finish()
    return step


def test_verify_notes_another_volume_of_the_step_that_is_gone(tmp_path, two) -> None:
    seg, bnd = two
    step = finished_on_both(seg, bnd)
    shutil.rmtree(tmp_path / "seg")
    out = invoke("verify", bnd).stdout  # nothing found wrong here: exit 0
    assert (
        f"note: step {step.id[:12]}: could not check for its tasks that wrote here but were "
        f"cut short before filing here: {seg}, another of its volumes, holds no manifest of it"
    ) in out
    assert out.endswith("  ok\n")


def refusing_lists_on(cloudpath_end: str):
    """A backend wrapper refusing to list the layer ending with `cloudpath_end` (a 403)."""

    class Refusing:
        def __init__(self, backend):
            self.backend, self.cloudpath = backend, backend.cloudpath

        def __getattr__(self, name):
            return getattr(self.backend, name)

        def list(self, prefix: str) -> list[str]:
            if self.cloudpath.endswith(cloudpath_end):
                raise PermanentStorageError("403 Forbidden", cloudpath=self.cloudpath)
            return self.backend.list(prefix)

    return Refusing


def test_verify_notes_another_volume_of_the_step_it_cannot_read(tmp_path, two) -> None:
    seg, bnd = two
    step = finished_on_both(seg, bnd)
    with wrap_backends(refusing_lists_on("/seg")):
        out = invoke("verify", bnd).stdout
    assert f"note: step {step.id[:12]}: could not check" in out
    assert f"{seg}, another of its volumes, could not be read (" in out and "403" in out
    assert out.endswith("  ok\n")
    fragment = tmp_path / "seg" / "provenance.d" / "steps" / step.id / "tasks" / "b.json"
    fragment.write_text("{")  # damaged: seg's own verify reports it, bnd's cannot check
    out = invoke("verify", bnd).stdout
    assert "could not check for its tasks that wrote here but were cut short before " in out
    assert f"{seg}: task b's fragment" in out and "is damaged" in out
    assert out.endswith("  ok\n")
