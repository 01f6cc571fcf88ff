"""One volume of a lineage: its node, and the sources it names with how each was used.

Sources come from the volume's intact records, then from what is not recorded (yet): records
stored that the summary does not name (`UNPUBLISHED`, as `cirrus log` shows them), sessions
listed as writing that never committed (killed, or still running), and the summary's sources
no intact record names (another tool's, or a damaged record's). Reading one volume costs what
`cirrus log` costs: the summary, its records, one LIST; more only where something is amiss.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from cirrus.canonical import short
from cirrus.errors import IntegrityError
from cirrus.ledger import SUMMARY_KEY, Ledger, StoredRecord
from cirrus.model import Record
from cirrus.overlap import overlapped
from cirrus.reading import History, has_info, read_history
from cirrus.summary import processing_line

SUMMARY_ONLY = "listed in the summary (another tool's, or a damaged record's)"
OTHER_TOOLS = "listed in the summary by another tool"


@attrs.define
class Node:
    """One source in the lineage: a volume (with its history), or a leaf saying why it stops.

    kind: volume | text | cycle | seen | unreadable | unsupported | depth
    """

    name: str
    kind: str
    records: int = 0
    processes: list[str] = attrs.field(factory=list)
    latest: str | None = None
    detail: str = ""
    damaged: int = 0  # records skipped because they are missing or fail their digest
    unpublished: int = 0  # records stored that the summary does not name: `cirrus recover`
    open_sessions: int = 0  # listed as writing, never committed: sources not recorded yet
    open_steps: int = 0  # not finished: their sources are recorded when they finish
    # (how each use of this source is described, the source's node)
    parents: list[tuple[list[str], Node]] = attrs.field(factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "records": self.records,
            "processes": self.processes,
            "latest": self.latest,
            "detail": self.detail,
            "damaged": self.damaged,
            "unpublished": self.unpublished,
            "open_sessions": self.open_sessions,
            "open_steps": self.open_steps,
            "sources": [{"via": via, **node.to_json()} for via, node in self.parents],
        }


def read_volume(ledger: Ledger, name: str) -> tuple[Node, dict[str, list[str]]]:
    """A volume's node and its sources (source as written -> how it was used), skipping damaged
    records; then those of unpublished records and open sessions, marked, and the summary's
    sources no intact record names."""
    history = read_history(ledger, look_for_unpublished=True)
    records = [stored.record for stored in history]
    unpublished = _read_records(ledger, history.unpublished)
    ended = [r.ended for r in records] + [d.ended for d in history.damaged]
    node = Node(
        name,
        "volume",
        records=len(records),
        processes=_unique(r.process["description"] for r in records if r.process),
        latest=max(ended, default=None),
        damaged=len(history.damaged),
        unpublished=len(history.unpublished),
        open_sessions=len(history.open_sessions),
        open_steps=len(history.open_steps),
    )
    written = (history.damaged, history.unpublished, history.open_sessions, history.open_steps)
    if not (records or any(written)):
        node.detail = _nothing_recorded(ledger, history)
    sources: dict[str, list[str]] = {}

    def add(found: Iterable[str], how: str) -> None:
        for source in found:
            via = sources.setdefault(source, [])
            if how and how not in via:
                via.append(how)

    for record in records:
        add(record.sources, _described(record))
    for rid, record in unpublished:
        add(record.sources, f"{_described(record)} (UNPUBLISHED record {short(rid)})")
    for session, info in history.open_sessions.items():
        how = f"{info.get('description', '?')} (open session {short(session)}: not recorded yet)"
        add(_listed_sources(info), how)
    if history.damaged:  # the summary lists the damaged records' sources too
        add([s for s in ledger.summary().get("sources", []) if s not in sources], SUMMARY_ONLY)
    add([s for s in history.other_tools.get("sources", []) if s not in sources], OTHER_TOOLS)
    return node, sources


def _read_records(ledger: Ledger, record_ids: list[str]) -> list[tuple[str, Record]]:
    """The records `record_ids` name, overlapped; one damaged since it was listed is left out
    (`cirrus verify` reports it)."""

    def read(rid: str) -> StoredRecord | None:
        try:
            return ledger.read_record(rid)
        except IntegrityError:
            return None

    with overlapped(len(record_ids)) as run:
        found = run(read, record_ids)
    return [(stored.id, stored.record) for stored in found if stored is not None]


def _listed_sources(info: dict[str, Any]) -> list[str]:
    """An open session's sources as its listing names them (a hand-edited one may not)."""
    listed = info.get("sources")
    return [s for s in listed if isinstance(s, str)] if isinstance(listed, list) else []


def _described(record: Record) -> str:
    """The process that used a record's sources (a record of notes alone names no sources)."""
    return record.process["description"] if record.process else ""


def _nothing_recorded(ledger: Ledger, history: History) -> str:
    """Why a volume has no records: its provenance predates cirrus (other tools wrote its
    summary), it has none, or it is no layer at all (a typo)."""
    processing = history.other_tools.get("processing", [])
    if processing:
        shown = _unique(processing_line(entry) for entry in processing[-3:])
        return f"no cirrus record; other tools recorded: {'; '.join(shown)}"
    if history.other_tools:
        return "no cirrus record; its summary (another tool's) names its sources"
    if ledger.store.get(SUMMARY_KEY) is None and not has_info(ledger.store):
        return "no layer here (neither info nor provenance): check the source for a typo"
    return "no provenance recorded"


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
