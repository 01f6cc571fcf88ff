"""Commit records across volumes: stage everything everywhere, then publish each volume.

DESIGN.md's commit protocol. Each volume's few round trips overlap the other volumes', so 100
volumes cost little more than one at cloud latency. A crash between staging and publishing
leaves staged records that the next commit or `cirrus.recover` rolls forward
(`cirrus/rollforward.py`), on the sibling volumes too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from cirrus import termination
from cirrus.errors import NotPublished
from cirrus.ledger import NOT_READ, Ledger, Staged
from cirrus.model import Record
from cirrus.overlap import overlapped
from cirrus.rollforward import complete_sessions
from cirrus.storage.base import Blob


def commit_records(
    records: dict[str, Record],
    env_blobs: Iterable[bytes],
    summaries: Mapping[str, Blob | None] | None = None,
    on_staged: Callable[[dict[str, str]], None] | None = None,
) -> dict[str, str]:
    """Stage everything on every volume, then publish each volume; returns {layer: record id}.

    `summaries`: the summaries as last known (they are read where missing). `on_staged` is
    called with the staged ids once every record is staged, before any is published. The id
    returned for a layer is the session's record that stands there: a record staged now stays
    unpublished where the session already ended (`Ledger._ended_already`).
    """
    if not records:
        return {}
    ledgers = {layer: Ledger.open(layer) for layer in records}
    blobs = list(env_blobs)
    known = dict(summaries or {})

    def stage(layer: str) -> Staged:
        return ledgers[layer].stage(records[layer], blobs, read=known.get(layer, NOT_READ))

    def publish(layer: str, staged: Staged) -> str:
        done = ledgers[layer].publish({staged.record_id: records[layer]}, read=staged.summary)
        complete_sessions(ledgers[layer].cloudpath, done)  # orphans' siblings, if any
        return done.standing.get(staged.record_id, staged.record_id)

    with termination.held(), overlapped(len(records)) as run:  # SIGTERM waits for the commit
        staged = dict(zip(records, run(stage, records), strict=True))
        ids = {layer: done.record_id for layer, done in staged.items()}
        if on_staged is not None:
            on_staged(ids)
        try:
            return dict(zip(staged, run(publish, staged, staged.values()), strict=True))
        except Exception as error:
            raise NotPublished(ids, error) from error
