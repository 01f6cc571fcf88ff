"""Steps: one pipeline step run as thousands of tasks, recorded once per volume.

The opener validates everything and files a manifest on each volume; each task joins with a
small token (`cirrus.steptoken`) and writes one fragment per volume, create-only and keyed by
its task id, so no task touches a shared object and a re-run task is not counted twice.
`finish` (`cirrus.stepfinish`) folds the fragments into one record per volume.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import socket
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from cirrus._version import __version__
from cirrus.demands import validate_motivation, validate_process, validate_sources
from cirrus.errors import IntegrityError, InvalidInput, StepError
from cirrus.ledger import Ledger, env_blobs
from cirrus.model import Note, Process, error_message, isoformat, utcnow
from cirrus.overlap import overlapped
from cirrus.records import current_user, process_json
from cirrus.stepfiles import NOT_OPENED, StepFiles, intact_manifest, never_opened
from cirrus.stepfinish import finish, status
from cirrus.steptoken import StepToken, check_token_volumes, validate_task_id
from cirrus.storage.paths import normalise_cloudpath
from cirrus.summary import open_step_info
from cirrus.writescope import Unrecorded, WriteScope
from cirrus.writeset import WriteTracker

log = logging.getLogger("cirrus.step")


class Step:
    """An open step; create with `cirrus.step(...)`, hand `token` to tasks, then `finish()`."""

    def __init__(
        self,
        sources: Sequence[str],
        motivation: str,
        process: Process,
        volumes: Sequence[str],
        tasks: int | Sequence[str] | None = None,
    ):
        sources = validate_sources(sources)
        motivation = validate_motivation(motivation)
        process = validate_process(process)
        if isinstance(volumes, str) or not volumes:
            raise InvalidInput("volumes must be a non-empty list of the cloudpaths the step writes")
        layers = tuple(dict.fromkeys(normalise_cloudpath(v) for v in volumes))
        self.token_data = StepToken(uuid.uuid4().hex, layers)
        started = utcnow()
        self.manifest = {
            "schema": "cirrus.step/1",
            "id": self.token_data.id,
            "volumes": list(layers),
            "sources": list(sources),
            "notes": [Note("motivation", motivation, started).to_json()],
            "process": process_json(process),
            "started": isoformat(started),
            "user": current_user(),
            "host": socket.gethostname(),
            "cirrus_version": __version__,
        }
        expected_ids = _expected_tasks(tasks, self.manifest)
        blobs = env_blobs(process.env_documents())
        with overlapped(len(layers)) as run:  # every volume is checked before any is written
            run(_check_volume, layers)
        opened: list[str] = []
        try:
            for layer in layers:
                opened.append(layer)  # perhaps listed already when this layer fails: undone too
                self._open_on(layer, blobs, expected_ids)
        except BaseException as error:
            self._undo_open(opened, error)
            raise

    def _open_on(self, layer: str, blobs: list[bytes], expected_ids: list[str] | None) -> None:
        """File the step on one volume: environments, expected tasks, manifest, then list it."""
        ledger = Ledger.open(layer)
        ledger.stage_envs(blobs)
        files = StepFiles.beside(ledger)
        if expected_ids is not None:  # apart from the manifest, which every task reads
            files.put_expected(self.token_data.id, expected_ids)
        files.put_manifest(self.manifest)
        ledger.mark_step_open(self.token_data.id, open_step_info(self.manifest))

    def _undo_open(self, opened: list[str], error: BaseException) -> None:
        """Undo a step whose opening failed part way: mark its manifest never opened on each
        volume holding one (kept, so nothing stored is lost; tasks, finishes and tokens refuse
        it then, `stepfiles.never_opened`) and unlist it. Raises StepError naming the volumes
        it could not undo (a Ctrl-C or SIGTERM goes on as it came, the volumes logged)."""
        why = f"opening it failed on {opened[-1]} ({error_message(error)})"
        left = []
        for layer in opened:
            undone = True
            try:
                StepFiles.open(layer).mark_not_opened(self.id, why)
            except IntegrityError:
                pass  # a damaged copy: tasks and finishes read another volume's, marked
            except Exception:
                undone = False
            try:
                Ledger.open(layer).clear_step(self.id)
            except Exception:
                undone = False
            if not undone:
                left.append(layer)
        if not left:
            log.warning("step %s was not opened (%s): it was undone", self.id, why)
            return
        message = (
            f"step {self.id} was not opened: {why}, and undoing it failed on "
            f"{', '.join(left)}, which may still list it as open or let tasks join it: fix the "
            f"cause, then close it with `cirrus step finish TOKEN` (TOKEN: {self.token}), and "
            "open a new step"
        )
        if not isinstance(error, Exception):
            log.error("%s", message)
            return
        raise StepError(message) from error

    @property
    def id(self) -> str:
        return self.token_data.id

    @property
    def token(self) -> str:
        return self.token_data.dumps()

    def finish(self) -> dict[str, str]:
        return finish(self.token)

    def status(self) -> dict[str, Any]:
        return status(self.token)

    def __repr__(self) -> str:
        return f"<cirrus.Step {self.id[:12]}: {len(self.token_data.volumes)} volume(s)>"


def _expected_tasks(tasks: Any, manifest: dict[str, Any]) -> list[str] | None:
    """Put the expected task count in the manifest; returns the expected ids, if given."""
    if tasks is None:
        return None
    if isinstance(tasks, numbers.Integral) and not isinstance(tasks, bool) and tasks > 0:
        manifest["expected_tasks"] = int(tasks)
        return None
    if isinstance(tasks, (list, tuple)) and tasks:
        ids = [validate_task_id(task) for task in tasks]
        if len(set(ids)) != len(ids):
            raise InvalidInput("tasks lists a task id twice; give each task one id")
        manifest["expected_tasks"], manifest["expected_ids"] = len(ids), True
        return sorted(ids)
    raise InvalidInput(
        f"tasks must be the number of tasks (a positive int) or a list of their task ids, got "
        f"{tasks!r}; finish() then records the step as failed while any of them is missing"
    )


def _check_volume(layer: str) -> None:
    """A step's volume must be a CloudVolume layer (an `info`) with a well-formed summary."""
    ledger = Ledger.open(layer)
    ledger.summary()  # a malformed one raises CorruptProvenance, naming `cirrus repair`
    if ledger.store.get("info") is None:
        raise InvalidInput(
            f"{layer} has no info file, so it is not a CloudVolume layer: check the path, or "
            "create the layer (CloudVolume.create_new_info, commit_info) before opening the step"
        )


def step(
    sources: Sequence[str],
    motivation: str,
    process: Process,
    volumes: Sequence[str],
    tasks: int | Sequence[str] | None = None,
) -> Step:
    """Open a step over `volumes`: validated and filed as open on each volume before any task.

    `tasks`: how many tasks will run, or their task ids; `finish` records the step as failed
    (`Incomplete`) while any has filed nothing, e.g. one killed before it ended.
    """
    return Step(sources, motivation, process, volumes, tasks)


class TaskSession(WriteScope):
    """One task of a step: writes only to the step's volumes, files one fragment per volume."""

    kind = "task"

    def __init__(self, token: str | Mapping[str, Any] | StepToken | Step, task: str | None = None):
        self.token = StepToken.loads(token)
        self.task = validate_task_id(task) if task is not None else uuid.uuid4().hex
        self._task_named = task is not None
        super().__init__()
        self.records: dict[str, str] = {}
        self._manifest: dict[str, Any] | None = None  # read at the first volume opened

    @property
    def label(self) -> str:
        return f"task {self.task} of step {self.token.id} (attempt {self.id})"

    def _unrecorded_advice(self) -> Unrecorded:
        """A task has no journal for `cirrus recover` to find: its way out is to run again, which
        files its fragments (an attempt folded in already is not counted twice)."""
        rerun = (
            f"re-run task {self.task} under its id (`cirrus.join(token, task={self.task!r})`), "
            "then finish the step again (`cirrus step finish TOKEN`)"
        )
        return Unrecorded(
            who=f"cirrus {self.label}",
            cut_short=f"its fragments may be missing on some of them; {rerun}",
            never_closed=f"that data has no provenance. Call s.commit(), or {rerun}",
        )

    def _check_layer(self, layer: str) -> None:
        if self._manifest is None:  # one GET per task: the manifest names all the step's volumes
            self._manifest = self._read_manifest(layer)
        if layer not in self.token.volumes:  # the manifest's volumes, checked as it was read
            raise StepError(
                f"{layer} is not one of this step's volumes ({', '.join(self.token.volumes)}); "
                "open the step with every volume its tasks write"
            )

    def _read_manifest(self, layer: str) -> dict[str, Any]:
        """The step's manifest, from `layer` if the token names it, else (or when it is missing
        or damaged there) from the token's other volumes; refuses, before any write, a token
        whose volumes are not the step's and an unnamed task of a step expecting named ones."""
        manifest = None
        if layer in self.token.volumes:
            with contextlib.suppress(IntegrityError):  # damaged here: the others hold copies
                manifest = StepFiles.open(layer).manifest(self.token.id)
        if manifest is None:
            manifest = intact_manifest(self.token.id, self.token.volumes)
        if manifest is None:
            where = layer if layer in self.token.volumes else self.token.volumes[0]
            raise self._never_opened(where, "no manifest there")
        if NOT_OPENED in manifest:  # its opening failed: no request more to learn it
            raise never_opened(manifest)
        # the step's volumes in its order: a task that writes nothing files on its first
        self.token = StepToken(self.token.id, check_token_volumes(self.token, manifest))
        if "expected_tasks" in manifest and not self._task_named:
            raise StepError(
                f"step {self.token.id} expects {manifest['expected_tasks']} tasks, so each "
                "must join with its task id (`cirrus.join(token, task=...)`): an unnamed "
                "task would count as another task each time it is re-run"
            )
        return manifest

    def _never_opened(self, layer: str, why: str) -> StepError:
        return StepError(
            f"step {self.token.id} was never opened on {layer} ({why}), so its fragments would "
            "never be finished: pass the token `cirrus.step(...)` returned, unchanged"
        )

    def _record(self, status: str, error: dict[str, str] | None) -> dict[str, str]:
        ended = isoformat(utcnow())
        stored = {}
        layers = self.touched
        if not layers:  # a task that wrote nothing is counted on the step's first volume
            try:
                self._check_layer(self.token.volumes[0])
            except StepError as error:  # nothing was written, so there is nothing to lose
                log.warning("task %s: %s", self.task, error)
                return {}
            layers = self.token.volumes[:1]
        for layer in layers:
            tracker = self._trackers.get(layer) or WriteTracker()
            fragment = {
                "schema": "cirrus.fragment/1",
                "step": self.token.id,
                "task": self.task,
                "attempt_ids": [self.id],  # folds this attempt into the task's fragment once
                # every volume this attempt files on: a finish finds a fragment it never filed
                "attempt_volumes": {self.id: list(layers)},
                "status": status,
                "error": error,
                "started": isoformat(self.started),
                "ended": ended,
                "user": current_user(),
                "host": socket.gethostname(),
                "writes": tracker.to_json(),
                "notes": [note.to_json() for note in self.notes],
            }
            StepFiles.open(layer).put_fragment(self.token.id, self.task, fragment)
            stored[layer] = self.task
        return stored


def join(token: str | Mapping[str, Any] | StepToken | Step, task: str | None = None) -> TaskSession:
    """Join a step from a task: `token` is `step.token` (what a queue carries), or the `Step`
    itself in the opener's process. Give a stable `task` id so a re-run task is recognised."""
    return TaskSession(token, task)
