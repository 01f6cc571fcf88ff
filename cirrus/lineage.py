"""`cirrus lineage`: follow a volume's sources that name layers to their own histories.

The result is a tree (a source reached twice is expanded once, then referred to), rendered by
`cirrus.lineage_render`. Sources are keyed by the layer they name (`sources.source_layer`), so
two spellings of one layer are one branch. A source that is free text, a cloudpath cirrus
cannot follow, or would close a cycle becomes a leaf saying so. An ancestor that cannot be read
becomes a leaf too, with its fix, and so lineage shows the rest; but, as `cirrus log` does for
its records, `raise_if_incomplete` then fails (exit 3), as it does for damaged records (counted
and skipped) and records stored that the summary does not name. PATH's own failure is an error.
"""

from __future__ import annotations

from collections.abc import Callable

from cirrus.errors import (
    CirrusError,
    CorruptProvenance,
    IncompleteLineage,
    InvalidInput,
    plain_text,
)
from cirrus.ledger import Ledger
from cirrus.lineage_volume import Node, read_volume
from cirrus.sources import source_layer
from cirrus.storage.paths import normalise_cloudpath

DEFAULT_DEPTH = 10


def lineage(
    cloudpath: str,
    depth: int = DEFAULT_DEPTH,
    open_ledger: Callable[[str], Ledger] = Ledger.open,
) -> Node:
    """The lineage of `cloudpath`, following sources that name layers up to `depth` levels.
    Raises what reading `cloudpath` itself raises (a malformed summary, storage)."""
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
            node, sources = read_volume(open_ledger(name), name)
        except Exception as error:  # an ancestor's failure is shown; PATH's own is the error
            if not ancestors:
                raise
            return Node(name, "unreadable", detail=_unreadable(name, error))
        expanded.add(name)
        grouped: dict[tuple[str, str], tuple[str, list[str]]] = {}
        for source, via in sources.items():
            kind, target, detail = _target(source)
            how = grouped.setdefault((kind, target), (detail, []))[1]
            how.extend(v for v in via if v not in how)
        for (kind, target), (detail, via) in grouped.items():
            if kind == "volume":
                parent = visit(target, level + 1, (*ancestors, name))
            else:
                parent = Node(target, kind, detail=detail)
            node.parents.append((via, parent))
        return node

    return visit(root, 0, ())


def _target(source: str) -> tuple[str, str, str]:
    """Where a source leads: ("volume", its layer, ""), or a leaf's (kind, name, detail)."""
    try:
        layer = source_layer(source)
    except InvalidInput as error:
        return "unsupported", source, f"not followed: {_brief(str(error))}"
    if layer is None:
        return "text", source, "not a cloudpath"
    return "volume", layer, ""


def _unreadable(name: str, error: Exception) -> str:
    """An ancestor's failure in one line, with what to run next."""
    reason = str(error) if isinstance(error, CirrusError) else repr(error)
    fix = (
        f"run `cirrus repair {name}`"
        if isinstance(error, CorruptProvenance)
        else f"`cirrus log {name}` shows the whole error"
    )
    return f"unreadable: {_brief(reason)}; {fix}"


def raise_if_incomplete(root: Node) -> None:
    """Raise IncompleteLineage naming what the lineage could not show whole: volumes with
    damaged or unpublished records, and ancestors that could not be read. What `cirrus
    lineage` exits 3 on after printing the rest, as `cirrus log` does."""
    nodes: list[Node] = []

    def walk(node: Node) -> None:
        nodes.append(node)
        for _via, parent in node.parents:
            walk(parent)

    walk(root)
    damaged = [f"{node.name} ({node.damaged})" for node in nodes if node.damaged]
    unpublished = [f"{node.name} ({node.unpublished})" for node in nodes if node.unpublished]
    unreadable = list(dict.fromkeys(node.name for node in nodes if node.kind == "unreadable"))
    parts = []
    if damaged:
        parts.append(
            f"the lineage skipped damaged records on {len(damaged)} volume(s): "
            f"{', '.join(damaged)} (`cirrus verify PATH` on each says how to mend them)"
        )
    if unpublished:
        parts.append(
            f"records stored but not in the summary on {len(unpublished)} volume(s): "
            f"{', '.join(unpublished)} (`cirrus recover PATH` on each publishes them)"
        )
    if unreadable:
        parts.append(
            f"{len(unreadable)} source(s) could not be read: {', '.join(unreadable)} "
            "(each one's line above says what to run)"
        )
    if parts:
        raise IncompleteLineage("; ".join(parts))


def _brief(message: str, limit: int = 160) -> str:
    """The first line of an error message, without the advice that follows `; `."""
    message = plain_text(message)
    line = (message.strip().splitlines() or [""])[0].split("; ")[0].rstrip(": ")
    return line if len(line) <= limit else line[: limit - 3] + "..."
