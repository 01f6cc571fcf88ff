"""Commit records across volumes: journal them if several, stage them, publish each volume.

DESIGN.md's commit protocol. Each volume's few round trips overlap the other volumes', so 100
volumes cost little more than one at cloud latency. A session's records on several volumes are
first journaled on one volume (`cirrus.journal`): from then on the session is committed, and a
crash anywhere after leaves volumes that the next commit or `cirrus.recover` completes from the
journal (`cirrus/rollforward.py`). Every record is staged before any is published, so a crash
in between leaves staged records that are rolled forward, on the sibling volumes too. A single
record, or a step's finish (finished again after a crash), needs no journal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from cirrus import termination
from cirrus.canonical import canonical_json, sha256_hex
from cirrus.errors import NotPublished
from cirrus.journal import Journal, write_journal
from cirrus.ledger import NOT_READ, Ledger, Staged
from cirrus.liveness import committing
from cirrus.model import Record
from cirrus.overlap import overlapped
from cirrus.rollforward import complete_sessions
from cirrus.storage.base import Blob


def commit_records(
    records: dict[str, Record],
    env_blobs: Iterable[bytes],
    summaries: Mapping[str, Blob | None] | None = None,
    on_staged: Callable[[dict[str, str]], None] | None = None,
    journal: str | None = None,
) -> dict[str, str]:
    """Journal (if several), stage everything, then publish each volume; returns {layer: id}.

    `summaries`: the summaries as last known (they are read where missing). `journal`: the
    layer to journal a commit of several volumes on first (its listings name it). `on_staged`
    is called with the ids once the commit point is passed (the journal written, or else every
    record staged), before any is published. The id returned for a layer is the session's
    record that stands there: a record staged now stays unpublished where the session already
    ended (`Ledger._ended_already`).
    """
    if not records:
        return {}
    journaled = journal is not None and len(records) > 1
    ledgers: dict[str, Ledger] = {}
    blobs = list(env_blobs)
    known = dict(summaries or {})

    def stage(layer: str) -> Staged:
        read = known.get(layer, NOT_READ)
        return ledgers[layer].stage(records[layer], blobs, read=read, data=encoded[layer])

    def publish(layer: str, staged: Staged) -> str:
        done = ledgers[layer].publish({staged.record_id: records[layer]}, read=staged.summary)
        complete_sessions(ledgers[layer].cloudpath, done)  # orphans' siblings, if any
        return done.standing.get(staged.record_id, staged.record_id)

    sessions = {record.session for record in records.values()}
    # SIGTERM waits for the commit; other commits of this process leave ours to publish here
    with termination.held(), committing(sessions), overlapped(len(records)) as run:
        ids: dict[str, str] = {}
        encoded = {layer: canonical_json(record.to_json()) for layer, record in records.items()}
        if journaled:
            (session,) = sessions
            ours = Journal(session, dict(records))
            stands = write_journal(journal, ours, encoded)
            if stands is not ours:  # an earlier attempt's journal: its records are published
                records = stands.records
                encoded = {layer: canonical_json(rec.to_json()) for layer, rec in records.items()}
            ids = {layer: sha256_hex(data) for layer, data in encoded.items()}
            if on_staged is not None:
                on_staged(ids)
        ledgers.update((layer, Ledger.open(layer)) for layer in records)
        try:
            staged = dict(zip(records, run(stage, records), strict=True))
            ids = {layer: done.record_id for layer, done in staged.items()}
            if on_staged is not None and not journaled:
                on_staged(ids)
            return dict(zip(staged, run(publish, staged, staged.values()), strict=True))
        except Exception as error:
            if not ids:  # staging failed before the commit point: nothing is committed
                raise
            raise NotPublished(ids, error) from error
