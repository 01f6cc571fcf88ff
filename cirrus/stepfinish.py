"""Finishing a step: fold its tasks' fragments into one record per volume, and report progress.

A step's record is a pure function of its fragments (and the manifest), so finishing twice
stores one record, and finishing again after late fragments supersedes the older record.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from cirrus.commit import commit_records
from cirrus.errors import IntegrityError, StepError
from cirrus.ledger import Ledger, record_id
from cirrus.model import Note, parse_time
from cirrus.overlap import overlapped
from cirrus.records import make_record
from cirrus.stepfiles import (
    NOT_OPENED,
    StepFiles,
    cut_short,
    filed_attempts,
    first_intact,
    intact_manifest,
    marked_not_opened,
    never_opened,
    step_attempts,
    unaccounted,
)
from cirrus.steptoken import StepToken, check_token_volumes
from cirrus.summary import mark_step_open, open_step_info, published_ids
from cirrus.writeset import combine

if TYPE_CHECKING:
    from cirrus.step import Step

MAX_LISTED_FAILURES = 100


def opened_step(
    token: str | Mapping[str, Any] | StepToken | Step, *, undo: bool = False
) -> tuple[StepToken, dict[str, Any]]:
    """The token with the volumes the step's manifest names (in its order), and the manifest,
    read before anything else: a step no volume of the token knows, a token whose volumes
    are not the step's (`check_token_volumes`), or a step whose opening failed (a manifest on
    any of its volumes says so: one GET each) is refused (StepError) with nothing written.

    `undo`: for a step whose opening failed, first finish undoing it where its opener could
    not (`undo_opening`), so that none of its volumes lists it or lets a task join it."""
    token = StepToken.loads(token)
    manifest = intact_manifest(token.id, token.volumes)  # a damaged copy: the others are read
    if manifest is None:
        raise StepError(
            f"step {token.id} is not known on {', '.join(token.volumes)}: none of them has its "
            "manifest (provenance.d/steps/<step>/step.json); check that the token is the one "
            "`step.token` gave and that the volumes are the step's"
        )
    token = StepToken(token.id, check_token_volumes(token, manifest))
    marked = marked_not_opened(token.id, token.volumes)
    if marked is not None:
        if undo:
            undo_opening(token, marked[NOT_OPENED]["error"])
        raise never_opened(marked)
    return token, manifest


def undo_opening(token: StepToken, why: str) -> None:
    """Mark the manifest of a step whose opening failed never opened on every volume holding
    one, and unlist it everywhere: what `Step._undo_open` did not get to (each only writes
    where it is not done yet)."""

    def undo(layer: str) -> None:
        with contextlib.suppress(IntegrityError):  # a damaged copy: the others are marked
            StepFiles.open(layer).mark_not_opened(token.id, why)
        Ledger.open(layer).clear_step(token.id)

    with overlapped(len(token.volumes)) as run:
        run(undo, list(token.volumes))


DONE = object()  # `_list_again`: the layer's summary already points to the record


def finish(token: str | Mapping[str, Any] | StepToken | Step) -> dict[str, str]:
    """Fold every task's fragments into one record per volume and publish. Safe to repeat.
    The volumes are the step's own (its manifest's): a token naming others is refused first."""
    token, manifest = opened_step(token, undo=True)
    fragments = {layer: StepFiles.open(layer).fragments(token.id) for layer in token.volumes}
    tally = _tally(token, manifest, fragments)
    # a volume a task wrote is recorded, also when its fragment there was never filed
    written = [layer for layer, found in fragments.items() if found or layer in tally.cut_short]
    if "expected_tasks" in manifest:  # every volume, every time: a missing task may write any
        written = list(token.volumes)
    records = {
        layer: _step_record(manifest, layer, fragments[layer], written, tally) for layer in written
    }
    info = open_step_info(manifest)

    def list_again(layer: str) -> Any:
        return _list_again(layer, token.id, info, records[layer])

    with overlapped(len(written)) as run:
        summaries = dict(zip(written, run(list_again, written), strict=True))
    done = {layer: record_id(records[layer]) for layer, blob in summaries.items() if blob is DONE}
    with overlapped(len(done)) as run:  # published before: mend a copy damaged since
        run(lambda layer: Ledger.open(layer).restore_record(records[layer]), list(done))
    todo = {layer: record for layer, record in records.items() if layer not in done}
    ids = {**done, **commit_records(todo, [], {layer: summaries[layer] for layer in todo})}
    if not written:  # no record will say it was finished: a file does, before it is unlisted
        with overlapped(len(token.volumes)) as run:
            run(lambda layer: StepFiles.open(layer).mark_finished_empty(token.id), token.volumes)
    for layer in token.volumes:
        if layer not in written:
            Ledger.open(layer).clear_step(token.id)
    return ids


def _list_again(layer: str, step_id: str, info: Mapping[str, Any], record: Any) -> Any:
    """List the step on `layer` until `record` is published there, also when it was finished
    before (late fragments), so a finish that dies in between is rolled forward by the next
    commit there. Returns the summary stored, where the commit starts, or DONE."""
    published = False

    def change(summary: dict[str, Any]) -> dict[str, Any] | None:
        nonlocal published
        published = record_id(record) in published_ids(summary)
        return None if published else mark_step_open(summary, step_id, info)

    stored = Ledger.open(layer).update(change)
    return DONE if published else stored


@attrs.frozen
class Tally:
    """How a step's tasks stand across all its volumes."""

    # tasks with a committed attempt on any volume: an earlier failed attempt may have filed on
    # volumes its re-run did not write (it skipped chunks already there), and those count too
    committed: set[str]
    missing: list[str]  # expected tasks with no fragment anywhere (`?` each, for a bare count)
    unexpected: list[str]  # tasks filed under an id the step does not expect (a typo?)
    attempts: int  # attempts filed on any volume (`stepfiles.step_attempts`): only ever grows
    # volume -> tasks that wrote there but were cut short filing there (`stepfiles.cut_short`)
    cut_short: dict[str, list[str]] = attrs.field(factory=dict)

    @property
    def named_missing(self) -> list[str]:
        return [task for task in self.missing if task != "?"]


def _tally(
    token: StepToken, manifest: Mapping[str, Any], fragments: Mapping[str, list[dict]]
) -> Tally:
    """How the step's tasks stand, from every volume's fragments (read once per finish)."""
    found = [fragment for layer in fragments.values() for fragment in layer]
    seen = {fragment["task"] for fragment in found}
    committed = {f["task"] for f in found if f["status"] == "committed"}
    attempts, short = step_attempts(fragments), cut_short(fragments)
    if manifest.get("expected_ids"):
        expected = set(_expected_ids(token))
        return Tally(committed, sorted(expected - seen), sorted(seen - expected), attempts, short)
    missing = ["?"] * max(0, manifest.get("expected_tasks", 0) - len(seen))
    return Tally(committed, missing, [], attempts, short)


def _listed(tasks: list[str]) -> str:
    return f" ({', '.join(tasks[:10])}{', ...' if len(tasks) > 10 else ''})" if tasks else ""


def _expected_ids(token: StepToken) -> list[str]:
    ids = first_intact(token.volumes, lambda files: files.expected(token.id))
    if ids is None:
        raise IntegrityError(
            f"step {token.id} expects named tasks, but none of its volumes holds their list "
            f"(provenance.d/steps/{token.id}/expected.json)",
            'restore it from a backup on any of them (it reads {"task_ids": [...]})',
        )
    return ids


def _step_record(
    manifest: Mapping[str, Any],
    layer: str,
    fragments: list[dict],
    written: list[str],
    tally: Tally,
) -> Any:
    failures = [f for f in fragments if f["task"] not in tally.committed]
    notes = [Note.from_json(n) for n in manifest["notes"]]
    seen = {(n.kind, n.text) for n in notes}
    for fragment in sorted(fragments, key=lambda f: (f["started"], f["task"])):  # first attempt
        for note in map(Note.from_json, fragment.get("notes", [])):
            if (note.kind, note.text) not in seen:
                seen.add((note.kind, note.text))
                notes.append(note)
    error = None
    if failures:
        error = {"type": "TaskFailures", "message": f"{len(failures)} of {len(fragments)} failed"}
    short = tally.cut_short.get(layer, [])
    if tally.missing or short:
        error = _incomplete(tally, manifest.get("expected_tasks", 0), short, error)
    record = make_record(
        session=manifest["id"],
        layer=layer,
        process=manifest["process"],
        sources=manifest["sources"],
        notes=notes,
        started=parse_time(manifest["started"]),
        status="failed" if failures or tally.missing or short else "committed",
        writes=combine(f["writes"] for f in fragments),
        siblings=tuple(other for other in written if other != layer),
        error=error,
        step=manifest["id"],
        tasks=_task_summary(manifest, fragments, failures, tally, short),
    )
    # A step's record is a pure function of its fragments, so finishing twice stores it once.
    return attrs.evolve(
        record,
        ended=max((f["ended"] for f in fragments), default=manifest["started"]),
        user=manifest["user"],
        host=manifest["host"],
    )


def _incomplete(
    tally: Tally, expected: int, short: list[str], error: dict | None
) -> dict[str, str]:
    """The error of a step finished while expected tasks filed nothing, or while tasks that
    wrote to this volume were cut short before filing their fragment here."""
    parts = []
    if tally.missing:
        message = f"{len(tally.missing)} of {expected} expected tasks filed nothing"
        message += _listed(tally.named_missing)
        if tally.unexpected:
            message += f"; tasks filed under ids it does not expect{_listed(tally.unexpected)}"
        parts.append(f"{message}; run them, then finish again")
    if short:
        parts.append(
            f"{len(short)} task(s) wrote here but their fragment here is missing{_listed(short)}"
            ": they were cut short while filing it, so their writes here are unrecorded; "
            "re-run them under their ids, then finish the step again"
        )
    parts += [error["message"]] if error else []
    return {"type": "Incomplete", "message": "; and ".join(parts)}


def _task_summary(
    manifest: Mapping[str, Any],
    fragments: list[dict],
    failures: list[dict],
    tally: Tally,
    short: list[str],
) -> dict[str, Any]:
    listed = sorted(failures, key=lambda f: f["task"])[:MAX_LISTED_FAILURES]
    expected: dict[str, Any] = {}
    if "expected_tasks" in manifest:
        expected = {"expected": manifest["expected_tasks"], "missing": len(tally.missing)}
        named = {"missing_tasks": tally.named_missing, "unexpected_tasks": tally.unexpected}
        for key, tasks in named.items():
            expected.update({key: tasks[:MAX_LISTED_FAILURES]} if tasks else {})
    summary = {
        **expected,
        "count": len(fragments),
        "committed": len(fragments) - len(failures),
        "failed": len(failures),
        "failures": [{"task": f["task"], "error": f["error"]} for f in listed],
        "hosts": len({f["host"] for f in fragments}),
        "attempts": filed_attempts(fragments),  # a re-run adds one, if not a task
        "step_attempts": tally.attempts,  # ... here or on another volume: the newer finish
    }
    if short:  # tasks that wrote here but were cut short filing here
        summary["incomplete"] = len(short)
        summary["incomplete_tasks"] = short[:MAX_LISTED_FAILURES]
    # committed tasks whose later attempt failed after writing: committed chunks may be overwritten
    after = sorted((f for f in fragments if f.get("failed_after_commit")), key=lambda f: f["task"])
    if after:
        summary["failed_after_commit"] = len(after)
        summary["failures_after_commit"] = [
            {"task": f["task"], "error": f["failed_after_commit"][-1]["error"]}
            for f in after[:MAX_LISTED_FAILURES]
        ]
    return summary


def status(token: str | Mapping[str, Any] | StepToken | Step) -> dict[str, Any]:
    """Fragments so far per volume, with failures, and whether the step is finished: its
    record there accounts for every fragment there (`late` says what it does not)."""
    token, manifest = opened_step(token)
    report: dict[str, Any] = {"step": token.id, "volumes": {}}
    ledgers = {layer: Ledger.open(layer) for layer in token.volumes}
    found = {layer: StepFiles.beside(ledgers[layer]).fragments(token.id) for layer in ledgers}
    tally = _tally(token, manifest, found)
    for layer, fragments in found.items():
        section = ledgers[layer].summary().get("cirrus", {})
        standing = [
            pointer
            for pointer in section.get("records", [])
            if pointer.get("step") == token.id and "superseded_by" not in pointer
        ]
        is_open = token.id in section.get("open_steps", {})
        late = ""
        if fragments and (standing or not is_open):  # e.g. finished with no task, then one ran
            late = unaccounted(fragments, standing[-1] if standing else None, tally.attempts)
        report["volumes"][layer] = {
            "tasks": len(fragments),
            "failed": sorted(f["task"] for f in fragments if f["task"] not in tally.committed),
            "failed_after_commit": sorted(
                f["task"] for f in fragments if f.get("failed_after_commit")
            ),
            "incomplete": tally.cut_short.get(layer, []),  # wrote here, fragment missing
            "open": is_open,
            "finished": (bool(standing) and not late)
            or (not fragments and StepFiles.beside(ledgers[layer]).finished_empty(token.id)),
            "late": late,  # tasks that ran after the finish: finish again to record them
        }
    if "expected_tasks" in manifest:
        report["expected"] = manifest["expected_tasks"]
        report["missing"] = len(tally.missing)
        report["missing_tasks"] = tally.named_missing
        report["unexpected_tasks"] = tally.unexpected
    return report
