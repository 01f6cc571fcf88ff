"""A step token whose volumes are not the step's (edited by hand, a volume added or left out):
the finish, the status and the tasks refuse it before anything is written, naming the volumes
it adds or leaves out and the command that prints the real token. Real file:// layers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import cirrus
from cirrus.errors import IntegrityError, StepError
from cirrus.stepfiles import StepFiles
from tests import step_support as ss
from tests.cli_support import invoke
from tests.session_support import plain, summary_json


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` (layers, chunks and provenance alike), by path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def edited(step: cirrus.Step, add: tuple[str, ...] = (), drop: tuple[str, ...] = ()) -> str:
    """The step's token with volumes added or left out, as a hand edit would leave it."""
    token = json.loads(step.token)
    token["volumes"] = [v for v in token["volumes"] if v not in drop] + list(add)
    return json.dumps(token)


def open_step(*layers: str, tasks: int | None = None) -> cirrus.Step:
    process = cirrus.Process("paint chunks", {"value": 1})
    return cirrus.step(["gs://lab/aff"], "bootstrap", process, volumes=list(layers), tasks=tasks)


def paint_all(step: cirrus.Step, task: str, *layers: str) -> None:
    with cirrus.join(step.token, task=task) as session:
        for layer in layers:
            ss.paint(session, layer, [0, 0, 0])


@pytest.fixture
def volumes(tmp_path: Path) -> list[str]:
    """Three empty layers: seg, v2 and a (a real layer that is no volume of the steps)."""
    paths = [f"file://{tmp_path}/{name}" for name in ("seg", "v2", "a")]
    for path in paths:
        ss.make_layer(path)
    return paths


def refused(token: str, match: str) -> None:
    """The finish and the status refuse `token`, from Python and from the command (exit 2,
    one line on stderr)."""
    for call in (cirrus.finish, cirrus.step_status):
        with pytest.raises(StepError, match=match):
            call(token)
    for command in ("finish", "status"):
        result = invoke("step", command, token, code=2)
        (line,) = result.stderr.splitlines()
        assert line.startswith("cirrus: error: the token of step") and "Traceback" not in line


def test_a_finish_with_a_mistyped_volume_in_the_token_writes_nothing(
    tmp_path: Path, volumes: list[str]
) -> None:
    """The walkthrough's typo: the finish recorded the step on `tpyo`, where no layer is."""
    seg = volumes[0]
    step = open_step(seg, tasks=1)  # a step expecting tasks is recorded on every volume
    paint_all(step, "t1", seg)
    typo = f"file://{tmp_path}/tpyo"
    before = tree(tmp_path)
    refused(
        edited(step, add=(typo,)),
        f"it adds {typo}, which the step was not opened on. Pass the token unchanged: "
        f"`cirrus step token {seg} {step.id}` prints it",
    )
    assert tree(tmp_path) == before and not (tmp_path / "tpyo").exists()
    real = invoke("step", "token", seg, step.id[:8]).stdout.strip()
    assert "committed, record" in invoke("step", "finish", real).stdout
    assert not (tmp_path / "tpyo").exists()


def test_a_token_adding_another_layer_gives_it_no_record_and_seg_no_sibling(
    tmp_path: Path, volumes: list[str]
) -> None:
    seg, _, a = volumes
    step = open_step(seg, tasks=1)
    paint_all(step, "t1", seg)
    before = tree(tmp_path)
    refused(edited(step, add=(a,)), f"it adds {a}, which the step was not opened on")
    assert tree(tmp_path) == before
    step.finish()
    assert StepFiles.open(a).store.list("provenance.d/") == [] and summary_json(a) is None
    (stored,) = cirrus.history(seg)
    assert stored.record.siblings == ()


def test_a_token_leaving_a_volume_out_is_refused_so_that_none_stays_open(
    tmp_path: Path, volumes: list[str]
) -> None:
    """Finished through a token naming only seg, v2 stayed listed as an open step forever."""
    seg, v2, _ = volumes
    step = open_step(seg, v2)
    paint_all(step, "t1", seg, v2)
    before = tree(tmp_path)
    refused(edited(step, drop=(v2,)), f"it leaves out {v2}\\. Pass the token unchanged")
    assert tree(tmp_path) == before
    assert set(step.finish()) == {seg, v2}
    assert all(not summary_json(v)["cirrus"].get("open_steps") for v in (seg, v2))


def test_a_token_adding_one_volume_and_leaving_out_another_names_both(
    tmp_path: Path, volumes: list[str]
) -> None:
    seg, v2, a = volumes
    step = open_step(seg, v2)
    before = tree(tmp_path)
    refused(
        edited(step, add=(a,), drop=(v2,)),
        f"it adds {a}, which the step was not opened on; it leaves out {v2}\\.",
    )
    assert tree(tmp_path) == before


def test_a_token_spelling_or_ordering_the_volumes_otherwise_is_the_same_step(
    volumes: list[str],
) -> None:
    """Tokens hold normalised cloudpaths: another spelling of the same layers, in another
    order or named twice, is the step's token; its volumes are taken in the step's order, so
    its records are the ones the step's own token gives."""
    seg, v2, _ = volumes
    step = open_step(seg, v2)
    paint_all(step, "t1", seg, v2)
    token = json.loads(step.token)
    token["volumes"] = [f"precomputed://{v2}/", seg, f"{seg}/"]
    report = cirrus.step_status(token)
    assert list(report["volumes"]) == [seg, v2]
    ids = cirrus.finish(token)
    assert step.finish() == ids and all(len(cirrus.history(v)) == 1 for v in (seg, v2))
    assert cirrus.history(seg)[0].record.siblings == (v2,)
    finished = invoke("step", "finish", json.dumps(token)).stdout
    assert finished.index(seg) < finished.index(v2)


def manifest_file(layer: str, step: cirrus.Step) -> str:
    return os.path.join(layer.removeprefix("file://"), f"provenance.d/steps/{step.id}/step.json")


def test_a_manifest_damaged_on_one_volume_is_read_from_another_to_check_the_token(
    tmp_path: Path, volumes: list[str]
) -> None:
    seg, v2, a = volumes
    step = open_step(seg, v2)
    paint_all(step, "t1", seg, v2)
    with open(manifest_file(seg, step), "wb") as f:
        f.write(b"{")
    before = tree(tmp_path)
    with pytest.raises(StepError, match=f"it adds {a}, which the step was not opened on"):
        cirrus.finish(edited(step, add=(a,)))
    # left out: the token names no intact copy, so the damage is what is known, and named
    with pytest.raises(IntegrityError, match="step.json is damaged"):
        cirrus.finish(edited(step, drop=(v2,)))
    assert tree(tmp_path) == before
    assert set(step.finish()) == {seg, v2}  # the step's own token reads v2's copy


def test_a_task_refuses_a_token_that_leaves_out_a_volume_before_it_writes(
    volumes: list[str],
) -> None:
    """It used to write v1 (and call v2 `not one of this step's volumes`): the finish would
    refuse its token, so the task does, with the same words, before its first write."""
    seg, v2, _ = volumes
    step = open_step(seg, v2)
    for layer in (seg, v2):
        with (
            cirrus.join(edited(step, drop=(v2,)), task="t1") as task,
            pytest.raises(StepError, match=f"it leaves out {v2}\\. Pass the token unchanged"),
        ):
            task.volume(layer)
    assert plain(seg)[0:16, 0:16, 0:16].max() == 0
    assert all(StepFiles.open(v).fragments(step.id) == [] for v in (seg, v2))


def test_a_task_writing_nothing_files_on_the_steps_first_volume_whatever_the_token_order(
    volumes: list[str],
) -> None:
    seg, v2, _ = volumes
    step = open_step(seg, v2)
    token = json.loads(step.token)
    token["volumes"].reverse()
    with cirrus.join(token, task="idle"):
        pass
    assert [f["task"] for f in StepFiles.open(seg).fragments(step.id)] == ["idle"]
    assert StepFiles.open(v2).fragments(step.id) == []


def test_a_task_joins_with_the_step_itself_as_with_its_token(volumes: list[str]) -> None:
    seg = volumes[0]
    step = open_step(seg)
    with cirrus.join(step, task="t1") as session:
        ss.paint(session, seg, [0, 0, 0])
    assert session.records == {seg: "t1"}
    assert cirrus.step_status(step)["volumes"][seg]["tasks"] == 1
    finished = cirrus.finish(step)
    assert [record.id for record in cirrus.history(seg)] == [finished[seg]]
    assert list(finished) == [seg]
