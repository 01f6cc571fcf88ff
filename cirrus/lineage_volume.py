"""One volume of a lineage: its node, and the sources it names with how each was used.

Reading one volume costs what `cirrus log` costs: the summary and its records; the summary once
more only when a record is damaged (its sources are then the summary's).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from cirrus.ledger import SUMMARY_KEY, Ledger
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
    # (process descriptions that used this source, the source's node)
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
            "sources": [{"via": via, **node.to_json()} for via, node in self.parents],
        }


def read_volume(ledger: Ledger, name: str) -> tuple[Node, dict[str, list[str]]]:
    """A volume's node and its sources (source -> processes that used it), skipping damaged
    records; then the summary's sources no intact record names: other tools', and the damaged
    records' (the summary is read again to list them only when a record is damaged)."""
    history = read_history(ledger)
    records = [stored.record for stored in history]
    ended = [r.ended for r in records] + [d.ended for d in history.damaged]
    node = Node(
        name,
        "volume",
        records=len(records),
        processes=_unique(r.process["description"] for r in records if r.process),
        latest=max(ended, default=None),
        detail="" if records or history.damaged else _nothing_recorded(ledger, history),
        damaged=len(history.damaged),
    )
    sources: dict[str, list[str]] = {}
    for record in records:
        for source in record.sources:
            via = sources.setdefault(source, [])
            if record.process and record.process["description"] not in via:
                via.append(record.process["description"])
    if history.damaged:
        for source in ledger.summary().get("sources", []):
            sources.setdefault(source, [SUMMARY_ONLY])
    for source in history.other_tools.get("sources", []):  # no intact record names them
        sources.setdefault(source, [OTHER_TOOLS])
    return node, sources


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
