"""`cirrus lineage`: follow a volume's sources that name layers to their own histories.

The result is a tree (a source reached twice is expanded once, then referred to), rendered by
`cirrus.lineage_render`. Sources are keyed by the layer they name (`sources.source_layer`), so
two spellings of one layer are one branch. A source that cannot be read, is free text or a
cloudpath cirrus cannot follow, or would close a cycle becomes a leaf saying so: lineage never
fails because one ancestor is unreadable.
A damaged record (missing, or failing its digest) is counted on its volume and skipped; the
sources of the others are followed, and so are the summary's sources no intact record names
(the damaged record's, most likely).
"""

from __future__ import annotations

from collections.abc import Callable

from cirrus.errors import CirrusError, IntegrityError, InvalidInput, plain_text
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
    """The lineage of `cloudpath`, following sources that name layers up to `depth` levels."""
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
        except Exception as error:  # any failure of one ancestor is shown, never fatal
            reason = str(error) if isinstance(error, CirrusError) else repr(error)
            return Node(name, "unreadable", detail=f"unreadable: {_brief(reason)}")
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


def _brief(message: str, limit: int = 160) -> str:
    """The first line of an error message, without the advice that follows `; `."""
    message = plain_text(message)
    line = (message.strip().splitlines() or [""])[0].split("; ")[0].rstrip(": ")
    return line if len(line) <= limit else line[: limit - 3] + "..."
