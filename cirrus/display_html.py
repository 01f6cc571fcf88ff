"""The HTML views of records, histories and sessions, for Jupyter (`_repr_html_`)."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cirrus.display import (
    COLUMNS,
    Open,
    clean,
    open_lines,
    other_tools_lines,
    record_count,
    row,
    status_text,
)
from cirrus.display_session import session_facts


def _cell(text: str) -> str:
    return html.escape(text).replace("\n", "<br>")


def history_html(
    records: Iterable[Mapping[str, Any]],
    volume: str = "",
    open_steps: Open | None = None,
    open_sessions: Open | None = None,
    total: int | None = None,
    others: Mapping[str, Any] | None = None,
    unpublished: Sequence[str] = (),
    commits: Open | None = None,
) -> str:
    """An HTML table, newest first, for Jupyter; `total` when only some are given; then what
    other tools wrote in the summary."""
    records = list(records)
    head = "".join(f"<th>{name}</th>" for name in COLUMNS)
    body = []
    for record in reversed(records):
        cells = row(record)
        body.append("<tr>" + "".join(f"<td>{_cell(cells[c])}</td>" for c in COLUMNS) + "</tr>")
    count = record_count(len(records), total, sum(bool(r.get("damaged")) for r in records))
    caption = html.escape(f"{volume}: {count}" if volume else "history")
    lines = open_lines(open_steps, open_sessions, unpublished, commits)
    opened = "".join(f"<p><b>{html.escape(line)}</b></p>" for line in lines)
    return (
        f'<div class="cirrus-history">{opened}<table><caption>{caption}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        f"{_pre(other_tools_lines(others)) if others else ''}</div>"
    )


def _pre(lines: list[str]) -> str:
    return f"<pre>{html.escape(chr(10).join(lines))}</pre>"


def record_html(record: Mapping[str, Any]) -> str:
    """A record as a two-column HTML table."""
    cells = row(record)
    rows = [
        ("record", record.get("id", "?")),
        ("volume", record.get("volume", "?")),
        ("status", status_text(record, full=True)),
        ("time", f"{record.get('started')} .. {record.get('ended')}"),
        ("process", cells["process"]),
        ("parameters", json.dumps((record.get("process") or {}).get("parameters", {}))),
        ("motivation", cells["motivation"]),
        ("sources", cells["sources"]),
        ("notes", "\n".join(f"{n['kind']}: {n['text']}" for n in record.get("notes", []))),
        ("writes", cells["writes"]),
        ("by", cells["who"]),
    ]
    body = "".join(f"<tr><th>{k}</th><td>{_cell(clean(str(v)))}</td></tr>" for k, v in rows)
    return f'<table class="cirrus-record">{body}</table>'


def session_html(session: Any) -> str:
    body = "".join(
        f"<tr><th>{k}</th><td>{_cell(v or '-')}</td></tr>" for k, v in session_facts(session)
    )
    return f'<table class="cirrus-session"><caption>cirrus session</caption>{body}</table>'
