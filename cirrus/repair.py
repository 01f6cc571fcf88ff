"""Set a malformed `provenance` summary aside and rebuild it from the layer's records.

The original is kept under `provenance.d/corrupt/<sha256>`, and the rebuilt summary replaces it
by compare-and-swap against the malformed bytes, so a concurrent repair or commit is not
overwritten.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

import attrs

from cirrus.canonical import sha256_hex
from cirrus.errors import CirrusError, CorruptProvenance, IntegrityError
from cirrus.ledger import SUMMARY_KEY, Ledger
from cirrus.model import is_interrupted
from cirrus.readback import CORRUPT, pointer_problem
from cirrus.stepfiles import NOT_OPENED, StepFiles
from cirrus.summary import (
    OPEN_SESSIONS,
    empty_summary,
    load_json,
    mark_session_open,
    mark_step_open,
    merge,
    open_step_info,
    parse_summary,
    render_summary,
)

log = logging.getLogger("cirrus.repair")


@attrs.frozen
class Repaired:
    """A rebuilt summary: where the malformed original is kept, and what of what other tools
    wrote in it could not be carried over (the rest was)."""

    kept: str
    dropped: tuple[str, ...]


def repair_summary(cloudpath: str) -> Repaired | None:
    """Rebuild the layer's summary if it is malformed, on what other tools wrote in it that
    still fits; None when the summary was fine (it is then left untouched)."""
    ledger = Ledger.open(cloudpath)
    blob = ledger.store.get(SUMMARY_KEY)
    if blob is None:
        return None
    try:
        parse_summary(blob.data, ledger.cloudpath)
        return None
    except CorruptProvenance:
        pass
    kept = f"{CORRUPT}{sha256_hex(blob.data)}"
    ledger.store.create(kept, blob.data)
    old = _readable_section(blob.data)
    intact, damaged = _intact_records(ledger)
    records = _standing(intact, _pointed_ids(old))
    salvaged, dropped = _salvage(blob.data)
    rebuilt = merge(salvaged, records)
    kept_pointers = [p for p in _old_pointers(old) if p["id"] in damaged]
    if kept_pointers:  # so `cirrus log` still shows them, marked DAMAGED, with their fix
        rebuilt.setdefault("cirrus", {}).setdefault("records", []).extend(kept_pointers)
    for session, info in _listed_sessions(old).items():  # still writing: keep them listed
        rebuilt = mark_session_open(rebuilt, session, info) or rebuilt
    finished = {record.get("step") for record in records.values()}
    steps = StepFiles.beside(ledger)
    for step_id in sorted(steps.step_ids() - finished):  # steps still running stay listed open
        try:
            manifest = steps.manifest(step_id)
        except IntegrityError as damaged:  # its volumes are unknown here; a finish lists it
            log.warning("%s; not listed as open: `cirrus step finish TOKEN` lists it", damaged)
            continue
        if NOT_OPENED in manifest:  # its opening failed and was undone
            continue
        finished_empty = steps.finished_empty(step_id) and not steps.task_count(step_id)
        if not finished_empty and not _finished_elsewhere(manifest, ledger.cloudpath):
            rebuilt = mark_step_open(rebuilt, manifest["id"], open_step_info(manifest)) or rebuilt
    ledger.store.swap(SUMMARY_KEY, render_summary(rebuilt), blob.token)
    return Repaired(kept, tuple(dropped))


def _salvage(data: bytes) -> tuple[dict[str, Any], list[str]]:
    """What other tools wrote in a malformed summary that still fits CloudVolume's shape, as the
    summary to rebuild on (cirrus's own entries come back from the records), and what did not
    fit: a lone string where a list belongs is taken as a list of it."""
    summary = empty_summary()
    try:
        parsed = load_json(data)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return summary, ["everything: it is not JSON"]
    if not isinstance(parsed, dict):
        return summary, [f"everything: it is a JSON {type(parsed).__name__}"]
    dropped = []
    for key, value in parsed.items():
        if key == "cirrus" or value is None:
            continue  # rebuilt from the records, listings and steps
        if key == "description":
            summary[key] = value if isinstance(value, str) else json.dumps(value)
            continue
        if key not in ("owners", "sources", "processing"):
            summary[key] = value  # no field CloudVolume or cirrus reads: kept as it was
            continue
        items = [value] if isinstance(value, (str, dict)) else value
        if not isinstance(items, list):
            dropped.append(f"{key} ({type(value).__name__})")
            continue
        kind = dict if key == "processing" else str
        fits = [item for item in items if isinstance(item, kind)]
        if len(fits) < len(items):
            dropped.append(f"{len(items) - len(fits)} of {key} ({kind.__name__} expected)")
        summary[key] = [item for item in fits if kind is str or not item.get("cirrus_process")]
    return summary, dropped


def _intact_records(ledger: Ledger) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """The layer's records that read back intact, and the ids of those that do not: a damaged
    record cannot be published again, so it does not stop the repair; its old pointer is kept
    where the broken summary still has it (`cirrus verify` lists it either way)."""
    records, damaged = {}, set()
    for rid in ledger.record_ids():
        try:
            records[rid] = ledger.read_record(rid).record.to_json()
        except IntegrityError as problem:
            log.warning("%s; it is not published again", problem.problem)
            damaged.add(rid)
    return records, damaged


def _old_pointers(section: dict[str, Any]) -> list[dict[str, Any]]:
    """The well-formed record pointers of a malformed summary's readable `cirrus` section."""
    pointers = section.get("records")
    if not isinstance(pointers, list):
        return []
    return [pointer for pointer in pointers if pointer_problem(pointer) is None]


def _standing(records: dict[str, dict[str, Any]], pointed: set[str]) -> dict[str, dict[str, Any]]:
    """The records to publish: a session ends once per volume (`model.superseded_unpublished`).

    An interrupted record stands only where its session has no real one. Of several real ones
    (a commit that failed after staging, then an abort) the one the broken summary still points
    to stands, else the latest: the records alone cannot say which was published first.
    """
    real: dict[str, list[str]] = {}  # session -> ids of its real (not interrupted) records
    for rid, record in records.items():
        if not record.get("step") and not is_interrupted(record):
            real.setdefault(record["session"], []).append(rid)
    keep = {ids[0] if len(ids) == 1 else _choose(ids, records, pointed) for ids in real.values()}
    return {
        rid: record
        for rid, record in records.items()
        if record.get("step") or record["session"] not in real or rid in keep
    }


def _choose(ids: list[str], records: dict[str, dict[str, Any]], pointed: set[str]) -> str:
    """Which of one session's records on this layer stands (see `_standing`)."""
    for rid in ids:
        if rid in pointed:
            return rid
    return max(ids, key=lambda rid: (records[rid]["ended"], rid))


def _readable_section(data: bytes) -> dict[str, Any]:
    """The `cirrus` section of a malformed summary, where that much still parses."""
    try:
        section = json.loads(data)["cirrus"]
    except (ValueError, TypeError, KeyError, RecursionError):
        return {}
    return section if isinstance(section, dict) else {}


def _pointed_ids(section: dict[str, Any]) -> set[str]:
    """The record ids a malformed summary still points to, where that part is readable."""
    pointers = section.get("records")
    if not isinstance(pointers, list):
        return set()
    ids = (pointer.get("id") for pointer in pointers if isinstance(pointer, dict))
    return {rid for rid in ids if isinstance(rid, str)}


def _listed_sessions(section: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The sessions a malformed summary still lists as writing, where that part is readable."""
    listed = section.get(OPEN_SESSIONS)
    if not isinstance(listed, dict):
        return {}
    return {sid: info for sid, info in listed.items() if isinstance(info, dict)}


def _finished_elsewhere(manifest: dict[str, Any], layer: str) -> bool:
    """Whether a step has a record on another of its volumes: its finish found no task that
    wrote here, so it is not running here either."""
    for other in manifest.get("volumes", []):
        if other == layer:
            continue
        with contextlib.suppress(CirrusError):  # unreadable: keep it listed (the safe side)
            pointers = Ledger.open(other).summary().get("cirrus", {}).get("records", [])
            if any(pointer.get("step") == manifest["id"] for pointer in pointers):
                return True
    return False
