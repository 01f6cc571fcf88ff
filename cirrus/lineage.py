"""`cirrus lineage`: follow a volume's sources that are cloudpaths to their own histories.

The result is a tree (a source reached twice is expanded once, then referred to), rendered by
`cirrus.lineage_render`. A source that cannot be read, is not a cloudpath, or would close a
cycle becomes a leaf saying so: lineage never fails because one ancestor is unreadable.
A damaged record (missing, or failing its digest) is counted on its volume and skipped; the
sources of the others are followed, and so are the summary's sources no intact record names
(the damaged record's, most likely).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from cirrus.errors import CirrusError, IntegrityError, InvalidInput, plain_text
from cirrus.ledger import Ledger
from cirrus.lineage_volume import Node, read_volume
from cirrus.storage.paths import normalise_cloudpath

_CLOUDPATH = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
DEFAULT_DEPTH = 10


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
            node, sources = read_volume(open_ledger(name), name)
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


def _brief(message: str, limit: int = 160) -> str:
    """The first line of an error message, without the advice that follows `; `."""
    message = plain_text(message)
    line = (message.strip().splitlines() or [""])[0].split("; ")[0].rstrip(": ")
    return line if len(line) <= limit else line[: limit - 3] + "..."
