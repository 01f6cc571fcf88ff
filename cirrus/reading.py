"""Reading a volume's provenance back: its verified history, one record, its code environments.

A record that is missing or fails its digest never hides the others: the history holds every
intact record and lists each damaged one (`History.damaged`) with what the summary says of it.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import attrs

from cirrus.commitpoint import Commit, listed_commits
from cirrus.errors import (
    CirrusError,
    CorruptProvenance,
    IntegrityError,
    InvalidInput,
    UnreadableEncoding,
)
from cirrus.ledger import SUMMARY_KEY, Ledger, StoredRecord
from cirrus.model import parse_time, superseded_unpublished, utcnow
from cirrus.overlap import overlapped
from cirrus.storage.base import Store
from cirrus.summary import current_ids, other_tools, parse_summary

UNPUBLISHED_AFTER = 60.0  # seconds a staged record may wait for its publish before it is shown
INFO = "info"  # CloudVolume's description of a layer: what makes a path a layer


def not_a_layer(cloudpath: str) -> InvalidInput:
    """The error for a path with neither `info` nor `provenance`: a typo, not an empty history."""
    return InvalidInput(
        f"{cloudpath} is not a CloudVolume layer: it has neither an `info` nor a "
        "`provenance` object; check the path for a typo (it must be the layer's directory, "
        "the one holding `info`)"
    )


def require_layer(path: str) -> None:
    """Refuse a PATH that holds neither a CloudVolume `info` nor a `provenance` (a typo, most
    likely), rather than report an empty history for it. Reads through cirrus's own storage,
    so gs://, s3:// and file:// are checked alike."""
    from cirrus.storage import open_store

    store = open_store(path)
    if store.get(SUMMARY_KEY) is None and not has_info(store):
        raise not_a_layer(store.cloudpath)


def has_info(store: Store) -> bool:
    """Whether the layer's `info` is there, also stored compressed in a form cirrus does not
    read (CloudFiles' brotli or zstd): the layer is there."""
    try:
        return store.get(INFO) is not None
    except UnreadableEncoding:
        return True


@attrs.frozen
class DamagedRecord:
    """A record the summary points to that is missing or fails its digest: what the summary
    still says of it, what is wrong and how to fix it, so it is shown instead of hiding the rest."""

    id: str
    session: str
    status: str  # as the summary's pointer says: the record itself cannot be trusted
    started: str
    ended: str
    process_digest: str | None
    step: str | None
    problem: str  # IntegrityError.problem: which object, and what is wrong with it
    remedy: str  # restore it from a backup; `cirrus verify` lists every damaged object

    @classmethod
    def from_pointer(cls, pointer: Mapping[str, Any], error: IntegrityError) -> DamagedRecord:
        """The summary's pointer to a record that `error` says cannot be read."""
        return cls(
            id=str(pointer["id"]),
            session=str(pointer.get("session", "?")),
            status=str(pointer.get("status", "?")),
            started=str(pointer["started"]),
            ended=str(pointer["ended"]),
            process_digest=pointer.get("process"),
            step=pointer.get("step"),
            problem=error.problem,
            remedy=error.remedy,
        )

    def to_json(self) -> dict[str, Any]:
        """What the views show: the pointer's fields, and `damaged` (problem, remedy)."""
        data = attrs.asdict(self)
        data["damaged"] = {"problem": data.pop("problem"), "remedy": data.pop("remedy")}
        if data["step"] is None:
            del data["step"]
        return data

    def __repr__(self) -> str:
        return f"<cirrus record {self.id[:12]} DAMAGED: {self.problem}>"


Entry = StoredRecord | DamagedRecord


def _order(entry: Entry) -> tuple[str, str]:
    """(start time, id): the order the summary keeps its pointers in, oldest first."""
    started = entry.started if isinstance(entry, DamagedRecord) else entry.record.started
    return (started, entry.id)


class History(list):
    """A volume's published records, oldest first (a plain list of the intact StoredRecords).

    Shows as a table in Jupyter and as `cirrus log` text elsewhere, newest first. `damaged`
    lists the records that are missing or fail their digest (`DamagedRecord`); `entries` has
    both, in order. `total` is how many records stand on the volume: more than were read when
    only the newest were. `commits`: the open sessions and steps that passed their commit point
    (`commitpoint.Commit`), whose records are not published yet (`cirrus recover` does).
    """

    def __init__(
        self,
        records: list[StoredRecord] = (),  # type: ignore[assignment]
        volume: str = "",
        open_steps: dict[str, Any] | None = None,
        open_sessions: dict[str, Any] | None = None,
        total: int | None = None,
        damaged: list[DamagedRecord] = (),  # type: ignore[assignment]
        other_tools: dict[str, Any] | None = None,
        unpublished: list[str] = (),  # type: ignore[assignment]
        commits: dict[str, Commit] | None = None,
    ):
        super().__init__(records)
        self.volume = volume
        self.open_steps = dict(open_steps or {})
        self.open_sessions = dict(open_sessions or {})  # wrote here, not committed (or died)
        self.damaged = list(damaged)
        self.total = len(self) + len(self.damaged) if total is None else total
        # what the summary says that no cirrus record put there (`summary.other_tools`)
        self.other_tools = dict(other_tools or {})
        # stored records no summary names, of no session or step still running here
        self.unpublished = list(unpublished)
        # the open sessions and steps that committed (or may have): not published yet
        self.commits = dict(commits or {})

    @property
    def entries(self) -> list[Entry]:
        """Every record read, intact or damaged, oldest first: what the views show."""
        return sorted([*self, *self.damaged], key=_order)

    def raise_if_damaged(self) -> History:
        """Raise IntegrityError naming the damaged records, or the records stored that the
        summary does not name, if any; else return the history."""
        if self.unpublished and not self.damaged:
            raise IntegrityError(
                f"{self.volume}: {len(self.unpublished)} record(s) stored here are not in the "
                "summary (a tool rewrote `provenance` from an older copy, or a commit was cut "
                "short), the first: " + self.unpublished[0],
                "run `cirrus recover PATH` to publish them again",
            )
        if not self.damaged:
            return self
        first = self.damaged[0]
        raise IntegrityError(
            f"{self.volume}: {len(self.damaged)} of the {len(self.entries)} record(s) read "
            f"are damaged, the first: {first.problem}",
            first.remedy,
        )

    def commits_json(self) -> dict[str, dict[str, Any]]:
        return {key: commit.to_json() for key, commit in self.commits.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "volume": self.volume,
            "records": [record.to_json() for record in self],
            "damaged": [entry.to_json() for entry in self.damaged],
            "total": self.total,
            "open_steps": self.open_steps,
            "open_sessions": self.open_sessions,
            "other_tools": self.other_tools,
            "unpublished": self.unpublished,
            "commits": self.commits_json(),
        }

    def __str__(self) -> str:
        from cirrus.display import history_text

        entries = [entry.to_json() for entry in self.entries]
        return history_text(
            entries,
            self.volume,
            self.open_steps,
            self.total,
            self.open_sessions,
            self.other_tools,
            self.unpublished,
            self.commits_json(),
        )

    __repr__ = __str__

    def _repr_html_(self) -> str:
        from cirrus.display_html import history_html

        entries = [entry.to_json() for entry in self.entries]
        return history_html(
            entries,
            self.volume,
            self.open_steps,
            self.open_sessions,
            self.total,
            self.other_tools,
            self.unpublished,
            self.commits_json(),
        )


def _read_entry(ledger: Ledger, pointer: Mapping[str, Any]) -> Entry:
    """The record a summary pointer names, or what is known of it when it is damaged."""
    try:
        return ledger.read_record(pointer["id"])
    except IntegrityError as error:
        return DamagedRecord.from_pointer(pointer, error)


def read_history(
    ledger: Ledger,
    newest: int | None = None,
    *,
    must_be_layer: bool = False,
    look_for_unpublished: bool = False,
) -> History:
    """The published records of `ledger`'s layer (only the `newest` N if given), each verified,
    read `overlap.THREADS` at a time: 10,000 records are 10,000 GETs. A damaged record is
    listed in `damaged`, never fatal. `other_tools` has the summary's sources no record names
    when every record was read intact. `must_be_layer`: refuse a path with neither `info` nor
    `provenance` (`not_a_layer`), checking `info` only when there is no summary."""
    blob = ledger.store.get(SUMMARY_KEY)
    if blob is None and must_be_layer and not has_info(ledger.store):
        raise not_a_layer(ledger.cloudpath)
    summary = parse_summary(None if blob is None else blob.data, ledger.cloudpath)
    section = summary.get("cirrus", {})
    ids = current_ids(summary)
    wanted = ids if newest is None else ids[len(ids) - min(newest, len(ids)) :]
    pointers = {pointer["id"]: pointer for pointer in section.get("records", [])}
    with overlapped(len(wanted)) as run:
        entries = run(lambda rid: _read_entry(ledger, pointers[rid]), wanted)
    intact = [entry for entry in entries if isinstance(entry, StoredRecord)]
    damaged = [entry for entry in entries if isinstance(entry, DamagedRecord)]
    whole = len(intact) == len(ids)  # else an unread or damaged record may have listed one
    recorded = {source for stored in intact for source in stored.record.sources} if whole else None
    unpublished, staged = unpublished_records(ledger, summary) if look_for_unpublished else ([], {})
    return History(
        intact,
        ledger.cloudpath,
        section.get("open_steps"),
        section.get("open_sessions"),
        total=len(ids),
        damaged=damaged,
        other_tools=other_tools(summary, recorded),
        unpublished=unpublished,
        commits=listed_commits(ledger.cloudpath, section, staged) if look_for_unpublished else {},
    )


def unpublished_records(
    ledger: Ledger, summary: Mapping[str, Any]
) -> tuple[list[str], dict[str, list[str]]]:
    """Records stored on the layer that its summary does not name: those of no session or step
    the summary lists as writing, sorted, and those of each listed one, by its id (staged: its
    commit point passed, `commitpoint`). Left out of the first: those kept unpublished on
    purpose (`model.superseded_unpublished`) and those ended less than `UNPUBLISHED_AFTER` ago.
    One LIST, and a GET for each record not named (and for its session's published ones),
    overlapped: what a blind rewrite of `provenance` from an older copy, or a killed commit,
    leaves."""
    section = summary.get("cirrus", {})
    pointers = section.get("records", [])
    named = {pointer.get("id") for pointer in pointers}
    running = set(section.get("open_sessions") or {}) | set(section.get("open_steps") or {})

    def judge(rid: str) -> str | bool:
        """The listed session or step the record is of, else whether it is unpublished."""
        try:
            record = ledger.read_record(rid).record.to_json()
        except IntegrityError:  # `cirrus verify` reports it; recover cannot publish it
            return False
        for listed in (record["session"], record.get("step")):
            if listed in running:
                return listed
        if (utcnow() - parse_time(record["ended"])).total_seconds() < UNPUBLISHED_AFTER:
            return False  # being published now, most likely (an annotation lists nothing first)
        ended = [p["id"] for p in pointers if p.get("session") == record["session"]]
        return not (ended and superseded_unpublished(record, ledger.readable_records(ended)))

    candidates = sorted(set(ledger.record_ids()) - named)
    with overlapped(len(candidates)) as run:  # rare, but a stale rewrite may drop many at once
        found = run(judge, candidates)
    staged: dict[str, list[str]] = {}
    for rid, listed in zip(candidates, found, strict=True):
        if isinstance(listed, str):
            staged.setdefault(listed, []).append(rid)
    return [rid for rid, lost in zip(candidates, found, strict=True) if lost is True], staged


def history(cloudpath: str, *, newest: int | None = None) -> History:
    """The volume's published records, oldest first, each verified against its digest.

    `newest`: read only the newest N (by start time) of a long history. A record that is
    missing or fails its digest is left out and listed in `.damaged` (`.raise_if_damaged()`
    to refuse it). A path with neither `info` nor `provenance` raises InvalidInput.
    """
    if newest is not None:
        if isinstance(newest, bool) or not isinstance(newest, numbers.Integral) or newest < 0:
            raise InvalidInput(f"newest must be a whole number of records, got {newest!r}")
        newest = int(newest)
    ledger = Ledger.open(cloudpath)
    return read_history(ledger, newest, must_be_layer=True, look_for_unpublished=True)


def resolve_record_id(
    ledger: Ledger, prefix: str, pointers: Mapping[str, Mapping[str, Any]] | None
) -> str:
    """The one record id on the layer starting with `prefix`: stored (published or staged), or
    among the summary's `pointers` (`summary_pointers`) with its file missing (`entry_by_id`
    says so, and how to fix it)."""
    prefix = prefix.strip().lower()
    if not prefix or any(c not in "0123456789abcdef" for c in prefix):
        raise InvalidInput(f"{prefix!r} is not a record id or a prefix of one (hex digits)")
    known = {*ledger.record_ids(), *(pointers or {})}
    matches = sorted(rid for rid in known if rid.startswith(prefix))
    if not matches:
        raise InvalidInput(f"{ledger.cloudpath} has no record whose id starts with {prefix!r}")
    if len(matches) > 1:
        shown = ", ".join(m[:16] for m in matches[:5])
        raise InvalidInput(
            f"{prefix!r} matches {len(matches)} records on {ledger.cloudpath} ({shown}); "
            "give more characters"
        )
    return matches[0]


def summary_pointers(ledger: Ledger) -> dict[str, Mapping[str, Any]] | None:
    """The summary's record pointers by id, read once for all a command asks of them; None
    when the summary is malformed (`cirrus repair` rebuilds it), so that the records stored can
    still be shown."""
    try:
        summary = ledger.summary()
    except CorruptProvenance:
        return None
    return {str(pointer["id"]): pointer for pointer in summary.get("cirrus", {}).get("records", [])}


def standing(pointers: Mapping[str, Mapping[str, Any]] | None, record_id: str) -> dict | None:
    """Whether a stored record stands on the layer: `{"published": bool, "superseded_by": id or
    None}` (a step finished again supersedes its older records); None when the summary is
    malformed (`pointers` None), which `cirrus log` reports."""
    if pointers is None:
        return None
    pointer = pointers.get(record_id)
    later = pointer.get("superseded_by") if pointer else None
    return {"published": pointer is not None, "superseded_by": later}


def entry_by_id(
    ledger: Ledger, record_id: str, pointers: Mapping[str, Mapping[str, Any]] | None
) -> Entry:
    """The record `record_id`, or what the summary's `pointers` say of it when they name it and
    the record is missing or damaged (as `cirrus log` shows it); a damaged record the summary
    does not name raises IntegrityError."""
    try:
        return ledger.read_record(record_id)
    except IntegrityError as error:
        pointer = (pointers or {}).get(record_id)
        if pointer is None:
            raise
        return DamagedRecord.from_pointer(pointer, error)


def record_envs(
    ledger: Ledger, record: StoredRecord
) -> list[tuple[str, dict[str, Any] | None, str | None]]:
    """[(env id, document, None)] for each code environment of the record's process, or
    (env id, None, error) for one that is missing or fails its digest."""
    out: list[tuple[str, dict[str, Any] | None, str | None]] = []
    for env_id in (record.record.process or {}).get("envs", []):
        try:
            out.append((env_id, ledger.read_env(env_id), None))
        except CirrusError as error:
            out.append((env_id, None, str(error)))
    return out
