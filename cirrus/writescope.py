"""What sessions and tasks share: write handles tallied per volume, notes, and closing once.

A scope's writes are tracked from its handles; closing it (commit, abort, the `with` exit, a
failure) builds its records once, and what commit point it passed decides whether it may close
again. A scope dropped with unrecorded writes warns, naming the way out (`Unrecorded`).
Subclasses (`cirrus.session.Session`, `cirrus.step.TaskSession`) say what closing records.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
import warnings
import weakref
from collections.abc import Mapping
from typing import Any

import attrs

from cirrus import termination
from cirrus.canonical import check_text
from cirrus.errors import CorruptProvenance, InvalidInput, NotPublished, SessionClosed
from cirrus.handles import Gate, track
from cirrus.model import Note, error_message, utcnow
from cirrus.reading import not_a_layer
from cirrus.redact import redact_url
from cirrus.storage.base import Blob
from cirrus.storage.paths import normalise_cloudpath, use_secrets
from cirrus.storage.s3 import session_token_explained
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
            self,
            _warn_unrecorded,
            self._trackers,
            self._unrecorded_advice(),
            self._interrupted,
            os.getpid(),
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
        self._require_open()  # a closed session says so first, whatever the reason given
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
        if value is None or _exits_successfully(value):
            self.commit()  # a SystemExit still propagates: `__exit__` does not swallow it
            return
        try:
            self.fail(value)
        except Exception:  # the body's exception matters more; what was staged stays recoverable
            log.exception("%s: could not record the failure", self.label)


def _exits_successfully(error: BaseException) -> bool:
    """Whether `error` ends the program with exit status 0: `sys.exit()`, `sys.exit(0)`.

    Any other SystemExit (`sys.exit(1)`, `sys.exit("message")`, `Terminated`) is a failure."""
    if not isinstance(error, SystemExit):
        return False
    return error.code is None or (isinstance(error.code, int) and error.code == 0)


def _open_volume(cloudvolume: Any, cloudpath: str, kwargs: Mapping[str, Any]) -> Any:
    """CloudVolume(cloudpath, **kwargs), a missing `info` refused as cirrus refuses a typo."""
    from cloudvolume.exceptions import InfoUnavailableError

    try:
        with session_token_explained(cloudpath):
            return cloudvolume(cloudpath, **kwargs)
    except InfoUnavailableError:
        error = not_a_layer(normalise_cloudpath(cloudpath))
        raise InvalidInput(
            f"{error}; to make a new layer, pass its info: s.volume(path, info=...), then "
            "commit_info() in the session"
        ) from None


@attrs.frozen
class Unrecorded:
    """How the warning for a scope dropped with unrecorded writes names it, and the way out
    when its commit was cut short or it was never closed."""

    who: str
    cut_short: str
    never_closed: str


def _warn_unrecorded(
    trackers: dict[str, WriteTracker], advice: Unrecorded, interrupted: list[str], pid: int
) -> None:
    """Warn that the scope is gone with writes unrecorded, unless this is a forked child of
    process `pid`, the scope's owner: the child inherited a copy, the parent still closes it."""
    if os.getpid() != pid:
        return
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
