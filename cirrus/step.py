"""Steps: one pipeline step run as thousands of tasks, recorded once per volume.

The opener validates everything and files a manifest on each volume; each task joins with a
small token and writes one fragment per volume, create-only and keyed by its task id, so no
task touches a shared object and a re-run task is not counted twice. `finish` folds the
fragments into one record per volume and publishes once.
"""

from __future__ import annotations

import json
import re
import socket
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from cirrus._version import __version__
from cirrus.canonical import check_step_id
from cirrus.commit import commit_records
from cirrus.errors import InvalidInput, StepError
from cirrus.ledger import Ledger, env_blobs, record_id
from cirrus.model import Note, Process, isoformat, parse_time, utcnow
from cirrus.overlap import overlapped
from cirrus.session import (
    WriteScope,
    current_user,
    make_record,
    process_json,
    validate_motivation,
    validate_process,
    validate_sources,
)
from cirrus.stepfiles import StepFiles
from cirrus.storage.paths import normalise_cloudpath
from cirrus.summary import mark_step_open, open_step_info, published_ids
from cirrus.writeset import combine

TOKEN_VERSION = 1
MAX_LISTED_FAILURES = 100
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:=,+@-]{0,199}")


def validate_task_id(task: Any) -> str:
    """Task ids become part of a key: letters, digits and ._:=,+@- only, no path separators."""
    if not isinstance(task, str) or not _TASK_ID.fullmatch(task):
        raise InvalidInput(
            f"task id {task!r} is not usable: use 1-200 characters from letters, digits and "
            "._:=,+@- starting with a letter or digit, e.g. 'x0-512_y0-512_z0-64'"
        )
    return task


@attrs.frozen
class StepToken:
    """What a task needs to join a step: its id and its volumes. Small, JSON, safe to queue."""

    id: str
    volumes: tuple[str, ...]

    def dumps(self) -> str:
        return json.dumps({"cirrus_step": TOKEN_VERSION, "id": self.id, "volumes": self.volumes})

    @classmethod
    def loads(cls, token: str | Mapping[str, Any] | StepToken) -> StepToken:
        if isinstance(token, StepToken):
            return token
        try:
            data = json.loads(token) if isinstance(token, str) else dict(token)
            if not isinstance(data, dict):
                raise ValueError(f"a JSON {type(data).__name__}, not an object")
            if data.get("cirrus_step") != TOKEN_VERSION:
                raise ValueError(f"unknown token version {data.get('cirrus_step')!r}")
            if not isinstance(data["volumes"], (list, tuple)) or not data["volumes"]:
                raise ValueError(f"volumes must be a non-empty list, got {data['volumes']!r}")
            volumes = tuple(normalise_cloudpath(v) for v in data["volumes"])
            return cls(check_step_id(data["id"]), volumes)
        except (ValueError, KeyError, TypeError) as error:
            raise StepError(
                f"not a cirrus step token ({error}); pass the string `step.token` unchanged"
            ) from None


class Step:
    """An open step; create with `cirrus.step(...)`, hand `token` to tasks, then `finish()`."""

    def __init__(
        self,
        sources: Sequence[str],
        motivation: str,
        process: Process,
        volumes: Sequence[str],
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
        blobs = env_blobs(process.env_documents())
        with overlapped(len(layers)) as run:  # every volume is checked before any is written
            run(_check_volume, layers)
        for layer in layers:
            ledger = Ledger.open(layer)
            ledger.stage_envs(blobs)
            StepFiles.beside(ledger).put_manifest(self.manifest)
            ledger.mark_step_open(self.token_data.id, open_step_info(self.manifest))

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


def _check_volume(layer: str) -> None:
    """A step's volume must be a CloudVolume layer (an `info`) with a well-formed summary."""
    ledger = Ledger.open(layer)
    ledger.summary()  # a malformed one raises CorruptProvenance, naming `cirrus repair`
    if ledger.store.get("info") is None:
        raise InvalidInput(
            f"{layer} has no info file, so it is not a CloudVolume layer: check the path, or "
            "create the layer (CloudVolume.create_new_info, commit_info) before opening the step"
        )


def step(sources: Sequence[str], motivation: str, process: Process, volumes: Sequence[str]) -> Step:
    """Open a step over `volumes`: validated and filed as open on each volume before any task."""
    return Step(sources, motivation, process, volumes)


class TaskSession(WriteScope):
    """One task of a step: writes only to the step's volumes, files one fragment per volume."""

    kind = "task"

    def __init__(self, token: str | Mapping[str, Any] | StepToken, task: str | None = None):
        self.token = StepToken.loads(token)
        self.task = validate_task_id(task) if task is not None else uuid.uuid4().hex
        super().__init__()
        self.records: dict[str, str] = {}
        self._manifests_seen: set[str] = set()

    def _check_layer(self, layer: str) -> None:
        if layer not in self.token.volumes:
            raise StepError(
                f"{layer} is not one of this step's volumes ({', '.join(self.token.volumes)}); "
                "open the step with every volume its tasks write"
            )
        if layer not in self._manifests_seen:  # one GET per volume and task
            if StepFiles.open(layer).manifest(self.token.id) is None:
                raise StepError(
                    f"step {self.token.id} was never opened on {layer} (no manifest there), so "
                    "its fragments would never be finished: pass the token `cirrus.step(...)` "
                    "returned, unchanged"
                )
            self._manifests_seen.add(layer)

    def _record(self, status: str, error: dict[str, str] | None) -> dict[str, str]:
        ended = isoformat(utcnow())
        stored = {}
        for layer in self.touched:
            fragment = {
                "schema": "cirrus.fragment/1",
                "step": self.token.id,
                "task": self.task,
                "status": status,
                "error": error,
                "started": isoformat(self.started),
                "ended": ended,
                "user": current_user(),
                "host": socket.gethostname(),
                "writes": self._trackers[layer].to_json(),
                "notes": [note.to_json() for note in self.notes],
            }
            StepFiles.open(layer).put_fragment(self.token.id, self.task, fragment)
            stored[layer] = self.task
        return stored


def join(token: str | Mapping[str, Any] | StepToken, task: str | None = None) -> TaskSession:
    """Join a step from a task. Give a stable `task` id so a re-run task is recognised."""
    return TaskSession(token, task)


def _manifest(token: StepToken) -> dict[str, Any]:
    for layer in token.volumes:
        manifest = StepFiles.open(layer).manifest(token.id)
        if manifest is not None:
            return manifest
    raise StepError(f"step {token.id} has no manifest on {', '.join(token.volumes)}")


DONE = object()  # `_list_again`: the layer's summary already points to the record


def finish(token: str | Mapping[str, Any] | StepToken) -> dict[str, str]:
    """Fold every task's fragments into one record per volume and publish. Safe to repeat."""
    token = StepToken.loads(token)
    manifest = _manifest(token)
    fragments = {layer: StepFiles.open(layer).fragments(token.id) for layer in token.volumes}
    written = [layer for layer, found in fragments.items() if found]
    records = {layer: _step_record(manifest, layer, fragments[layer], written) for layer in written}
    info = open_step_info(manifest)

    def list_again(layer: str) -> Any:
        return _list_again(layer, token.id, info, records[layer])

    with overlapped(len(written)) as run:
        summaries = dict(zip(written, run(list_again, written), strict=True))
    done = {layer: record_id(records[layer]) for layer, blob in summaries.items() if blob is DONE}
    todo = {layer: record for layer, record in records.items() if layer not in done}
    ids = {**done, **commit_records(todo, [], {layer: summaries[layer] for layer in todo})}
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


def _step_record(
    manifest: Mapping[str, Any], layer: str, fragments: list[dict], written: list[str]
) -> Any:
    failures = [f for f in fragments if f["status"] != "committed"]
    notes = [Note.from_json(n) for n in manifest["notes"]]
    seen = {(n.kind, n.text) for n in notes}
    for fragment in sorted(fragments, key=lambda f: (f["ended"], f["task"])):
        for note in map(Note.from_json, fragment.get("notes", [])):
            if (note.kind, note.text) not in seen:
                seen.add((note.kind, note.text))
                notes.append(note)
    error = None
    if failures:
        error = {"type": "TaskFailures", "message": f"{len(failures)} of {len(fragments)} failed"}
    record = make_record(
        session=manifest["id"],
        layer=layer,
        process=manifest["process"],
        sources=manifest["sources"],
        notes=notes,
        started=parse_time(manifest["started"]),
        status="failed" if failures else "committed",
        writes=combine(f["writes"] for f in fragments),
        siblings=tuple(other for other in written if other != layer),
        error=error,
        step=manifest["id"],
        tasks=_task_summary(fragments, failures),
    )
    # A step's record is a pure function of its fragments, so finishing twice stores it once.
    return attrs.evolve(
        record,
        ended=max(f["ended"] for f in fragments),
        user=manifest["user"],
        host=manifest["host"],
    )


def _task_summary(fragments: list[dict], failures: list[dict]) -> dict[str, Any]:
    listed = sorted(failures, key=lambda f: f["task"])[:MAX_LISTED_FAILURES]
    return {
        "count": len(fragments),
        "committed": len(fragments) - len(failures),
        "failed": len(failures),
        "failures": [{"task": f["task"], "error": f["error"]} for f in listed],
        "hosts": len({f["host"] for f in fragments}),
    }


def status(token: str | Mapping[str, Any] | StepToken) -> dict[str, Any]:
    """Fragments so far per volume, with failures, and whether the step was finished."""
    token = StepToken.loads(token)
    report: dict[str, Any] = {"step": token.id, "volumes": {}}
    for layer in token.volumes:
        ledger = Ledger.open(layer)
        fragments = StepFiles.beside(ledger).fragments(token.id)
        section = ledger.summary().get("cirrus", {})
        report["volumes"][layer] = {
            "tasks": len(fragments),
            "failed": sorted(f["task"] for f in fragments if f["status"] != "committed"),
            "open": token.id in section.get("open_steps", {}),
            "finished": any(e.get("step") == token.id for e in section.get("records", [])),
        }
    return report
