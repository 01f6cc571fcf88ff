"""`cirrus.session`: write handles to many volumes, one record per volume, committed once.

Before its first write to a volume, a session lists itself there as writing (in the summary), so
a process killed before it commits still leaves its writes explained. Closing builds one record
per touched volume and commits them all (`cirrus/commit.py`); what it shares with a step's
tasks (handles, notes, closing once) is `cirrus.writescope.WriteScope`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
from collections.abc import Sequence
from typing import Any

from cirrus._version import __version__
from cirrus.commit import commit_records
from cirrus.demands import validate_motivation, validate_process, validate_sources
from cirrus.errors import ProvenanceRequired
from cirrus.ledger import NOT_READ, Ledger, env_blobs, record_id
from cirrus.model import Note, Process, Record, isoformat
from cirrus.records import current_user, make_record, process_json
from cirrus.summary import open_session_info
from cirrus.writescope import WriteScope

log = logging.getLogger("cirrus.session")


class Session(WriteScope):
    """One pipeline step's writes and notes, recorded on every volume it touched, once."""

    def __init__(self, sources: Sequence[str], motivation: str, process: Process):
        self.sources = validate_sources(sources)
        self.motivation = validate_motivation(motivation)
        self.process = validate_process(process)
        self.env_blobs = env_blobs(self.process.env_documents())
        self.process_record = process_json(self.process)  # once, not once per volume
        super().__init__()
        self.notes.append(Note("motivation", self.motivation))
        self.records: dict[str, str] = {}
        self._built: dict[str, dict[str, Record]] = {}  # status -> records, kept for retries
        self._open: set[str] = set()  # layers whose summary may list this session as writing
        self._listed: set[str] = set()  # ... and those where the listing is known to be stored
        self._opening: dict[str, threading.Lock] = {}  # per layer, held while listing there
        self._home: str | None = None  # the first volume listed: a commit journals there
        self._home_lock = threading.Lock()

    def _check_layer(self, layer: str) -> None:
        """Read the layer's summary: a malformed one is refused now, before any write, and the
        listing before the first write starts from it."""
        self._summaries[layer] = Ledger.open(layer).summary_blob()

    def _writing(self, layer: str) -> None:
        """Before the first write to `layer`: list this session there as writing.

        If the process dies before committing (SIGKILL, the OOM killer, a lost machine), the
        layer's summary still says which process, sources and motivation wrote there, by whom.
        """
        if layer in self._listed:
            return
        with self._opening.setdefault(layer, threading.Lock()):
            if layer in self._listed:
                return
            reason = self._refusal()  # closing started since the gate let this write in
            if reason is not None:
                raise ProvenanceRequired(f"{layer}: {reason}")
            # Every listing names the same volume for the journal: the first one listed. Until
            # one listing is stored, the first is made under the lock, so a volume whose
            # listing fails (a read-only bucket) does not become it.
            first = self._home_lock if self._home is None else contextlib.nullcontext()
            with first:
                home = self._home or layer
                ledger = Ledger.open(layer)
                read = self._summaries.get(layer, NOT_READ)
                read = ledger.stage_envs_for(self.env_blobs, read)  # the listing names them
                self._open.add(layer)  # before the swap: its answer may be lost after it landed
                listing = {**self._listing, "journal": home}
                self._summaries[layer] = ledger.mark_session_open(self.id, listing, read=read)
                self._home = home
            self._listed.add(layer)

    def _refusal(self) -> str | None:
        if self.state == "open" and self._built:  # a commit failed after building the records
            return (
                f"this session's {'/'.join(self._built)} commit failed and will record the "
                "writes made before it: call commit() or abort() again, then write in a new "
                "session"
            )
        return super()._refusal()

    @functools.cached_property
    def _listing(self) -> dict[str, Any]:
        """What each volume's summary says of this session while it writes there (`_writing`
        adds where its commit will be journaled, `cirrus.journal`)."""
        return open_session_info(
            process=self.process_record,
            sources=self.sources,
            notes=[note.to_json() for note in self.notes[:1]],  # the motivation
            started=isoformat(self.started),
            user=current_user(),
            host=socket.gethostname(),
            pid=os.getpid(),
            cirrus_version=__version__,
        )

    def _record(self, status: str, error: dict[str, str] | None) -> dict[str, str]:
        for lock in list(self._opening.values()):  # let listings in flight finish first
            with lock:
                pass
        if status not in self._built:
            self._built[status] = self._build(status, error)
        added = self.notes[1:]  # after the motivation
        if added and not self._built[status]:
            log.warning(
                "session %s wrote to no volume, so its %d note(s) (%s) are recorded nowhere; to "
                "annotate a volume without writing, use cirrus.add_note(path, text) or "
                "cirrus.add_result(path, text)",
                self.id,
                len(added),
                "; ".join(note.text[:40] for note in added[:3]),
            )
        # every touched volume was listed, and its environments staged with the listing
        ids = commit_records(
            self._built[status],
            (),
            self._summaries,
            on_staged=self._staged.update,
            journal=self._home,
        )
        for layer in sorted(self._open - set(self._built[status])):
            try:  # listed, but every write there was refused: nothing to record
                Ledger.open(layer).clear_session(self.id)
            except Exception as problem:  # the records are published; this is only a listing
                log.warning(
                    "%s: session %s is still listed as writing (%s)", layer, self.id, problem
                )
        return ids

    def _ended_as(self, status: str) -> str:
        """The records that stood may be an earlier attempt's, whose journal was stored unanswered
        (`cirrus.journal.write_journal`): the session ended as they say."""
        for built, records in self._built.items():
            if self.records == {layer: record_id(rec) for layer, rec in records.items()}:
                return super()._ended_as(built)
        return super()._ended_as(status)

    def _build(self, status: str, error: dict[str, str] | None) -> dict[str, Record]:
        touched = self.touched
        return {
            layer: make_record(
                session=self.id,
                layer=layer,
                process=self.process_record,
                sources=self.sources,
                notes=self.notes,
                started=self.started,
                status=status,
                writes=self._trackers[layer].to_json(),
                siblings=tuple(other for other in touched if other != layer),
                error=error,
            )
            for layer in touched
        }

    def __repr__(self) -> str:
        return (
            f"<cirrus.Session {self.id[:12]} {self.state}: {self.process.description!r}, "
            f"{len(self._trackers)} volume(s)>"
        )

    def __str__(self) -> str:
        from cirrus.display_session import session_text

        return session_text(self)

    def _repr_html_(self) -> str:
        from cirrus.display_html import session_html

        return session_html(self)


def session(sources: Sequence[str], motivation: str, process: Process) -> Session:
    """Open a session: everything is validated now, before any data can be written."""
    return Session(sources, motivation, process)
