"""Documents cirrus stored, as read back: checked field by field, so an object cut short or
edited raises IntegrityError naming it and the fix, never a bare KeyError deep in a commit.

Every field a finish, a task, a fold or a publish reads is checked, of the type it is read as:
step fragments, manifests and expected-task lists, records (`check_record`) and the summary
(`summary_problem`, which `summary.parse_summary` turns into CorruptProvenance).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from cirrus.canonical import is_digest
from cirrus.errors import IntegrityError, InvalidInput
from cirrus.model import Note, parse_time
from cirrus.writeset import check_writes

CORRUPT = "provenance.d/corrupt/"  # where damaged or malformed objects are kept when replaced
_UNREADABLE = (ValueError, TypeError, KeyError, AttributeError, InvalidInput, RecursionError)

FRAGMENT_FIELDS = {
    "task": str,
    "status": str,
    "started": str,
    "ended": str,
    "host": str,
    "writes": dict,
    "notes": list,
}
MANIFEST_FIELDS = {
    "id": str,
    "volumes": list,
    "sources": list,
    "notes": list,
    "process": dict,
    "started": str,
    "user": str,
    "host": str,
}


def parse_fragment(data: bytes, cloudpath: str, key: str) -> dict[str, Any]:
    """A task's stored fragment, checked."""
    task = key.rsplit("/", 1)[-1].removesuffix(".json")
    remedy = (
        f"run that task again (cirrus.join(token, task={task!r})): its fragment is replaced "
        f"and the damaged one kept under {CORRUPT}; then finish the step. If it cannot run "
        "again, move the file out of tasks/ (its writes then go unrecorded) and finish"
    )
    return _checked(data, f"{cloudpath}: task {task}'s fragment {key}", remedy, _check_fragment)


def parse_manifest(data: bytes, cloudpath: str, key: str, step_id: str) -> dict[str, Any]:
    """A step's stored manifest, checked (and that it is this step's)."""
    remedy = (
        "every volume of the step holds the same manifest: copy an intact one from another "
        "of its volumes over it (tasks and finishes read such a copy meanwhile), or restore "
        "it from a backup"
    )

    def check(manifest: dict[str, Any]) -> None:
        _check_manifest(manifest)
        if manifest["id"] != step_id:
            raise ValueError(f"it names step {manifest['id']!r}")

    return _checked(data, f"{cloudpath}: step {step_id}'s manifest {key}", remedy, check)


def parse_expected(data: bytes, cloudpath: str, key: str) -> list[str]:
    """The task ids a step expects, as stored beside its manifest, checked."""

    def check(document: dict[str, Any]) -> None:
        _check_strings(document.get("task_ids"), "task_ids")

    remedy = (
        "every volume of the step holds the same list: copy an intact one from another of its "
        'volumes over it, or restore it from a backup (it reads {"task_ids": [...]})'
    )
    return _checked(data, f"{cloudpath}: {key}", remedy, check)["task_ids"]


def _checked(
    data: bytes, what: str, remedy: str, check: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    try:
        document = json.loads(data)
        if not isinstance(document, dict):
            raise ValueError(f"a JSON {type(document).__name__}, not an object")
        check(document)
    except _UNREADABLE as error:
        raise IntegrityError(f"{what} is damaged ({error})", remedy) from None
    return document


def _require(document: dict[str, Any], fields: dict[str, type]) -> None:
    for field, kind in fields.items():
        if not isinstance(document.get(field), kind):
            raise ValueError(f"no {kind.__name__} {field!r}")


def _check_strings(items: Any, what: str) -> None:
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ValueError(f"{what} that are not a list of strings")


def _check_notes(notes: Any) -> None:
    if not isinstance(notes, list):
        raise ValueError("notes that are not a list")
    for note in notes:
        Note.from_json(note)


def _check_time(text: str, field: str) -> None:
    if parse_time(text).tzinfo is None:
        raise ValueError(f"{field} without a timezone")


def _check_fragment(fragment: dict[str, Any]) -> None:
    _require(fragment, FRAGMENT_FIELDS)
    if fragment["status"] not in ("committed", "failed"):
        raise ValueError(f"status {fragment['status']!r}")
    if "error" not in fragment or not isinstance(fragment["error"], dict | None):
        raise ValueError("no error object or null")  # a finish reads it from every fragment
    for field in ("started", "ended"):
        _check_time(fragment[field], field)
    _check_notes(fragment["notes"])
    _check_strings(fragment.get("attempt_ids", []), "attempt_ids")
    if type(fragment.get("attempts", 1)) is not int:
        raise ValueError("an attempt count that is not a number")
    wrote = fragment.get("attempt_volumes", {})
    if not isinstance(wrote, dict):
        raise ValueError("attempt_volumes that is not an object")
    for volumes in wrote.values():
        _check_strings(volumes, "attempt_volumes")
    later = fragment.get("failed_after_commit", [])
    if not isinstance(later, list) or not all(
        isinstance(item, dict) and isinstance(item.get("error"), dict | None) for item in later
    ):
        raise ValueError("failed_after_commit that is not a list of failed attempts")
    check_writes(fragment["writes"])


def _check_manifest(manifest: dict[str, Any]) -> None:
    _require(manifest, MANIFEST_FIELDS)
    for field in ("volumes", "sources"):
        _check_strings(manifest[field], field)
    _check_time(manifest["started"], "started")
    _check_notes(manifest["notes"])
    check_process(manifest["process"])
    if type(manifest.get("expected_tasks", 0)) is not int:
        raise ValueError("an expected task count that is not a number")
    if not isinstance(manifest.get("expected_ids", False), bool):
        raise ValueError("expected_ids that is not true or false")
    if manifest.get("expected_ids") and "expected_tasks" not in manifest:
        raise ValueError("expected_ids without expected_tasks")
    if "not_opened" in manifest:  # the mark of a step whose opening failed
        mark = manifest["not_opened"]
        if not isinstance(mark, dict) or not all(
            isinstance(mark.get(field), str) for field in ("error", "time")
        ):
            raise ValueError("a not_opened mark that is not an error and a time")


def check_process(process: Any) -> None:
    """A process as records and manifests hold it (`session.process_json`)."""
    if not isinstance(process, dict):
        raise ValueError("a process that is not an object")
    _require(process, {"description": str, "parameters": dict, "envs": list, "digest": str})
    _check_strings(process["envs"], "process envs")


RECORD_FIELDS = {
    "session": str,
    "volume": str,
    "status": str,
    "started": str,
    "ended": str,
    "user": str,
    "host": str,
    "writes": dict,
}


def check_record(record: dict[str, Any]) -> None:
    """Raise ValueError (or TypeError...) unless `record` has the shape a publish and a
    history read it in; `Record.from_json` then builds it."""
    _require(record, RECORD_FIELDS)
    if record.get("process") is not None:
        check_process(record["process"])
    for field in ("sources", "siblings"):
        _check_strings(record.get(field, []), field)
    _check_notes(record.get("notes", []))
    for field in ("started", "ended"):
        _check_time(record[field], field)
    if not isinstance(record.get("error"), dict | None):
        raise ValueError("an error that is not an object")
    if not isinstance(record.get("step"), str | None):
        raise ValueError("a step that is not an id")
    tasks = record.get("tasks")
    if tasks is not None and not isinstance(tasks, dict):
        raise ValueError("tasks that are not an object")
    check_writes(record["writes"])


def summary_problem(summary: Any) -> str | None:
    """What makes a parsed `provenance` unreadable to CloudVolume or cirrus, or None."""
    if not isinstance(summary, dict):
        return f"is a JSON {type(summary).__name__}, not an object"
    expected = {"description": str, "owners": list, "sources": list, "processing": list}
    for key, kind in expected.items():
        value = summary.get(key)
        if value is not None and not isinstance(value, kind):
            return f"has {key!r} of type {type(value).__name__}, expected {kind.__name__}"
    if not all(isinstance(source, str) for source in summary.get("sources") or []):
        return "has a source that is not a string"
    if not all(isinstance(entry, dict) for entry in summary.get("processing") or []):
        return "has a processing entry that is not an object"
    section = summary.get("cirrus")
    if section is None:
        return None
    if not isinstance(section, dict) or not all(
        isinstance(section.get(key, {}), dict)
        and all(isinstance(info, dict) for info in section.get(key, {}).values())
        for key in ("open_steps", "open_sessions")
    ):
        return "has a 'cirrus' section of the wrong shape"
    pointers = section.get("records", [])
    if not isinstance(pointers, list):
        return "has a 'cirrus.records' that is not a list"
    for pointer in pointers:
        problem = pointer_problem(pointer)
        if problem:
            return f"has a record pointer {problem}"
    return None


def pointer_problem(pointer: Any) -> str | None:
    """What is wrong with one `cirrus.records` entry, as the ledger and `cirrus log` read it."""
    if not isinstance(pointer, dict):
        return "that is not an object"
    if not isinstance(pointer.get("id"), str) or not is_digest(pointer["id"]):
        return f"whose id {pointer.get('id')!r} is not a sha256"
    for key in ("session", "status", "started", "ended"):
        if not isinstance(pointer.get(key), str):
            return f"{pointer['id'][:12]} without a string {key!r}"
    for key in ("step", "superseded_by", "process"):
        if not isinstance(pointer.get(key, ""), str | None):
            return f"{pointer['id'][:12]} whose {key!r} is not a string"
    tasks = pointer.get("tasks", {})
    if not isinstance(tasks, dict) or not all(type(n) is int for n in tasks.values()):
        return f"{pointer['id'][:12]} whose 'tasks' are not counts"
    return None
