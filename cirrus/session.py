"""`cirrus.session`: write handles to many volumes, one record per volume, committed once.

Before its first write to a volume, a session lists itself there as writing (in the summary), so
a process killed before it commits still leaves its writes explained. Closing builds one record
per touched volume and commits them all (`cirrus/commit.py`).
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import logging
import os
import socket
import sys
import threading
import uuid
import warnings
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from cirrus import termination
from cirrus._version import __version__
from cirrus.canonical import check_text, digest
from cirrus.commit import commit_records
from cirrus.demands import validate_motivation, validate_process, validate_sources
from cirrus.errors import (
    CorruptProvenance,
    InvalidInput,
    NotPublished,
    ProvenanceRequired,
    SessionClosed,
)
from cirrus.handles import Gate, track
from cirrus.ledger import NOT_READ, Ledger, env_blobs, record_id
from cirrus.model import Note, Process, Record, error_message, isoformat, utcnow
from cirrus.reading import not_a_layer
from cirrus.redact import redact_url
from cirrus.storage.base import Blob
from cirrus.storage.paths import normalise_cloudpath, use_secrets
from cirrus.summary import open_session_info
from cirrus.writeset import WriteTracker

log = logging.getLogger("cirrus.session")


class WriteScope:
    """Write handles whose writes are tallied per volume; subclasses decide what closing records."""

    kind = "session"

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex
        self.started = utcnow()
        self.state = "open"
        self.notes: list[Note] = []
        self._trackers: dict[str, WriteTracker] = {}
        self._sigterm = 0  # `with` blocks on this scope that took SIGTERM over
        self._summaries: dict[str, Blob | None] = {}  # layer -> summary as last read or stored
        self._staged: dict[str, str] = {}  # set once closing passed its commit point
        self._interrupted: list[str] = []  # commits cut short before their commit point
        self._finalizer = weakref.finalize(
            self, _warn_unrecorded, self._trackers, self._unrecorded_advice(), self._interrupted
        )

    def _unrecorded_advice(self) -> Unrecorded:
        """What the warning for writes left unrecorded says (made now: the finalizer may not
        hold the scope): a session's commit may have stored its journal, so `recover` ends it."""
        return Unrecorded(
            who=f"cirrus session {self.id}",
            cut_short=(
                "run `cirrus recover PATH` on one of them; it publishes the records if the "
                "commit got as far as storing them, and otherwise says the session is still "
                "listed there"
            ),
            never_closed=(
                "that data has no provenance. Call s.commit() (or use `with cirrus.session(...)`)"
            ),
        )

    def volume(self, cloudpath: str, **cloudvolume_kwargs: Any) -> Any:
        """A CloudVolume for `cloudpath` (any CloudVolume keyword) whose writes are tracked.

        Its `secrets=`, if given, also reach the layer's provenance (`cirrus.use_secrets`)."""
        from cloudvolume import CloudVolume

        self._require_open()
        layer = normalise_cloudpath(cloudpath)
        if cloudvolume_kwargs.get("secrets") is not None:  # before any provenance is read
            use_secrets(layer, cloudvolume_kwargs["secrets"])
        self._check_layer(layer)
        volume = _open_volume(CloudVolume, cloudpath, cloudvolume_kwargs)
        tracker = self._trackers.setdefault(layer, WriteTracker())
        return track(volume, Gate(layer, tracker, self._refusal, self._writing))

    def _check_layer(self, layer: str) -> None:
        """Before a handle on `layer` is made: refuse what it must not write (subclasses)."""

    def _writing(self, layer: str) -> None:
        """Called before each write to `layer`; tasks need nothing (their step is listed open)."""

    def result(self, text: str) -> None:
        """A result note, recorded with the writes."""
        self._add_note("result", text)

    def note(self, text: str) -> None:
        """A generic note, recorded with the writes."""
        self._add_note("generic", text)

    def _add_note(self, kind: str, text: str) -> None:
        self._require_open()
        self.notes.append(Note(kind, text))

    def _refusal(self) -> str | None:
        if self.state == "open":
            return None
        how = "cirrus.join(token, task=...)" if self.kind == "task" else "cirrus.session(...)"
        return (
            f"this {self.kind} is {self.state}: its record is made without this write; write "
            f"in a new {self.kind} (`with {how} as s: s.volume(path)`)"
        )

    def _require_open(self) -> None:
        if self.state == "unpublished":
            raise SessionClosed(
                f"{self.kind} {self.id} stopped while publishing its records for "
                f"{', '.join(self.records)}, which are committed; it cannot end again: `cirrus "
                "recover PATH` on any of them publishes them all"
            )
        if self.state != "open":
            raise SessionClosed(f"{self.kind} {self.id} is {self.state}; open a new one")

    @property
    def label(self) -> str:
        """How log lines name this scope."""
        return f"{self.kind} {self.id}"

    @property
    def touched(self) -> list[str]:
        """The volumes that received writes, in the order they were opened."""
        return [layer for layer, tracker in self._trackers.items() if tracker.touched]

    def commit(self) -> dict[str, str]:
        """Record the writes as successful; returns {cloudpath: id of what was stored}."""
        return self._close("committed", None)

    def abort(self, reason: str = "aborted by the user") -> dict[str, str]:
        """Close without success; volumes that received data still get a `failed` entry."""
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidInput(f"abort(reason): give the reason as non-empty text, got {reason!r}")
        check_text(reason, "abort(reason)")
        return self._close("failed", {"type": "Aborted", "message": redact_url(reason)})

    def fail(self, error: BaseException) -> dict[str, str]:
        """Close as failed because of `error` (the body's exception, a Ctrl-C at exit): the
        volumes that received data get a `failed` record naming its type and message."""
        return self._close(
            "failed", {"type": type(error).__name__, "message": error_message(error)}
        )

    def _close(self, status: str, error: dict[str, str] | None) -> dict[str, str]:
        self._require_open()
        with termination.held():  # a SIGTERM now waits for the records to be committed
            return self._closing(status, error)

    def _closing(self, status: str, error: dict[str, str] | None) -> dict[str, str]:
        self.state = "committing"
        try:
            self.records = self._record(status, error)
        except BaseException as problem:
            if not self._staged:
                # The commit point was not reached: stay open so commit() or abort() can be
                # tried again (the same records are staged again, so nothing is doubled); unrecorded
                # writes still warn when the session is collected.
                self.state = "open"
                self._interrupted.append(type(problem).__name__)
                raise
            # Publishing started (NotPublished, or a Ctrl-C): some volumes may have their
            # record already, so the session may not end again with another; `recover` ends it.
            self.records = dict(self._staged)
            self.state = "unpublished"
            self._finalizer.detach()
            if isinstance(problem, NotPublished) and isinstance(problem.cause, CorruptProvenance):
                raise problem.cause from None  # its message says how to repair
            raise
        self.state = self._ended_as(status)
        self._finalizer.detach()
        return self.records

    def _ended_as(self, status: str) -> str:
        """The state closing with `status` leaves."""
        return "committed" if status == "committed" else "failed"

    def _record(self, status: str, error: dict[str, str] | None) -> dict[str, str]:
        raise NotImplementedError

    def __enter__(self) -> WriteScope:
        self._sigterm += termination.enter()  # SIGTERM in the body raises Terminated
        return self

    def __exit__(self, _kind: type | None, value: BaseException | None, _tb: Any) -> None:
        try:
            with termination.held():  # from here on a SIGTERM waits for the records
                self._exit(value)
        finally:
            if self._sigterm:
                termination.leave()
                self._sigterm -= 1

    def _exit(self, value: BaseException | None) -> None:
        if self.state != "open":
            return
        if value is None:
            self.commit()
            return
        try:
            self.fail(value)
        except Exception:  # the body's exception matters more; what was staged stays recoverable
            log.exception("%s: could not record the failure", self.label)


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
        from cirrus.display import session_text

        return session_text(self)

    def _repr_html_(self) -> str:
        from cirrus.display_html import session_html

        return session_html(self)


def _open_volume(cloudvolume: Any, cloudpath: str, kwargs: Mapping[str, Any]) -> Any:
    """CloudVolume(cloudpath, **kwargs), a missing `info` refused as cirrus refuses a typo."""
    from cloudvolume.exceptions import InfoUnavailableError

    try:
        return cloudvolume(cloudpath, **kwargs)
    except InfoUnavailableError:
        error = not_a_layer(normalise_cloudpath(cloudpath))
        raise InvalidInput(
            f"{error}; to make a new layer, pass its info: s.volume(path, info=...), then "
            "commit_info() in the session"
        ) from None


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


@attrs.frozen
class Unrecorded:
    """How the warning for a scope dropped with unrecorded writes names it, and the way out
    when its commit was cut short or it was never closed."""

    who: str
    cut_short: str
    never_closed: str


def _warn_unrecorded(
    trackers: dict[str, WriteTracker], advice: Unrecorded, interrupted: list[str]
) -> None:
    touched = [layer for layer, tracker in trackers.items() if tracker.touched]
    if not touched:
        return
    wrote = f"{advice.who} wrote to {', '.join(touched)}"
    if interrupted:  # its journal, or its one record, may have been stored unanswered
        message = f"{wrote} and its commit was cut short ({interrupted[-1]}): {advice.cut_short}"
    else:
        message = f"{wrote} and was never committed: {advice.never_closed}"
    warnings.warn(message, ResourceWarning, stacklevel=2)
    print(f"WARNING: {message}", file=sys.stderr)


def session(sources: Sequence[str], motivation: str, process: Process) -> Session:
    """Open a session: everything is validated now, before any data can be written."""
    return Session(sources, motivation, process)
