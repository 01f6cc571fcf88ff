"""Rendering provenance for people: plain text for terminals and logs (the HTML tables for
Jupyter, built on these rows, are in `cirrus.display_html`).

Everything here works on plain JSON (a record as `StoredRecord.to_json()` gives it, a summary's
`open_steps` and `open_sessions`) or on duck-typed objects, and imports only the model and
`display_env` (code environments) from cirrus, so any module may delegate its `__str__` or
`_repr_html_` here without an import cycle.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cirrus.canonical import short
from cirrus.display_env import env_diff, env_lines, env_script
from cirrus.model import is_interrupted
from cirrus.summary import NOTE_SEP, NOTES_SHOWN, more_notes, processing_line

FIRST_LINE = 200  # characters of an error's first line that `cirrus log` shows
# ANSI escape sequences (CSI: colours, cursor moves; OSC: titles, links; two-byte ones), then any
# other control character but tab and newline: stored text is shown, never obeyed.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C1 too: \x9b is a CSI to some
_BIDI = re.compile(r"[\u202a-\u202e\u2066-\u2069]")  # reorder what follows ("Trojan Source")


def clean(text: str) -> str:
    """Stored text as it may be shown: no terminal escape codes (CloudFiles colours its errors,
    and an error may carry any bytes), no carriage returns or other control characters, and
    direction overrides named (`<U+202E>`) rather than obeyed."""
    text = _CONTROL.sub("", _ANSI.sub("", str(text)))
    return _BIDI.sub(lambda match: f"<U+{ord(match.group()):04X}>", text)


def first_line(text: str, limit: int = FIRST_LINE) -> str:
    """The first non-blank line of `text`, cut at a word boundary within `limit` characters
    (mid-word only for a word longer than half of it); ` ...` marks what is cut."""
    lines = [line for line in clean(text).strip().split("\n") if line.strip()]
    head = lines[0].rstrip() if lines else ""
    if len(head) > limit:
        cut = head[:limit]
        space = cut.rfind(" ")
        return (cut[:space] if space > limit // 2 else cut).rstrip() + " ..."
    return head + " ..." if len(lines) > 1 else head


def when(timestamp: str | None) -> str:
    """`2026-11-22T04:18:33.878160+00:00` -> `2026-11-22 04:18:33Z` (UTC, to the second)."""
    if not timestamp:
        return "-"
    date, _, rest = timestamp.partition("T")
    return f"{date} {rest[:8]}Z" if rest else date


def size(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{nbytes} B"  # unreachable


def _box(bounds: Sequence[int]) -> str:
    lo, hi = bounds[:3], bounds[3:]
    return f"[{','.join(map(str, lo))}]-[{','.join(map(str, hi))}]"


def writes_lines(writes: Mapping[str, Any] | None, tasks: Mapping[str, Any] | None = None) -> list:
    """One line per mip (bounds, chunks, bytes), then other operations and step task counts."""
    writes = writes or {}
    lines = []
    for mip, entry in writes.get("mips", {}).items():
        chunks = entry.get("chunks", 0)
        lines.append(
            f"mip {mip}: {_box(entry['bounds'])}, {chunks} chunk{'s' * (chunks != 1)}, "
            f"{size(entry.get('bytes', 0))}"
        )
    for mip, entry in writes.get("deleted", {}).items():
        where = "every chunk" if entry.get("all") else _box(entry["bounds"])
        lines.append(f"deleted mip {mip}: {where}")
    others = {k: v for k, v in writes.get("operations", {}).items() if k != "upload"}
    if others:
        lines.append(", ".join(f"{kind} x{count}" for kind, count in others.items()))
    if tasks:
        lines.append(
            f"tasks: {tasks.get('count', 0)} ({tasks_counts(tasks)}) on "
            f"{tasks.get('hosts', 0)} host(s)"
        )
    return lines or ["nothing written"]


def tasks_counts(tasks: Mapping[str, Any]) -> str:
    """How a step record's tasks ended: committed, failed, and failed again after committing
    (an attempt that may have overwritten committed chunks)."""
    text = f"{tasks.get('committed', 0)} committed, {tasks.get('failed', 0)} failed"
    after = tasks.get("failed_after_commit", 0)
    return f"{text}, {after} failed again after it committed" if after else text


def record_writes(record: Mapping[str, Any]) -> list:
    """A record's write lines; an interrupted record's writes are unknown, not absent."""
    if is_interrupted(record):  # written by `cirrus recover` for a session that died
        return ["unknown: the session died before tallying its writes here"]
    return writes_lines(record.get("writes"), record.get("tasks"))


def motivation(record: Mapping[str, Any]) -> str:
    texts = [n["text"] for n in record.get("notes", []) if n.get("kind") == "motivation"]
    return "; ".join(texts) or "-"


def process_line(record: Mapping[str, Any]) -> str:
    process = record.get("process")
    if not process:
        return "(notes only)"
    return f"{process['description']} [{short(process.get('digest'))}]"


def status_text(record: Mapping[str, Any], full: bool = True) -> str:
    """`failed: Type: message`; only the message's first line unless `full`."""
    status = record["status"]
    error = record.get("error")
    if not error:
        return status
    message = str(error.get("message", ""))
    message = clean(message).strip() if full else first_line(message)
    return f"{status}: {error.get('type')}: {message}"


def row(record: Mapping[str, Any]) -> dict[str, str]:
    """The columns of one history line: what `cirrus log` and notebooks show per record.

    An error shows its first line only (the record in full has all of it); stored text is
    `clean`ed of escape codes.
    """
    cells = _row(record)
    return {key: clean(value) for key, value in cells.items()}


def _row(record: Mapping[str, Any]) -> dict[str, str]:
    if record.get("damaged"):
        return _damaged_row(record)
    return {
        "time": when(record.get("started")),
        "status": status_text(record, full=False),
        "record": short(record.get("id")),
        "process": process_line(record),
        "motivation": motivation(record),
        "notes": "\n".join(
            capped(
                [
                    f"{n['kind']}: {n['text']}"
                    for n in record.get("notes", [])
                    if n["kind"] != "motivation"
                ],
                record.get("id", "?"),
                record.get("volume", "PATH"),
            )
        ),
        "sources": "\n".join(record.get("sources", [])),
        "writes": "\n".join(record_writes(record)),
        "who": f"{record.get('user', '?')}@{record.get('host', '?')}",
        "step": short(record.get("step")) if record.get("step") else "",
    }


def _damaged_row(entry: Mapping[str, Any]) -> dict[str, str]:
    """A damaged record's columns: what the summary says of it, what is wrong, the remedy."""
    damage = entry["damaged"]
    return {
        "time": when(entry.get("started")),
        "status": f"DAMAGED (the summary says {entry.get('status', '?')})",
        "record": short(entry.get("id")),
        "process": f"[{short(entry.get('process_digest'))}]",
        "motivation": "-",
        "notes": f"{damage.get('problem', '')}\n{damage.get('remedy', '')}".strip(),
        "sources": "unknown: the record is damaged",
        "writes": "unknown: the record is damaged",
        "who": "?",
        "step": short(entry.get("step")) if entry.get("step") else "",
    }


def capped(notes: list[str], record_id: str, volume: str = "") -> list[str]:
    """At most NOTES_SHOWN notes, as the summary shows them: past that, the last line counts
    the rest and names the command that shows them all."""
    if len(notes) <= NOTES_SHOWN:
        return notes
    more = len(notes) - NOTES_SHOWN + 1
    return [*notes[: NOTES_SHOWN - 1], more_notes(more, record_id, volume or "PATH")]


def damaged_lines(entry: Mapping[str, Any]) -> list[str]:
    """A damaged record in `cirrus log`: its id, the summary's pointer, problem and remedy."""
    cells = row(entry)
    out = [f"record {cells['record']}  {cells['time']}  {cells['status']}"]
    out += labelled("problem", [entry["damaged"].get("problem", "?")])
    out += labelled("remedy", [entry["damaged"].get("remedy", "") or "-"])
    out += labelled("session", [entry.get("session", "?")])
    if cells["step"]:
        out += labelled("step", [cells["step"]])
    out += labelled("process", [cells["process"]])
    out += labelled("ended", [when(entry.get("ended"))])
    return out


def one_line(text: Any) -> str:
    """Stored text on one line: `clean`, with runs of whitespace and line breaks as one space."""
    return " ".join(clean(str(text)).split())


COLUMNS = ("time", "status", "record", "process", "motivation", "notes", "sources", "writes", "who")


Open = Mapping[str, Mapping[str, Any]]  # id -> what the summary says of an open step or session


def open_lines(
    open_steps: Open | None,
    open_sessions: Open | None = None,
    unpublished: Sequence[str] = (),
    commits: Open | None = None,
) -> list[str]:
    """Steps still running, sessions that wrote and did not commit (running, or dead), those
    of either that committed and are not published yet (`commits`, as `History.to_json` has
    them: `commitpoint`), and records stored that the summary no longer names
    (`reading.unpublished_records`)."""
    named = ", ".join(short(rid) for rid in unpublished[:3]) + (", ..." if unpublished[3:] else "")
    lost = [
        f"UNPUBLISHED: {len(unpublished)} record(s) stored here are not in the summary ({named}): "
        "a tool rewrote `provenance` from an older copy, or a commit was cut short; "
        "`cirrus recover PATH` publishes them again"
    ]
    commits = commits or {}
    steps = [
        f"OPEN STEP {short(step_id)}: {one_line(info.get('description', '?'))} "
        f"[{short(info.get('process'))}] since {when(info.get('started'))} "
        f"by {one_line(info.get('user', '?'))}{_commit_tail(commits.get(step_id), 'finish')}"
        for step_id, info in (open_steps or {}).items()
    ]
    sessions = [
        f"OPEN SESSION {short(session)}: {one_line(info.get('description', '?'))} "
        f"[{short(info.get('process'))}] started {when(info.get('started'))} "
        f"by {one_line(info.get('user', '?'))}@{one_line(info.get('host', '?'))} "
        f"pid {info.get('pid', '?')}; motivation: {one_line(info.get('motivation', '?'))}"
        + _commit_tail(commits.get(session), "commit")
        for session, info in (open_sessions or {}).items()
    ]
    return (lost if unpublished else []) + steps + sessions


def _commit_tail(commit: Mapping[str, Any] | None, what: str) -> str:
    """What a listed session's (`what`: commit) or step's (finish) line says of its commit."""
    if commit is None:
        return (
            ""
            if what == "finish"
            else "; if that process is gone, these writes were never committed"
        )
    if commit.get("committed") is None:
        return (
            f"; whether it committed is unknown: {one_line(commit['how'])} (`cirrus verify PATH`)"
        )
    return (
        f"; COMMITTED ({one_line(commit['how'])}) but not published yet: if its process is "
        f"gone (its {what} was cut short), `cirrus recover PATH` publishes it"
    )


def history_text(
    records: Iterable[Mapping[str, Any]],
    volume: str = "",
    open_steps: Open | None = None,
    total: int | None = None,
    open_sessions: Open | None = None,
    others: Mapping[str, Any] | None = None,
    unpublished: Sequence[str] = (),
    commits: Open | None = None,
) -> str:
    """Newest first, one block per record, like `git log`; `total` when only some are given;
    last, what the summary says that other tools wrote (`summary.other_tools`).

    A record's header shows the first line of its error (`record_text` has all of it), and
    at most NOTES_SHOWN lines of notes (`cirrus show` has them all); text of several lines
    keeps its lines, indented under the record.
    """
    records = list(records)
    count = record_count(len(records), total, sum(bool(r.get("damaged")) for r in records))
    out = [f"{volume}: {count}" if volume else count]
    out += open_lines(open_steps, open_sessions, unpublished, commits)
    for record in reversed(records):
        out.append("")
        if record.get("damaged"):
            out += damaged_lines(record)
            continue
        cells = row(record)
        status = cells["status"]
        if status != status_text(record, full=True):
            status += " (full error: cirrus show)"
        out.append(f"record {cells['record']}  {cells['time']}  {status}")
        if cells["step"]:
            out.append(f"  step:       {cells['step']}")
        out += labelled("process", [cells["process"]])
        motivations = [n["text"] for n in record.get("notes", []) if n.get("kind") == "motivation"]
        out += labelled("motivation", motivations or ["-"])
        out += labelled("sources", record.get("sources", []) or ["-"])
        out += labelled("writes", cells["writes"].split("\n"))
        results = [n["text"] for n in record.get("notes", []) if n.get("kind") != "motivation"]
        if results:
            out += labelled("notes", capped(results, record.get("id", "?"), volume))
        out.append(f"  by:         {cells['who']}")
    if others:
        out += ["", *other_tools_lines(others)]
    return clean("\n".join(out))


def other_tools_lines(others: Mapping[str, Any]) -> list[str]:
    """What other tools wrote in the summary, labelled: older provenance cirrus kept."""
    out = ["written by other tools (in the summary, not cirrus records):"]
    out += labelled("processing", [processing_line(e) for e in others.get("processing", [])])
    out += labelled("sources", [str(source) for source in others.get("sources", [])])
    description = str(others.get("description") or "")
    out += labelled("description", [line for line in description.split(NOTE_SEP) if line])
    out += labelled("owners", [str(owner) for owner in others.get("owners", [])])
    return out


def record_count(shown: int, total: int | None, damaged: int = 0) -> str:
    """`3 record(s)`, `10 record(s), newest 3 shown`; `, 1 damaged` when some are."""
    count = f"{shown} record(s)"
    if total is not None and total != shown:
        count = f"{total} record(s), newest {shown} shown"
    return count + (f", {damaged} damaged" if damaged else "")


def _lines(items: Iterable[str]) -> list[str]:
    """Each item's lines, in order: text of several lines stays several lines."""
    return [line for item in items for line in clean(item).rstrip("\n").split("\n")]


def labelled(label: str, items: Sequence[str]) -> list[str]:
    """`  label:     first line`, then every further line (of any item) under the first."""
    head = f"  {label + ':':<{max(12, len(label) + 2)}}"
    lines = _lines(items)
    return [f"{head if i == 0 else ' ' * len(head)}{line}" for i, line in enumerate(lines)]


def _field(label: str, lines: Sequence[str] | str) -> list[str]:
    lines = _lines([lines] if isinstance(lines, str) else list(lines) or ["-"])
    return [f"{label if i == 0 else '':<11}{line}" for i, line in enumerate(lines)]


def record_text(
    record: Mapping[str, Any],
    envs: Sequence[tuple[str, Mapping[str, Any] | None, str | None]] = (),
    diffs: bool = True,
) -> str:
    """One record in full (its whole error too); `envs` is [(env id, document or None, error)]."""
    cells = row(record)
    out = _field("record", record.get("id", "?"))
    out += _field("volume", record.get("volume", "?"))
    out += _field("status", status_text(record, full=True))
    out += _field("session", record.get("session", "?"))
    if record.get("step"):
        out += _field("step", record["step"])
    out += _field("started", record.get("started", "?"))
    out += _field("ended", record.get("ended", "?"))
    out += _field("by", f"{cells['who']} (cirrus {record.get('cirrus_version', '?')})")
    process = record.get("process")
    if process:
        out += _field("process", [process["description"], f"digest {process.get('digest')}"])
        params = json.dumps(process.get("parameters", {}), sort_keys=True, indent=2)
        out += _field("parameters", params)
    else:
        out += _field("process", "(none: notes only)")
    out += _field("sources", record.get("sources", []))
    notes = [
        f"{when(n.get('time'))} {n.get('kind', '?')}: {n['text']}" for n in record.get("notes", [])
    ]
    out += _field("notes", notes)
    writes = record_writes(record)
    for failure in (record.get("tasks") or {}).get("failures") or []:
        error = failure.get("error") or {}
        writes.append(f"failed task {failure['task']}: {error.get('type')}: {error.get('message')}")
    for failure in (record.get("tasks") or {}).get("failures_after_commit") or []:
        error = failure.get("error") or {}
        writes.append(
            f"task {failure['task']} failed after committing: {error.get('type')}: "
            f"{error.get('message')}"
        )
    out += _field("writes", writes)
    if record.get("siblings"):
        out += _field("siblings", record["siblings"])
    for env_id, document, error in envs:
        out += _field("env", env_lines(env_id, document, error))
        for name, text in (("diff", env_diff(document)), ("script", env_script(document))):
            if diffs and text:
                out += _field(
                    "", [f"{name}:"] + ["  " + line for line in text.rstrip("\n").split("\n")]
                )
    return clean("\n".join(out))
