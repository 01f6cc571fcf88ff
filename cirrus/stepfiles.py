"""A step's files on one layer: its manifest and one fragment per task, write-once.

Tasks never touch a shared object: each creates its own fragment, keyed by its task id, so
thousands of them write at once and a re-run is not counted twice (its attempts fold into one
fragment). The summary side of a step
(listing it open, publishing its record) is `cirrus.ledger`'s.

Layout under the layer:
    provenance.d/steps/<id>/step.json          the manifest, written when the step opens
                                               (marked `not_opened` if its opening failed)
    provenance.d/steps/<id>/expected.json      the ids of the tasks it expects, if named
    provenance.d/steps/<id>/tasks/<task>.json  a task's fragment
    provenance.d/steps/<id>/finished-empty.json  a finish that found no task on any volume
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from cirrus.canonical import check_step_id, is_step_id, sha256_hex
from cirrus.errors import IntegrityError, PreconditionFailed, StepError
from cirrus.model import isoformat, utcnow
from cirrus.overlap import overlapped
from cirrus.readback import CORRUPT, parse_expected, parse_fragment, parse_manifest
from cirrus.steptoken import is_task_id
from cirrus.storage.base import Blob
from cirrus.storage.paths import OnLayer
from cirrus.writeset import combine

log = logging.getLogger("cirrus.stepfiles")

STEPS = "provenance.d/steps/"
NOT_OPENED = "not_opened"  # a manifest's mark: the step's opening failed, it was undone


def _pretty(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, indent=1, ensure_ascii=False).encode("utf-8")


def _tasks_folder(step_id: str) -> str:
    return f"{STEPS}{check_step_id(step_id)}/tasks/"


def merge_attempts(earlier: Mapping[str, Any], later: Mapping[str, Any]) -> dict[str, Any]:
    """A task's fragment after another attempt: both attempts' writes (a failed attempt's chunks
    stay written, and a re-run may skip them), committed if either attempt was. An attempt
    already folded in (a retried store whose first response was lost) changes nothing.

    An attempt that fails after the task committed may have overwritten committed chunks, so
    its error is kept (`failed_after_commit`) until an attempt commits again."""
    folded = list(earlier.get("attempt_ids", []))
    new = [attempt for attempt in later.get("attempt_ids", []) if attempt not in folded]
    if later.get("attempt_ids") and not new:
        return dict(earlier)
    committed = "committed" in (earlier["status"], later["status"])
    notes = list(earlier.get("notes", []))
    notes += [note for note in later.get("notes", []) if note not in notes]
    merged = {
        **later,
        "status": "committed" if committed else later["status"],
        "error": None if committed else later["error"],
        "started": min(earlier["started"], later["started"]),
        "ended": max(earlier["ended"], later["ended"]),
        "writes": combine([earlier["writes"], later["writes"]]),
        "notes": notes,
        "attempts": earlier.get("attempts", 1) + max(1, len(new)),
        "attempt_ids": folded + new,
    }
    wrote = {**earlier.get("attempt_volumes", {}), **later.get("attempt_volumes", {})}
    if wrote:
        merged["attempt_volumes"] = wrote
    after_commit = _failed_after_commit(earlier, later, new)
    if after_commit:
        merged["failed_after_commit"] = after_commit
    return merged


def _failed_after_commit(
    earlier: Mapping[str, Any], later: Mapping[str, Any], new: list[str]
) -> list[dict[str, Any]]:
    """The attempts that failed since the task last committed, with their errors."""
    if later["status"] == "committed":  # it wrote its chunks again, whole
        return []
    kept = list(earlier.get("failed_after_commit", []))
    if earlier["status"] == "committed":
        failure = {"error": later["error"], "ended": later["ended"]}
        kept.append({**failure, "attempt": new[0]} if new else failure)
    return kept


@attrs.define
class StepFiles(OnLayer):
    """The manifests and task fragments of the steps on one layer."""

    def put_manifest(self, manifest: Mapping[str, Any]) -> None:
        self.store.create(f"{STEPS}{check_step_id(manifest['id'])}/step.json", _pretty(manifest))

    def manifest(self, step_id: str) -> dict[str, Any] | None:
        """The step's manifest here; None if it was never opened here, IntegrityError if the
        file is damaged (`intact_manifest` reads another volume's copy)."""
        key = f"{STEPS}{check_step_id(step_id)}/step.json"
        blob = self.store.get(key)
        return None if blob is None else parse_manifest(blob.data, self.cloudpath, key, step_id)

    def put_fragment(self, step_id: str, task: str, fragment: Mapping[str, Any]) -> bool:
        """Create the task's fragment, or fold this attempt into the one an earlier attempt of
        the task filed (`merge_attempts`), by compare-and-swap: no attempt's writes are lost.

        Returns whether this call stored anything (False: this attempt was folded in already).
        """

        def folded(existing: Blob | None) -> bytes | None:
            if existing is None:
                return _pretty(fragment)
            try:
                earlier = parse_fragment(existing.data, self.cloudpath, key)
            except IntegrityError as damaged:  # what it said is lost; this attempt replaces it
                kept = f"{CORRUPT}{sha256_hex(existing.data)}"
                self.store.create(kept, existing.data, addressed=True)
                log.warning("%s; kept under %s and replaced", damaged.problem, CORRUPT)
                return _pretty(fragment)
            merged = merge_attempts(earlier, fragment)
            return None if merged == earlier else _pretty(merged)

        key = f"{STEPS}{check_step_id(step_id)}/tasks/{task}.json"
        contended = f"other attempts of task {task} keep storing theirs; run the task again"
        # assumed absent first: the first attempt of a task stores its fragment in one request
        return self.store.update(key, folded, read=None, contended=contended).written

    def mark_not_opened(self, step_id: str, why: str) -> None:
        """Mark the step's manifest here as never opened (`why`: how its opening failed), by
        compare-and-swap, every field kept: a task reads the manifest anyway, so it refuses the
        step at no extra request. No manifest here (its put failed): nothing to mark. A
        damaged one raises IntegrityError (tasks and finishes then read another copy)."""
        key = f"{STEPS}{check_step_id(step_id)}/step.json"

        def marked(existing: Blob | None) -> bytes | None:
            if existing is None:
                return None
            manifest = parse_manifest(existing.data, self.cloudpath, key, step_id)
            if NOT_OPENED in manifest:
                return None
            return _pretty({**manifest, NOT_OPENED: {"error": why, "time": isoformat(utcnow())}})

        self.store.update(key, marked, contended=f"step {step_id}'s manifest keeps changing")

    def put_expected(self, step_id: str, task_ids: list[str]) -> None:
        """The ids of the tasks a step expects, beside its manifest (which stays small)."""
        key = f"{STEPS}{check_step_id(step_id)}/expected.json"
        self.store.create(key, _pretty({"task_ids": task_ids}))

    def expected(self, step_id: str) -> list[str] | None:
        key = f"{STEPS}{check_step_id(step_id)}/expected.json"
        blob = self.store.get(key)
        return None if blob is None else parse_expected(blob.data, self.cloudpath, key)

    def mark_finished_empty(self, step_id: str) -> None:
        """Note that the step was finished with no task anywhere: it has no record to say so,
        and `cirrus repair` would otherwise list it as still open."""
        key = f"{STEPS}{check_step_id(step_id)}/finished-empty.json"
        with contextlib.suppress(PreconditionFailed):  # there already: only its presence counts
            self.store.create(key, _pretty({"step": step_id, "tasks": 0}))

    def finished_empty(self, step_id: str) -> bool:
        """Whether a finish found no task of the step on any of its volumes."""
        return self.store.get(f"{STEPS}{check_step_id(step_id)}/finished-empty.json") is not None

    def task_count(self, step_id: str) -> int:
        """How many tasks filed a fragment here (one LIST, no GETs)."""
        return len(self._task_keys(step_id, self.store.list(_tasks_folder(step_id))))

    def fragments(self, step_id: str) -> list[dict[str, Any]]:
        """Every task fragment of a step on this layer, `overlap.THREADS` GETs at a time."""
        return self._read(self._task_keys(step_id, self.store.list(_tasks_folder(step_id))))

    def filed(self, step_id: str) -> list[dict[str, Any]] | None:
        """The step's fragments here, or None if its manifest is not here (the volume was
        deleted or moved): one LIST of the step's folder says both."""
        listed = self.store.list(f"{STEPS}{check_step_id(step_id)}/")
        if f"{STEPS}{step_id}/step.json" not in listed:
            return None
        return self._read(self._task_keys(step_id, listed))

    def _read(self, keys: list[str]) -> list[dict[str, Any]]:
        with overlapped(len(keys)) as run:
            blobs = run(self.store.get, keys)
        return [
            parse_fragment(blob.data, self.cloudpath, key)
            for key, blob in zip(keys, blobs, strict=True)
            if blob is not None
        ]

    def _task_keys(self, step_id: str, listed: list[str]) -> list[str]:
        """The keys of the step's fragments among `listed`; anything else in its tasks/ folder
        (a `.DS_Store`, a console's folder placeholder) is skipped, with a warning."""
        prefix = _tasks_folder(step_id)
        keys = []
        for key in listed:
            if not key.startswith(prefix):
                continue  # the manifest, or another file of the step's folder
            name = key[len(prefix) :]
            if name.endswith(".json") and is_task_id(name[: -len(".json")]):
                keys.append(key)
            else:
                log.warning("%s: ignoring %s, which is not a task's fragment", self.cloudpath, key)
        return keys

    def step_ids(self) -> set[str]:
        """Ids of the steps with a manifest here; anything else is skipped, with a warning."""
        ids = set()
        for key in self.store.list(STEPS):
            parts = key[len(STEPS) :].split("/")
            if len(parts) != 2 or parts[1] != "step.json":
                continue  # a task's fragment, or something else
            if is_step_id(parts[0]):
                ids.add(parts[0])
            else:
                log.warning("%s: ignoring %s, which is not a step manifest", self.cloudpath, key)
        return ids


T = TypeVar("T")


def first_intact(volumes: Sequence[str], read: Callable[[StepFiles], T | None]) -> T | None:
    """`read` from the first of a step's `volumes` holding an intact copy (each holds the same
    step files); None if none holds one, the first IntegrityError if every copy is damaged."""
    damaged: list[IntegrityError] = []
    for layer in volumes:
        try:
            found = read(StepFiles.open(layer))
        except IntegrityError as error:
            damaged.append(error)
            continue
        if found is not None:
            if damaged:
                log.warning("%s; read the copy on %s", damaged[0].problem, layer)
            return found
    if damaged:
        raise damaged[0]
    return None


def intact_manifest(step_id: str, volumes: Sequence[str]) -> dict[str, Any] | None:
    """The step's manifest from the first of its `volumes` holding an intact one."""
    return first_intact(volumes, lambda files: files.manifest(step_id))


def never_opened(manifest: Mapping[str, Any]) -> StepError:
    """The error for a step whose `manifest` is marked never opened (its opening failed)."""
    mark = manifest[NOT_OPENED]
    return StepError(
        f"step {manifest['id']} was never opened: {mark['error']}, at {mark['time']}; it was "
        "undone, so it cannot be joined, finished or given a token: fix the cause and open a "
        "new step with `cirrus.step(...)`"
    )


def marked_not_opened(step_id: str, volumes: Sequence[str]) -> dict[str, Any] | None:
    """The manifest of the first of the step's `volumes` marked never opened (one GET each,
    at once): an undo may have marked only some of them. None if none is; damaged or
    missing copies are skipped (`intact_manifest` reports those)."""

    def read(layer: str) -> dict[str, Any] | None:
        try:
            return StepFiles.open(layer).manifest(step_id)
        except IntegrityError:
            return None

    with overlapped(len(volumes)) as run:
        manifests = run(read, list(volumes))
    return next((m for m in manifests if m is not None and NOT_OPENED in m), None)


def filed_attempts(fragments: Sequence[Mapping[str, Any]]) -> int:
    """How many attempts these fragments fold in (never fewer at a later finish)."""
    return sum(fragment.get("attempts", 1) for fragment in fragments)


def step_attempts(found: Mapping[str, Sequence[Mapping[str, Any]]]) -> int:
    """How many attempts of a step's tasks its fragments on all its volumes fold in, each once
    however many volumes it filed on. Attempts from before `attempt_ids` are counted once per
    task, as the most any of its fragments holds: a re-run adds its id and never lowers it."""
    ids = {a for fragments in found.values() for f in fragments for a in f.get("attempt_ids", [])}
    unnamed: dict[str, int] = {}  # task -> attempts its fragments fold in without naming them
    for fragments in found.values():
        for f in fragments:
            extra = max(0, f.get("attempts", 1) - len(f.get("attempt_ids", [])))
            unnamed[f["task"]] = max(unnamed.get(f["task"], 0), extra)
    return len(ids) + sum(unnamed.values())  # never fewer once a re-run names its attempt


def unaccounted(
    fragments: list[dict[str, Any]], record: Mapping[str, Any] | None, attempts: int = 0
) -> str:
    """What a step's fragments on a volume say that its record there (or the summary's pointer
    to it: same counts and end) does not ('' if nothing): tasks that ran after the finish.
    `attempts`, if given, is `step_attempts` over all the step's volumes, which a record since
    this version also counts: attempts run after the finish, whatever their clocks said."""
    if record is None:
        return (
            f"{len(fragments)} tasks filed fragments here, but the step is neither open here "
            "nor recorded here"
        )
    tasks = record.get("tasks") or {}
    committed = sum(f["status"] == "committed" for f in fragments)
    latest = max(f["ended"] for f in fragments)
    counted = tasks.get("count", 0)
    if len(fragments) > counted:
        return f"{len(fragments)} tasks filed fragments here but its record counts {counted}"
    if committed > tasks.get("committed", 0):
        return (
            f"{committed} tasks here have committed but its record counts "
            f"{tasks.get('committed', 0)}"
        )
    if latest > record.get("ended", ""):
        return f"a task here ended at {latest}, after its record's last task ({record['ended']})"
    filed = filed_attempts(fragments)
    if "attempts" in tasks and filed > tasks["attempts"]:  # a re-run whose clock is behind
        return f"{filed} attempts of tasks filed here but its record counts {tasks['attempts']}"
    if "step_attempts" in tasks and attempts > tasks["step_attempts"]:
        return (
            f"{attempts} attempts of its tasks filed on its volumes but its record counts "
            f"{tasks['step_attempts']}"
        )
    return ""


def cut_short(found: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, list[str]]:
    """{volume: task ids} of the tasks whose attempt wrote there (its `attempt_volumes` on any
    volume say so) but whose fragment there does not fold that attempt in: it was cut short
    while filing (killed, or a storage error) and its writes there are unrecorded. A later
    attempt filed on every volume it wrote settles it: the task was re-run.

    `found` maps each of the step's volumes to its fragments; fragments from before
    `attempt_volumes` name no volumes, so they are never found cut short."""
    by_task: dict[str, dict[str, Mapping[str, Any]]] = {}
    for layer, fragments in found.items():
        for fragment in fragments:
            by_task.setdefault(fragment["task"], {})[layer] = fragment
    short: dict[str, set[str]] = {}
    for task, files in by_task.items():
        wrote: dict[str, list[str]] = {}
        for fragment in files.values():
            wrote.update(fragment.get("attempt_volumes", {}))
        filed = {
            attempt: {layer for layer, f in files.items() if attempt in f.get("attempt_ids", [])}
            for attempt in wrote
        }
        missed = {a: {v for v in volumes if v in found} - filed[a] for a, volumes in wrote.items()}
        whole = {attempt for attempt, layers in missed.items() if not layers}
        for attempt, layers in missed.items():
            later = {rerun for f in files.values() for rerun in _filed_after(attempt, f)}
            for layer in layers:
                # settled only by a later attempt filed whole, there too (a re-run that skipped
                # the chunks it found written elsewhere wrote nothing there, and says so)
                if not any(rerun in whole and layer in filed[rerun] for rerun in later):
                    short.setdefault(layer, set()).add(task)
    return {layer: sorted(tasks) for layer, tasks in short.items()}


def _filed_after(attempt: str, fragment: Mapping[str, Any]) -> list[str]:
    """The attempts `fragment` folded in after `attempt` (its `attempt_ids` are in the order
    they were filed there, by compare-and-swap: no clock involved); none if not `attempt`."""
    ids = list(fragment.get("attempt_ids", []))
    return ids[ids.index(attempt) + 1 :] if attempt in ids else []
