"""Rendering an open or closed session for people (duck-typed: cirrus.Session): text for
terminals, and the facts `display_html` builds a notebook table of."""

from __future__ import annotations

import json
from typing import Any

from cirrus.canonical import short
from cirrus.display import labelled, writes_lines


def session_facts(session: Any) -> list[tuple[str, str]]:
    """What a notebook shows for an open or closed session (duck-typed: cirrus.Session)."""
    trackers = getattr(session, "_trackers", {})
    volumes = []
    for layer, tracker in trackers.items():
        lines = writes_lines(tracker.to_json()) if tracker.touched else ["no writes yet"]
        volumes.append(f"{layer}: {'; '.join(lines)}")
    process = session.process
    records = getattr(session, "records", {}) or {}
    facts = [
        ("session", session.id),
        ("state", session.state),
        ("process", f"{process.description} [{short(process.digest)}]"),
        ("parameters", json.dumps(process.parameters, sort_keys=True)),
        ("sources", "\n".join(session.sources)),
        ("motivation", session.motivation),
        (
            "notes",
            "\n".join(f"{n.kind}: {n.text}" for n in session.notes if n.kind != "motivation"),
        ),
        ("volumes", "\n".join(volumes) or "none opened"),
    ]
    if records:
        facts.append(("records", "\n".join(f"{v}: {short(r)}" for v, r in records.items())))
    return facts


def session_text(session: Any) -> str:
    out = []
    for key, value in session_facts(session):
        out += labelled(key, (value or "-").split("\n"))
    return "cirrus session\n" + "\n".join(out)
