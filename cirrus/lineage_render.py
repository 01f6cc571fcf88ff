"""A lineage tree (`cirrus.lineage`) as people and tools read it: indented text, Graphviz dot,
Mermaid. Each volume shows what its history holds and what it lacks (damaged, unpublished
records; sessions and steps not recorded yet), each use of a source how it was used."""

from __future__ import annotations

import json

from cirrus.display import one_line
from cirrus.lineage_volume import Node

REFERENCES = ("seen", "cycle")  # leaves that stand for a node expanded elsewhere


def _facts(node: Node) -> str:
    """A volume's history in brief: its records, and what is amiss or not recorded yet."""
    facts = f"{node.records} record(s)"
    if node.latest:
        facts += f", latest {node.latest[:19].replace('T', ' ')}Z"
    for count, what in (
        (node.damaged, "damaged and skipped: run cirrus verify"),
        (node.unpublished, "UNPUBLISHED: run cirrus recover"),
        (node.open_sessions, "open session(s): not committed, not recorded yet"),
        (node.open_steps, "open step(s): not finished, not recorded yet"),
    ):
        if count:
            facts += f", {count} {what}"
    if node.detail:
        facts += f", {one_line(node.detail)}"
    return facts


def _label(node: Node) -> str:
    if node.kind == "volume":
        return f"{one_line(node.name)}  ({_facts(node)})"
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
