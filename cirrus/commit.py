"""Commit records across volumes: stage everything everywhere, then publish each volume.

DESIGN.md's commit protocol. Each volume's few round trips overlap the other volumes', so 100
volumes cost little more than one at cloud latency. A crash between staging and publishing
leaves staged records that the next commit or `cirrus.recover` rolls forward
(`cirrus/rollforward.py`), on the sibling volumes too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor

from cirrus import termination
from cirrus.errors import NotPublished
from cirrus.ledger import NOT_READ, Ledger, Staged
from cirrus.model import Record
from cirrus.rollforward import complete_sessions
from cirrus.storage.base import CONNECTIONS, Blob

THREADS = CONNECTIONS  # volumes committed at once: their round trips overlap


def commit_records(
    records: dict[str, Record],
    env_blobs: Iterable[bytes],
    summaries: Mapping[str, Blob | None] | None = None,
) -> dict[str, str]:
    """Stage everything on every volume, then publish each volume; returns {layer: record id}.

    `summaries`: the summaries as last known (they are read where missing).
    """
    if not records:
        return {}
    ledgers = {layer: Ledger.open(layer) for layer in records}
    blobs = list(env_blobs)
    known = dict(summaries or {})

    def stage(layer: str) -> Staged:
        return ledgers[layer].stage(records[layer], blobs, read=known.get(layer, NOT_READ))

    def publish(layer: str, staged: Staged) -> None:
        done = ledgers[layer].publish({staged.record_id: records[layer]}, read=staged.summary)
        complete_sessions(ledgers[layer].cloudpath, done)  # orphans' siblings, if any

    with termination.held(), _overlapped(records) as run:  # SIGTERM waits for the commit
        staged = dict(zip(records, run(stage, records), strict=True))
        ids = {layer: done.record_id for layer, done in staged.items()}
        try:
            run(publish, staged, staged.values())
        except Exception as error:
            raise NotPublished(ids, error) from error
    return ids


@contextlib.contextmanager
def _overlapped(layers: Iterable[str]) -> Iterator[Callable[..., list]]:
    """A `map` that overlaps each volume's few round trips with the other volumes'.

    One volume runs inline: this also runs from finalizers at interpreter exit, where no new
    thread may start. file:// is often a network file system, so it gets as many threads as
    the cloud.
    """
    layers = list(layers)
    if len(layers) == 1:
        yield lambda function, *columns: list(map(function, *columns))
        return
    pool = ThreadPoolExecutor(max_workers=min(THREADS, len(layers)))
    try:
        yield lambda function, *columns: list(pool.map(function, *columns))
    except BaseException:  # a second SIGTERM, Ctrl-C: volumes not started yet are not started
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
