"""Overlap per-volume round trips: a `map` over a thread pool, a plain loop where none is needed.

Commits, step finishes and recovery each make a few requests per volume; run volume by volume,
100 volumes cost 100 times one at cloud latency. One item runs inline: commits also run from
finalizers at interpreter exit, where no new thread may start (then every item runs inline).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from cirrus.storage.base import CONNECTIONS

THREADS = CONNECTIONS  # items run at once: as many as a client keeps connections open


@contextlib.contextmanager
def overlapped(count: int) -> Iterator[Callable[..., list]]:
    """A `map(function, *columns)` for `count` items that runs them `THREADS` at a time.

    Leaving the block by an exception (a storage error, a second SIGTERM, Ctrl-C) cancels the
    items not started yet. file:// is often a network file system: it gets as many threads.
    """
    if count <= 1:
        yield lambda function, *columns: list(map(function, *columns))
        return
    pool = ThreadPoolExecutor(max_workers=min(THREADS, count))

    def run(function: Callable, *columns: list) -> list:
        futures: list[Future] = []
        rows = list(zip(*columns, strict=True))
        try:
            for row in rows:
                futures.append(pool.submit(function, *row))
        except RuntimeError:  # the interpreter is shutting down: the rest runs here
            return [f.result() for f in futures] + [function(*row) for row in rows[len(futures) :]]
        return [future.result() for future in futures]

    try:
        yield run
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
