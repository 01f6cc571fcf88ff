"""Every error cirrus raises, so callers can catch one family and tests can assert precisely."""

from __future__ import annotations

import re


def plain_text(message: object) -> str:
    """A message without terminal colour codes (CloudFiles colours its errors)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", str(message)).strip()


class CirrusError(Exception):
    """Base class of every error raised by cirrus."""


class InvalidInput(CirrusError, ValueError):
    """An argument is unusable; the message names it and says how to fix it."""


class ParameterError(InvalidInput):
    """A process parameter cannot be stored as canonical JSON (or looks like a secret)."""

    def __init__(self, path: str, problem: str):
        self.path = path
        self.problem = problem
        super().__init__(f"process parameter {path}: {problem}")


class ProvenanceRequired(CirrusError, PermissionError):
    """A write was attempted without a session that carries sources, motivation and a process."""


class SessionClosed(ProvenanceRequired):
    """A write handle was used after its session committed or aborted."""


class CaptureError(CirrusError):
    """A code environment could not be captured and `strict=True` was asked for."""


class StorageError(CirrusError):
    """A provenance object could not be read or written."""

    def __init__(self, message: str, *, cloudpath: str = "", key: str = ""):
        self.cloudpath = cloudpath
        self.key = key
        where = f"{cloudpath.rstrip('/')}/{key}" if cloudpath or key else ""
        super().__init__(f"{where}: {message}" if where else message)


class PreconditionFailed(StorageError):
    """A conditional write lost: the object exists, or changed since it was read."""


class TransientStorageError(StorageError):
    """A failure that may succeed on retry (timeouts, throttling, 5xx)."""


class PermanentStorageError(StorageError):
    """A failure that retrying cannot fix (no permission, no bucket, bad request)."""


class UnreadableEncoding(PermanentStorageError):
    """The object is there, compressed in a form cirrus does not read (brotli, zstd...)."""


class NotPublished(CirrusError):
    """A commit passed its commit point (records staged, or journaled) but not every summary
    points to them yet; `cirrus recover` finishes."""

    def __init__(self, staged: dict[str, str], cause: BaseException):
        self.staged = staged
        self.cause = cause
        layers = ", ".join(staged)
        super().__init__(
            f"the records for {layers} are committed but not all are published ({cause}); "
            "nothing is lost: `cirrus recover PATH` (any of them) publishes them"
        )


class CorruptProvenance(CirrusError):
    """A layer's `provenance` is not the JSON shape CloudVolume defines; it is left untouched."""


class IntegrityError(CirrusError):
    """A stored record or environment does not match the digest it is filed under."""

    def __init__(self, problem: str, remedy: str = ""):
        self.problem = problem  # what is wrong, without the remedy (`cirrus verify` lists these)
        self.remedy = remedy
        super().__init__(f"{problem}: {remedy}" if remedy else problem)


class IncompleteLineage(CirrusError):
    """A lineage was shown with parts it could not read whole: damaged or unpublished records,
    or an ancestor whose provenance could not be read."""


class StepError(CirrusError):
    """A step token is invalid, or a volume is used outside the step it was opened for."""


class Terminated(SystemExit):
    """SIGTERM arrived inside a `with` session: raised so its writes are recorded, then exits.

    A SystemExit (status 128 + the signal, as shells report a SIGTERM death), so `except
    Exception` in the body does not swallow it.
    """

    def __init__(self, signum: int = 15):
        super().__init__(128 + signum)

    def __str__(self) -> str:
        return (
            "SIGTERM: the process was asked to stop (preemption, eviction, a time limit or kill) "
            "before the session ended; what it wrote until then is recorded as failed"
        )
