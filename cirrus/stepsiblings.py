"""`cirrus verify`'s look at a finished step's other volumes, the one check that reads beyond
the layer verified: a task cut short before filing its fragment here (killed, or a storage
error) left no trace here, only its fragments on the other volumes it wrote say it wrote here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cirrus.errors import IntegrityError, InvalidInput, StorageError
from cirrus.overlap import overlapped
from cirrus.stepfiles import StepFiles, cut_short


def unfiled_here(
    here: str,
    step_id: str,
    fragments: list[dict[str, Any]],
    record: Mapping[str, Any] | None,
    volumes: Sequence[str],
) -> tuple[list[str], list[str]]:
    """`verify`'s problems and remarks on `here` about a finished step's tasks that wrote here
    but whose fragment here lacks that attempt (`stepfiles.cut_short` over `fragments`, here's,
    and the fragments on the step's other `volumes`), and which its standing `record` here does
    not count as incomplete: cut short after the finish, their writes here are in no record.
    Costs one LIST per other volume, and its fragments' GETs; one unreadable is a remark."""
    if here not in volumes:  # a copied or moved layer: no attempt names it
        return [], []
    others = [layer for layer in volumes if layer != here]
    with overlapped(len(others)) as run:
        read = dict(zip(others, run(lambda layer: _filed(layer, step_id), others), strict=True))
    found = {
        here: fragments,
        **{layer: got for layer, got in read.items() if isinstance(got, list)},
    }
    remarks = [
        f"step {step_id[:12]}: could not check for its tasks that wrote here but were cut short "
        f"before filing here: {why}"
        for why in read.values()
        if isinstance(why, str)
    ]
    missed = _uncounted(cut_short(found).get(here, []), record)
    if not missed:
        return [], remarks
    names = ", ".join(missed[:10]) + (", ..." if len(missed) > 10 else "")
    problem = (
        f"step {step_id[:12]}: {len(missed)} task(s) ({names}) wrote here, as their fragments "
        "on its other volumes say, but were cut short (killed, or a storage error) before "
        "filing that attempt here, after the step was finished: no record holds their writes "
        "here. Re-run them under their ids (`cirrus.join(token, task=...)`), then finish the "
        f"step again (`cirrus step finish TOKEN`; `cirrus step token {here} {step_id[:12]}` "
        "prints TOKEN)"
    )
    return [problem], remarks


def _filed(layer: str, step_id: str) -> list[dict[str, Any]] | str:
    """The step's fragments on `layer`, or why they could not be read."""
    try:
        fragments = StepFiles.open(layer).filed(step_id)
    except IntegrityError as damaged:  # that volume's own verify names the fix
        return damaged.problem
    except (StorageError, InvalidInput) as error:
        return f"{layer}, another of its volumes, could not be read ({error})"
    if fragments is None:
        return f"{layer}, another of its volumes, holds no manifest of it (deleted or moved?)"
    return fragments


def _uncounted(short: list[str], record: Mapping[str, Any] | None) -> list[str]:
    """The tasks of `short` that `record` does not count as incomplete (those it counts, its
    finish recorded as failed already)."""
    tasks = (record or {}).get("tasks") or {}
    listed = tasks.get("incomplete_tasks", [])
    missed = [task for task in short if task not in listed]
    # a record names at most `stepfinish.MAX_LISTED_FAILURES` of the tasks it counts
    # incomplete: as many more may be among those it counts without naming them
    return missed if len(missed) > tasks.get("incomplete", 0) - len(listed) else []
