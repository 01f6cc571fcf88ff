"""The `provenance` summary of a layer: parse it safely and merge records into it.

The summary stays in CloudVolume's shape (`description`, `owners`, `sources`, `processing`) so
CloudVolume, provenance-toolbox and cirrus-volume keep reading it. cirrus adds one `cirrus` key
that points to its records. Everything here is pure: no storage, no clocks.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from cirrus.errors import CorruptProvenance
from cirrus.readback import summary_problem

SUMMARY_SCHEMA = "cirrus.summary/1"
NOTE_SEP = " \n "  # provenance-toolbox's separator between notes in `description`
FIELD_SEP = ";"  # ... and between a note's timestamp, type and text
ENVS = "provenance.d/envs/"
OPEN_STEPS = "open_steps"  # steps whose tasks may still be writing: id -> who and what
OPEN_SESSIONS = "open_sessions"  # sessions that wrote and have not committed yet: id -> info
OPEN = (OPEN_STEPS, OPEN_SESSIONS)
# notes of one record shown in `description`; the rest are counted there and kept in the record,
# so a step of 10,000 tasks with a result note each does not make every commit rewrite them all
NOTES_SHOWN = 10
MORE_NOTES = "more notes in cirrus record "  # "17 more notes in cirrus record <rid12> (...)"
REPAIR_HINT = (
    "cirrus never overwrites it. Keep a copy, then repair it in place: "
    "`cirrus repair PATH` moves it to provenance.d/corrupt/<sha256> and rebuilds it from the "
    "records and what still fits, or fix the JSON by hand"
)


def empty_summary() -> dict[str, Any]:
    return {"description": "", "owners": [], "sources": [], "processing": []}


class _Constant(float):
    """NaN or Infinity as another tool wrote it: orjson refuses these, so `json` writes them back
    as they were (orjson would write null)."""


def load_json(data: bytes) -> Any:
    """A summary's JSON as it parses, NaN and Infinity kept as written (see `_Constant`)."""
    return json.loads(data.decode("utf-8"), parse_constant=_Constant)


def parse_summary(data: bytes | None, cloudpath: str) -> dict[str, Any]:
    """The summary as a dict; an absent object is an empty summary; a malformed one raises."""
    if data is None:
        return empty_summary()
    try:
        summary = load_json(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        if isinstance(error, RecursionError):
            error = "nested too deeply"
        raise CorruptProvenance(
            f"{cloudpath}/provenance is not valid JSON ({error}); {REPAIR_HINT}"
        ) from None
    problem = summary_problem(summary)
    if problem:
        raise CorruptProvenance(f"{cloudpath}/provenance {problem}; {REPAIR_HINT}")
    filled = empty_summary()
    filled.update({key: value for key, value in summary.items() if value is not None})
    return filled


def named_envs(data: bytes | None) -> set[str]:
    """Digests of the environments a summary's cirrus processes name, so staged before it was;
    none for a missing or malformed summary (publishing reports that)."""
    try:
        entries = parse_summary(data, "").get("processing", [])
    except CorruptProvenance:
        return set()
    return {
        path[len(ENVS) : -len(".json")]
        for entry in entries
        if entry.get("cirrus_process") and isinstance(entry.get("code_envfiles"), list)
        for path in entry["code_envfiles"]
        if isinstance(path, str) and path.startswith(ENVS) and path.endswith(".json")
    }


def render_summary(summary: Mapping[str, Any]) -> bytes:
    """Pretty, sorted JSON as CloudVolume's own `commit_provenance()` writes it.

    orjson (CloudVolume's own JSON library) writes it ~25x faster than `json`, whose indented
    output is pure Python: that was a tenth of a 100-volume commit's CPU. `json` takes over for
    what orjson refuses (integers beyond 64 bits, NaN and Infinity as read by `parse_summary`).
    """
    import orjson

    try:
        return orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    except TypeError:
        return json.dumps(summary, sort_keys=True, indent=2, ensure_ascii=False).encode("utf-8")


def published_ids(summary: Mapping[str, Any]) -> set[str]:
    """Ids of the records the summary already points to."""
    return {entry["id"] for entry in summary.get("cirrus", {}).get("records", [])}


def listed(summary: Mapping[str, Any]) -> set[str]:
    """Sessions and steps the summary lists as open (writing, or not finished yet)."""
    section = summary.get("cirrus", {})
    return {*section.get(OPEN_SESSIONS, {}), *section.get(OPEN_STEPS, {})}


def listed_for(records: Iterable[Mapping[str, Any]]) -> set[str]:
    """The listings that publishing `records` ends: their sessions' and steps'."""
    records = list(records)
    return {r["session"] for r in records} | {r["step"] for r in records if r.get("step")}


def recorded_sessions(summary: Mapping[str, Any]) -> set[str]:
    """Sessions with a record the summary points to."""
    return {entry.get("session") for entry in summary.get("cirrus", {}).get("records", [])}


def merge(summary: Mapping[str, Any], records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Fold records (id -> record JSON) into a copy of the summary.

    Idempotent (a record already pointed to changes nothing) and independent of the order of
    `records`: records fold in order of (start time, id). Entries cirrus did not write are kept.
    """
    merged = _editable(summary)
    section = merged["cirrus"]
    section["schema"] = SUMMARY_SCHEMA
    pointers = section["records"]
    known = published_ids(merged)
    new = sorted(
        ((rid, rec) for rid, rec in records.items() if rid not in known),
        key=lambda item: (item[1]["started"], item[0]),
    )
    for rid, record in new:
        _add_sources(merged, record["sources"])
        if record.get("process"):
            _add_process(merged, record["process"])
        _add_notes(merged, rid, record["notes"])
        pointers.append(_pointer(rid, record))
    for record in records.values():  # published before too: a step finished again is relisted
        if record.get("step"):
            section.get(OPEN_STEPS, {}).pop(record["step"], None)
        section.get(OPEN_SESSIONS, {}).pop(record["session"], None)
    for key in OPEN:
        if section.get(key) == {}:
            del section[key]
    pointers.sort(key=lambda entry: (entry["started"], entry["id"]))
    _supersede_step_records(pointers)
    return merged


def _editable(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of what `merge` changes, sharing what it only reads (cheaper than a deep copy)."""
    merged = {
        **summary,
        "sources": list(summary["sources"]),
        "processing": list(summary["processing"]),
    }
    section = dict(summary.get("cirrus", {}))
    section["records"] = [dict(pointer) for pointer in section.get("records", [])]
    for key in OPEN:
        if key in section:
            section[key] = dict(section[key])
    merged["cirrus"] = section
    return merged


def _supersede_step_records(pointers: list[dict[str, Any]]) -> None:
    """A step finished again after late fragments has a newer record: it replaces the older.

    The newest stands and the others are marked `superseded_by` it, so no task is counted twice,
    whatever order the records were merged in. Fragments are never removed and a failed one is
    only ever replaced, so a later finish has at least as many tasks, as many committed, and
    no more expected tasks missing (on any volume): those decide, before the end time (a late
    fragment may have ended before the others), and so do the volumes the tasks wrote (a late
    task on another volume changes this volume's record only in its siblings).
    """
    latest: dict[str, tuple] = {}
    for entry in pointers:
        step = entry.get("step")
        if step and (step not in latest or _finish_order(entry) > latest[step]):
            latest[step] = _finish_order(entry)
    for entry in pointers:
        step = entry.get("step")
        if step and latest[step][-1] != entry["id"]:
            entry["superseded_by"] = latest[step][-1]
        else:
            entry.pop("superseded_by", None)


def current_ids(summary: Mapping[str, Any]) -> list[str]:
    """Ids of the records that stand, oldest first: published and not superseded."""
    pointers = summary.get("cirrus", {}).get("records", [])
    return [entry["id"] for entry in pointers if "superseded_by" not in entry]


def _pointer(rid: str, record: Mapping[str, Any]) -> dict[str, Any]:
    pointer = {
        "id": rid,
        "session": record["session"],
        "status": record["status"],
        "started": record["started"],
        "ended": record["ended"],
        "process": (record.get("process") or {}).get("digest"),
    }
    if record.get("step"):
        pointer["step"] = record["step"]
        tasks = record.get("tasks") or {}
        pointer["tasks"] = {key: tasks.get(key, 0) for key in ("count", "committed", "missing")}
        pointer["tasks"]["volumes"] = 1 + len(record.get("siblings") or ())  # the tasks wrote
        pointer["tasks"].update({k: tasks[k] for k in ("attempts", "step_attempts") if k in tasks})
    return pointer


def _finish_order(pointer: Mapping[str, Any]) -> tuple:
    """The key that sorts one step's finishes, the latest last (`_supersede_step_records`)."""
    tasks = pointer.get("tasks")
    tasks = tasks if isinstance(tasks, dict) else {}
    return (
        tasks.get("count", 0),
        tasks.get("committed", 0),
        -tasks.get("missing", 0),
        tasks.get("step_attempts", 0),  # a re-run adds an attempt, whatever its clock says
        tasks.get("volumes", 0),  # a late task on another volume changes only the siblings here
        pointer.get("status") == "committed",  # pointers written before `missing` was kept
        pointer["ended"],
        pointer["id"],
    )


def _add_sources(summary: dict[str, Any], sources: Iterable[str]) -> None:
    present = summary["sources"]
    for source in sources:
        if source not in present:
            present.append(source)


def _add_process(summary: dict[str, Any], process: Mapping[str, Any]) -> None:
    entries = summary["processing"]
    if any(entry.get("cirrus_process") == process["digest"] for entry in entries):
        return
    entries.append(processing_entry(process))


def processing_entry(process: Mapping[str, Any]) -> dict[str, Any]:
    """A process as provenance-toolbox lists it (`task`, `parameters`, `code_envfiles`)."""
    return {
        "task": process["description"],
        "parameters": process["parameters"],
        "code_envfiles": [f"{ENVS}{env}.json" for env in process["envs"]],
        "cirrus_process": process["digest"],
    }


def other_tools(
    summary: Mapping[str, Any], recorded: Collection[str] | None = None
) -> dict[str, Any]:
    """What the summary says that no cirrus record put there: processing entries other tools
    appended (igneous, provenance-toolbox, CloudVolume scripts), the sources no cirrus record
    names, and on a layer with no cirrus record its description and owners. `recorded`: the
    sources of every record the summary names; without it, the sources of a layer with cirrus
    records cannot be told apart, so none are given. Empty when there is nothing."""
    found: dict[str, Any] = {}
    processing = [
        entry
        for entry in summary.get("processing") or []
        if isinstance(entry, dict) and not entry.get("cirrus_process")
    ]
    if processing:
        found["processing"] = processing
    if not summary.get("cirrus", {}).get("records"):
        for key in ("description", "owners", "sources"):
            if summary.get(key):
                found[key] = summary[key]
    elif recorded is not None:
        sources = [source for source in summary.get("sources") or [] if source not in recorded]
        if sources:
            found["sources"] = sources
    return found


def processing_line(entry: Mapping[str, Any]) -> str:
    """One other tool's processing entry as people read it: what ran, when, by whom."""
    method = entry.get("method")
    task = entry.get("task") or (method.get("task") if isinstance(method, dict) else method)
    line = str(task or next(iter(entry), "?"))
    extra = [str(entry[key]) for key in ("date", "by") if entry.get(key)]
    return f"{line} ({', '.join(extra)})" if extra else line


def note_line(note: Mapping[str, Any]) -> str:
    """A note in provenance-toolbox's `timestamp;TYPE;text` form.

    Its reader splits on `;` and on " \\n ", so those are replaced in this view only; the record
    keeps the text exactly as given. The time is written as provenance-toolbox writes its own,
    without a zone (in UTC here), so its `parsenotes` gives one kind of datetime that sorts.
    """
    text = note["text"].replace(FIELD_SEP, "\uff1b").replace("\n", "\u21b5")
    when = dt.datetime.fromisoformat(note["time"]).astimezone(dt.timezone.utc)
    stamp = when.replace(tzinfo=None).isoformat(sep=" ")
    return f"{stamp}{FIELD_SEP}{note['kind'].upper()}{FIELD_SEP}{text}"


def _add_notes(summary: dict[str, Any], rid: str, notes: Sequence[Mapping[str, Any]]) -> None:
    """Append a record's notes not shown yet, at most NOTES_SHOWN; a last line counts the rest
    (and says, to a later merge or `cirrus verify`, that the record's notes were shown)."""
    description = summary["description"]
    if notes_counted(description, rid):  # merged before (a repair rebuilds on the old text)
        return
    present = {note_key(chunk) for chunk in description.split(NOTE_SEP)}
    lines = []
    for note in notes:
        line = note_line(note)
        if note_key(line) not in present:
            present.add(note_key(line))
            lines.append(line)
    if len(lines) > NOTES_SHOWN:
        more = len(lines) - NOTES_SHOWN + 1
        text = more_notes(more, rid)
        lines[NOTES_SHOWN - 1 :] = [
            note_line({"kind": "generic", "text": text, "time": notes[-1]["time"]})
        ]
    summary["description"] = NOTE_SEP.join(([description] if description else []) + lines)


def more_notes(count: int, rid: str, path: str = "PATH") -> str:
    """The line that stands for `count` notes of record `rid` not shown: it names the command
    that shows them all (`notes_counted` finds it)."""
    return f"{count} {MORE_NOTES}{rid[:12]} (`cirrus show {path} {rid[:12]}`)"


def notes_counted(description: str, rid: str) -> bool:
    """Whether `description` counts notes of record `rid` it does not show (NOTES_SHOWN)."""
    return f"{MORE_NOTES}{rid[:12]} (" in description


def note_key(chunk: str) -> tuple[str, ...]:
    """(TYPE, text) of a note line, so one motivation is shown once however often it recurs."""
    parts = chunk.split(FIELD_SEP, 2)
    return tuple(parts[1:]) if len(parts) == 3 else (chunk,)


def open_step_info(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What the summary says of a step that is open: enough to find who runs it."""
    return {
        "started": manifest["started"],
        "process": manifest["process"]["digest"],
        "description": manifest["process"]["description"],
        "user": manifest["user"],
    }


def open_session_info(
    *,
    process: Mapping[str, Any],
    sources: Iterable[str],
    notes: Iterable[Mapping[str, Any]],
    **who: Any,
) -> dict[str, Any]:
    """What the summary says of a session that has written and not committed yet.

    `who`: started, user, host, pid and cirrus_version. If the process dies, this explains its
    writes, and is all `cirrus.abandon` needs to record it as interrupted.
    """
    notes = [dict(note) for note in notes]
    motivation = next((n["text"] for n in notes if n["kind"] == "motivation"), "")
    return {
        **who,
        "process": process["digest"],
        "description": process["description"],
        "parameters": process["parameters"],
        "envs": list(process["envs"]),
        "sources": list(sources),
        "motivation": motivation,
        "notes": notes,
    }


def mark_step_open(summary: Mapping[str, Any], step: str, info: Mapping[str, Any]) -> dict | None:
    """A copy of the summary listing `step` as open (None if it already does).

    A finished step is listed again while it is finished again (late fragments), so a commit
    that finds the listing rolls its new record forward if that finish dies before publishing.
    """
    return _mark_open(summary, OPEN_STEPS, step, info)


def mark_session_open(
    summary: Mapping[str, Any], session: str, info: Mapping[str, Any]
) -> dict | None:
    """A copy of the summary listing `session` as writing (None if it already does, or ended)."""
    if session in recorded_sessions(summary):
        return None
    return _mark_open(summary, OPEN_SESSIONS, session, info)


def clear_step(summary: Mapping[str, Any], step: str) -> dict | None:
    """A copy of the summary without `step` among the open ones (None if it is not there)."""
    return _clear_open(summary, OPEN_STEPS, step)


def clear_session(summary: Mapping[str, Any], session: str) -> dict | None:
    """A copy of the summary without `session` among the open ones (None if it is not there)."""
    return _clear_open(summary, OPEN_SESSIONS, session)


def _mark_open(
    summary: Mapping[str, Any], key: str, ident: str, info: Mapping[str, Any]
) -> dict | None:
    section = summary.get("cirrus", {"schema": SUMMARY_SCHEMA, "records": []})
    if ident in section.get(key, {}):
        return None
    # shallow copies: only the open list changes, the rest is shared with `summary`
    return {**summary, "cirrus": {**section, key: {**section.get(key, {}), ident: dict(info)}}}


def _clear_open(summary: Mapping[str, Any], key: str, ident: str) -> dict | None:
    section = summary.get("cirrus", {})
    if ident not in section.get(key, {}):
        return None
    rest = {other: info for other, info in section[key].items() if other != ident}
    cleared = {name: value for name, value in section.items() if name != key}
    return {**summary, "cirrus": {**cleared, **({key: rest} if rest else {})}}
