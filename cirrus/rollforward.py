"""Roll a crashed commit forward on every volume of its session, and explain what it left out.

A session that wrote several volumes journals its records on one of them before it stages any
(`cirrus.journal`); then each volume stages its record and publishes its summary (DESIGN.md,
commit protocol). A crash after the journal leaves volumes with a staged record no summary
points to (an orphan), or with none while they still list the session as writing. `recover`,
and every commit that finds orphans on a volume it publishes, roll the orphans forward, follow
the `siblings` each record names, and publish the journal's record on each volume still listing
the session: it ends published everywhere, as if its commit had finished.

Without a journal to complete it (a session older than journals, or a journal deleted or
damaged since) a staged record's siblings may hold no record of the session, although it wrote
data there. Once the session is evidently dead (its records ended more than `INTERRUPTED_AFTER`
seconds ago; a live commit stages all of its records within seconds), each such sibling gets an
interrupted record: the session's process, sources and notes, status `failed`, error type
`Interrupted` and an empty write set, since the writes were never tallied. Its content is a
function of the session's other records only (no clock), so recoveries racing each other create
the same object once. Step records are left alone: their siblings keep the step open with its
fragments until `cirrus step finish` is run again.

Not covered: a session killed before its journal was written staged nothing, and each volume's
summary still lists it as writing there (`cirrus.abandon` records it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import attrs

from cirrus.canonical import canonical_json, sha256_hex
from cirrus.errors import IntegrityError, InvalidInput, StorageError
from cirrus.journal import Journal, read_journal
from cirrus.ledger import SUMMARY_KEY, Ledger, Published
from cirrus.model import INTERRUPTED, Record, parse_time, utcnow
from cirrus.overlap import overlapped
from cirrus.reading import has_info, require_layer
from cirrus.storage.paths import normalise_cloudpath
from cirrus.summary import OPEN_SESSIONS, published_ids
from cirrus.writeset import WriteTracker

log = logging.getLogger("cirrus.rollforward")

UNREADABLE = object()  # `_Walk._journal`: a journal storage would not let us read
INTERRUPTED_AFTER = 600.0  # seconds since a session's records ended before it counts as dead
INTERRUPTED_MESSAGE = (
    "the process died while committing (this record was recovered from the session's records on "
    "its other volumes); its writes to this volume were not tallied, so they are unknown and the "
    "write set is empty; re-run the step to record them"
)


def recover(cloudpath: str) -> dict[str, list[str]]:
    """Roll forward staged records that no summary points to, on the layer and its siblings.

    Records name the other layers of their session, so one call completes a session that
    crashed anywhere between its publishes, and gives its dead sessions' unrecorded siblings an
    interrupted record. Reads every record the layer's summary points to, to follow them.
    Returns {layer: ids published} for every layer that changed, interrupted records included.
    """
    layer = normalise_cloudpath(cloudpath)
    require_layer(layer)  # a typo is an error, not a layer with nothing to recover
    walk = _Walk()
    walk.take(layer, Ledger.open(layer).publish())
    # The sessions that wrote this layer may have died before publishing on their siblings.
    pointers = walk.summaries[layer].get("cirrus", {}).get("records", [])
    with overlapped(len(pointers)) as run:
        named = run(lambda pointer: siblings_of(layer, pointer), pointers)
    for pointer, siblings in zip(pointers, named, strict=True):
        if siblings:
            walk.sessions.add(pointer["session"])
            walk.queue.extend(siblings)
    # Sessions listed here may have died after their journal, before staging anything here.
    walk.sessions.update(walk.listing(layer))
    walk.finish()
    return walk.done


def complete_sessions(layer: str, published: Published) -> None:
    """After a commit published `layer`: complete the sessions of the orphans it rolled forward.

    That layer is published; the siblings are the crashed session's business, so a failure
    here is logged, not raised.
    """
    if not published.rolled_forward:
        return
    walk = _Walk()
    walk.take(layer, published)
    try:
        walk.finish()
    except Exception as error:
        log.warning(
            "%s: could not complete sibling volumes of rolled-forward records (%s); "
            "run `cirrus recover` on them",
            layer,
            error,
        )


def siblings_of(layer: str, pointer: Mapping[str, Any]) -> list[str]:
    """The other layers of a published record's session, read from the record: summary
    pointers leave them out, or a session over 100 volumes would add ~6 KB to each summary."""
    try:
        return list(Ledger.open(layer).read_record(pointer["id"]).record.siblings)
    except IntegrityError as error:  # `cirrus verify` reports it
        log.warning("%s: cannot follow the siblings of a damaged record: %s", layer, error)
        return []


def interrupted_record(template: Record, layer: str, siblings: list[str], ended: str) -> Record:
    """The record of a dead session on `layer`, which its commit never reached."""
    return attrs.evolve(
        template,
        volume=layer,
        status="failed",
        error={"type": INTERRUPTED, "message": INTERRUPTED_MESSAGE},
        writes=WriteTracker().to_json(),
        siblings=tuple(sorted(set(siblings) - {layer})),
        ended=ended,
        tasks=None,
    )


class _Walk:
    """Layers visited (each published once), the sessions to complete, and what changed."""

    def __init__(self) -> None:
        self.summaries: dict[str, dict[str, Any]] = {}  # layer -> summary after publishing
        self.sessions: set[str] = set()
        self.queue: list[str] = []
        self.done: dict[str, list[str]] = {}
        self._journals: dict[str, Journal | None | object] = {}  # session -> its journal
        self._homes: dict[str, str] = {}  # session -> the layer its journal was read from

    def take(self, layer: str, published: Published) -> None:
        self.summaries[layer] = published.summary
        if published.added:
            self.done.setdefault(layer, []).extend(published.added)
        for record in published.rolled_forward.values():
            self.sessions.add(record["session"])
            self.queue.extend(record.get("siblings", []))

    def listing(self, layer: str) -> dict[str, dict[str, Any]]:
        """The sessions `layer`'s summary (as visited) lists as writing: id -> listing."""
        listed = self.summaries[layer].get("cirrus", {}).get(OPEN_SESSIONS, {})
        return {sid: info for sid, info in listed.items() if isinstance(info, dict)}

    def run(self) -> None:
        """Publish orphans on the queued layers, then on the siblings of what that found."""
        while self.queue:
            layer = self.queue.pop()
            if layer not in self.summaries:
                self.take(layer, Ledger.open(layer).publish())

    def finish(self) -> None:
        """Visit the queued layers, then end each session found on every volume it wrote."""
        ended: set[str] = set()
        while True:
            self.run()
            sessions = sorted(self.sessions - ended)
            if not sessions:
                return
            ended.update(sessions)
            self.interrupt(sessions)

    def interrupt(self, sessions: list[str]) -> None:
        """Complete each of `sessions` from its journal; else give each visited layer that a
        dead session named, but holds no record of it, an interrupted one."""
        holders: dict[str, dict[str, dict[str, Any]]] = {}  # session -> layer -> pointer
        for layer, summary in sorted(self.summaries.items()):
            for pointer in summary.get("cirrus", {}).get("records", []):
                if pointer.get("session") in sessions:
                    holders.setdefault(pointer["session"], {}).setdefault(layer, pointer)
        for session in sessions:
            held = holders.get(session, {})
            journal = self._journal(session)
            if journal is UNREADABLE:
                continue
            if isinstance(journal, Journal):
                self._complete(journal)
                continue
            if not held:
                continue
            named = set(held).union(*(siblings_of(lay, p) for lay, p in held.items()))
            missing = sorted(layer for layer in named - set(held) if layer in self.summaries)
            if missing and not any(p.get("step") for p in held.values()):
                self._interrupt(session, held, sorted(named), missing)

    def _journal(self, session: str) -> Journal | None | object:
        """The session's journal, if a visited layer still lists the session and names one;
        UNREADABLE when storage would not say (it may have committed: leave it as it is)."""
        if session not in self._journals:
            homes = {
                info.get("journal")
                for layer in self.summaries
                for sid, info in self.listing(layer).items()
                if sid == session and isinstance(info.get("journal"), str)
            }
            found: Journal | None | object = None
            for home in sorted(homes):
                try:
                    journal = read_journal(home, session)
                except (IntegrityError, InvalidInput) as error:  # `cirrus verify` reports it
                    log.warning(
                        "session %s cannot be completed from its journal: %s", session, error
                    )
                    continue
                except StorageError as error:
                    log.warning(
                        "session %s: its journal on %s could not be read (%s); left as it is",
                        session,
                        home,
                        error,
                    )
                    found = UNREADABLE
                    continue
                if journal is not None:
                    found = journal
                    self._homes[session] = home
                    break
            self._journals[session] = found
        return self._journals[session]

    def _visit(self, layer: str) -> bool:
        """Publish `layer`'s orphans if it was not visited yet; False if it is no volume now."""
        if layer not in self.summaries:
            ledger = Ledger.open(layer)
            if ledger.store.get(SUMMARY_KEY) is None and not has_info(ledger.store):
                return False
            self.take(layer, ledger.publish())
        return True

    def _complete(self, journal: Journal) -> None:
        """Publish the journal's record on each of its volumes that lacks it but lists the
        session (so it wrote there): the session committed, and these are the records its commit
        would have published. Then drop its listing where it has no record (every write there
        was refused), as its commit would have."""
        session, ids = journal.session, journal.ids()
        for layer, record in sorted(journal.records.items()):
            if not self._visit(layer):
                log.warning("%s: no longer a volume; session %s is not recorded", layer, session)
                continue
            if ids[layer] in published_ids(self.summaries[layer]):
                continue
            if session not in self.listing(layer):
                log.warning(
                    "%s: the journal of session %s names this volume, which does not list the "
                    "session as writing: its record is not published here",
                    layer,
                    session,
                )
                continue
            ledger = Ledger.open(layer)
            staged = ledger.stage(record, [])  # its environments came with its listing
            published = ledger.publish({staged.record_id: record}, read=staged.summary)
            self.take(layer, published)
            if staged.record_id in published.added:
                log.warning(
                    "%s: session %s had committed (its journal says so) but died before "
                    "publishing here; published its record",
                    layer,
                    session,
                )
        home = self._homes.get(session)
        if home is not None and home not in journal.records:
            self._visit(home)
        for layer in sorted(set(self.summaries) - set(journal.records)):
            if session in self.listing(layer):
                Ledger.open(layer).clear_session(session)
                self.summaries[layer] = Ledger.open(layer).summary()

    def _interrupt(
        self, session: str, held: dict[str, dict[str, Any]], named: list[str], missing: list[str]
    ) -> None:
        ended = max((p["ended"] for p in held.values()), key=parse_time)
        age = (utcnow() - parse_time(ended)).total_seconds()
        if age <= INTERRUPTED_AFTER:
            log.info(
                "session %s has no record on %s; it ended %.0f s ago and may still be "
                "committing, so it is left alone",
                session,
                ", ".join(missing),
                age,
            )
            return
        first = min(held)  # any record of the session gives the same interrupted one
        source = Ledger.open(first)
        template = source.read_record(held[first]["id"]).record
        blobs = _env_blobs(source, template)
        for layer in missing:
            ledger = Ledger.open(layer)
            if ledger.store.get("info") is None:
                log.warning("%s: no longer a volume; session %s is not recorded", layer, session)
                continue
            log.warning(
                "%s: session %s died while committing and left no record here; recording it "
                "as interrupted",
                layer,
                session,
            )
            record = interrupted_record(template, layer, named, ended)
            staged = ledger.stage(record, blobs)
            self.take(layer, ledger.publish({staged.record_id: record}, read=staged.summary))


def _env_blobs(ledger: Ledger, record: Record) -> list[bytes]:
    """The code environments a record's process names, as stored on `ledger`'s layer."""
    blobs = []
    for env_id in (record.process or {}).get("envs", []):
        blobs.append(canonical_json(ledger.read_env(env_id)))
        if sha256_hex(blobs[-1]) != env_id:  # stored bytes were not canonical: copy nothing
            raise IntegrityError(f"{ledger.cloudpath}: environment {env_id} is not canonical")
    return blobs
