"""`cirrus lineage`: follow a volume's sources that are cloudpaths to their own histories.

The result is a tree (a source reached twice is expanded once, then referred to), rendered as
indented text, Graphviz dot or Mermaid. A source that cannot be read, is not a cloudpath, or would
close a cycle becomes a leaf saying so: lineage never fails because one ancestor is unreadable.
A damaged record (missing, or failing its digest) is counted on its volume and skipped; the
sources of the others are followed, and so are the summary's sources no intact record names
(the damaged record's, most likely).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import attrs

from cirrus.display import one_line
from cirrus.errors import CirrusError, IntegrityError, InvalidInput, plain_text
from cirrus.ledger import SUMMARY_KEY, Ledger
from cirrus.reading import History, has_info, read_history
from cirrus.storage.paths import normalise_cloudpath
from cirrus.summary import processing_line

_CLOUDPATH = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
DEFAULT_DEPTH = 10
REFERENCES = ("seen", "cycle")  # leaves that stand for a node expanded elsewhere


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


def is_cloudpath(source: str) -> bool:
    return bool(_CLOUDPATH.match(source.strip()))


def source_layer(source: str) -> str | None:
    """The layer a source names, normalised as a volume's own name is (`precomputed://`, a
    trailing slash), so every spelling of one layer is one node; None for free text. Raises
    InvalidInput for a cloudpath cirrus cannot follow."""
    return normalise_cloudpath(source) if is_cloudpath(source) else None


def lineage(
    cloudpath: str,
    depth: int = DEFAULT_DEPTH,
    open_ledger: Callable[[str], Ledger] = Ledger.open,
) -> Node:
    """The lineage of `cloudpath`, following cloudpath sources up to `depth` levels."""
    if depth < 0:
        raise InvalidInput(f"--depth must be 0 or more, got {depth}")
    root = normalise_cloudpath(cloudpath)
    expanded: set[str] = set()

    def visit(name: str, level: int, ancestors: tuple[str, ...]) -> Node:
        if name in ancestors:
            return Node(name, "cycle", detail="cycle: already an ancestor")
        if name in expanded:
            return Node(name, "seen", detail="shown above")
        if level > depth:
            return Node(name, "depth", detail=f"not followed: deeper than --depth {depth}")
        try:
            node, sources = _read_volume(open_ledger(name), name)
        except Exception as error:  # any failure of one ancestor is shown, never fatal
            reason = str(error) if isinstance(error, CirrusError) else repr(error)
            return Node(name, "unreadable", detail=f"unreadable: {_brief(reason)}")
        expanded.add(name)
        for source, via in sources.items():
            node.parents.append((via, follow(source, level + 1, (*ancestors, name))))
        return node

    def follow(source: str, level: int, ancestors: tuple[str, ...]) -> Node:
        try:
            name = source_layer(source)
        except InvalidInput as error:
            return Node(source, "unsupported", detail=f"not followed: {_brief(str(error))}")
        if name is None:
            return Node(source, "text", detail="not a cloudpath")
        return visit(name, level, ancestors)

    return visit(root, 0, ())


def raise_if_damaged(root: Node) -> None:
    """Raise IntegrityError naming the volumes whose damaged records the lineage skipped (what
    `cirrus lineage` exits 3 on, after printing the rest, as `cirrus log` does)."""
    damaged: list[Node] = []

    def walk(node: Node) -> None:
        if node.damaged:
            damaged.append(node)
        for _via, parent in node.parents:
            walk(parent)

    walk(root)
    if damaged:
        named = ", ".join(f"{node.name} ({node.damaged})" for node in damaged)
        raise IntegrityError(
            f"the lineage skipped damaged records on {len(damaged)} volume(s): {named}",
            "run `cirrus verify PATH` on each for what is wrong and how to mend it",
        )


SUMMARY_ONLY = "listed in the summary (a record is damaged)"
OTHER_TOOLS = "listed in the summary by another tool"


def _read_volume(ledger: Ledger, name: str) -> tuple[Node, dict[str, list[str]]]:
    """A volume's node and its sources (source -> processes that used it), skipping damaged
    records; then the summary's sources no intact record names, as the damaged ones' may be."""
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
    for source in history.other_tools.get("sources", []):  # no cirrus record here at all
        if isinstance(source, str):
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


def _brief(message: str, limit: int = 160) -> str:
    """The first line of an error message, without the advice that follows `; `."""
    message = plain_text(message)
    line = (message.strip().splitlines() or [""])[0].split("; ")[0].rstrip(": ")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _unique(items: Any) -> list[str]:
    return list(dict.fromkeys(items))


def _label(node: Node) -> str:
    if node.kind == "volume":
        facts = f"{node.records} record(s)"
        if node.latest:
            facts += f", latest {node.latest[:19].replace('T', ' ')}Z"
        if node.damaged:
            facts += f", {node.damaged} damaged and skipped: run cirrus verify"
        if node.detail:
            facts += f", {one_line(node.detail)}"
        return f"{one_line(node.name)}  ({facts})"
    if node.kind == "text":
        return f"{json.dumps(node.name, ensure_ascii=False)}  (free text)"
    return f"{one_line(node.name)}  [{one_line(node.detail)}]"


def render_text(root: Node) -> str:
    lines = [_label(root)]

    def walk(node: Node, prefix: str) -> None:
        for i, (via, parent) in enumerate(node.parents):
            last = i == len(node.parents) - 1
            how = f"  <- {', '.join(map(one_line, via))}" if via else ""
            branch = "└── " if last else "├── "
            lines.append(f"{prefix}{branch}{_label(parent)}{how}")
            walk(parent, prefix + ("    " if last else "│   "))

    walk(root, "")
    return "\n".join(lines)


def _edges(root: Node) -> tuple[dict[str, Node], list[tuple[str, str, str]]]:
    """Nodes by name and (source, derived, via) edges, each once."""
    nodes: dict[str, Node] = {}
    edges: list[tuple[str, str, str]] = []

    def walk(node: Node) -> None:
        current = nodes.get(node.name)
        if current is None or (current.kind in REFERENCES and node.kind not in REFERENCES):
            nodes[node.name] = node
        for via, parent in node.parents:
            edge = (parent.name, node.name, ", ".join(via))
            if edge not in edges:
                edges.append(edge)
            walk(parent)

    walk(root)
    return nodes, edges


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def render_dot(root: Node) -> str:
    """Graphviz: an arrow from each source to what was derived from it."""
    nodes, edges = _edges(root)
    lines = ["digraph lineage {", "  rankdir=LR;", "  node [shape=box, fontsize=10];"]
    for name, node in nodes.items():
        style = "" if node.kind in ("volume", "seen", "cycle") else ", style=dashed"
        label = _label(node).replace("  (", "\n(").replace("  [", "\n[")
        lines.append(f"  {_dot_quote(name)} [label={_dot_quote(label)}{style}];")
    for source, derived, via in edges:
        label = f" [label={_dot_quote(via)}]" if via else ""
        lines.append(f"  {_dot_quote(source)} -> {_dot_quote(derived)}{label};")
    lines.append("}")
    return "\n".join(lines)


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;").replace("\n", "<br>")


def render_mermaid(root: Node) -> str:
    """Mermaid flowchart: an arrow from each source to what was derived from it."""
    nodes, edges = _edges(root)
    ids = {name: f"n{i}" for i, name in enumerate(nodes)}
    lines = ["flowchart LR"]
    for name, node in nodes.items():
        label = _label(node).replace("  (", "\n(").replace("  [", "\n[")
        lines.append(f'  {ids[name]}["{_mermaid_text(label)}"]')
    for source, derived, via in edges:
        arrow = f'-- "{_mermaid_text(via)}" -->' if via else "-->"
        lines.append(f"  {ids[source]} {arrow} {ids[derived]}")
    return "\n".join(lines)


RENDERERS = {"text": render_text, "dot": render_dot, "mermaid": render_mermaid}
