"""Real processes released together: the contention tests' launcher."""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any


def run_together(
    ctx: Any, target: Callable[..., None], layer: str, count: int, env: dict, timeout: float
) -> tuple[list[tuple], list[Any]]:
    """Start `count` processes of `target(layer, i, barrier, env, results)` past one barrier.

    Returns what they put on `results` (as many as arrived within `timeout`) and the processes,
    all ended: those still running after a grace period are killed.
    """
    barrier = ctx.Barrier(count)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=target, args=(layer, i, barrier, env, results)) for i in range(count)
    ]
    for proc in procs:
        proc.start()
    done: list[tuple] = []
    try:
        for _ in procs:
            done.append(results.get(timeout=timeout))
    except queue.Empty:
        pass
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()
    return done, procs
