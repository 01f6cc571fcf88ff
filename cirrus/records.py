"""New records, stamped with who, where, when and which cirrus made them."""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cirrus._version import __version__
from cirrus.canonical import digest
from cirrus.model import Note, Process, Record, isoformat, utcnow
from cirrus.writeset import WriteTracker


def current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def make_record(
    *,
    session: str,
    layer: str,
    process: Process | Mapping[str, Any] | None,
    sources: Sequence[str],
    notes: Iterable[Note],
    started: Any,
    status: str = "committed",
    writes: dict[str, Any] | None = None,
    siblings: tuple[str, ...] = (),
    error: dict[str, str] | None = None,
    step: str | None = None,
    tasks: dict[str, Any] | None = None,
) -> Record:
    """A record stamped with who, where, when and which cirrus made it."""
    return Record(
        session=session,
        volume=layer,
        process=process_json(process),
        sources=tuple(sources),
        notes=tuple(note.to_json() for note in notes),
        status=status,
        started=isoformat(started),
        ended=isoformat(utcnow()),
        user=current_user(),
        host=socket.gethostname(),
        cirrus_version=__version__,
        writes=writes or WriteTracker().to_json(),
        siblings=siblings,
        error=error,
        step=step,
        tasks=tasks,
    )


def process_json(process: Process | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A process as records hold it: description, parameters, env digests and its own digest."""
    if process is None or isinstance(process, Mapping):
        return None if process is None else dict(process)
    body = process.to_json()
    return {**body, "digest": digest(body)}
