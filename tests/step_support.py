"""Tasks and worker processes for the step tests (importable by child processes).

Children come from a forkserver that has already imported cirrus, CloudVolume and python-task-queue,
so starting 32 of them costs milliseconds each instead of a fresh interpreter apiece.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from typing import Any

import boto3  # noqa: F401 - preloaded in the forkserver, so children start warm
import cloudvolume  # noqa: F401
import numpy as np
from taskqueue import TaskQueue

import cirrus
from cirrus.ledger import Ledger
from cirrus.taskqueue import StepTask, step_task
from tests import layers

CHUNK = 16
GRID = (10, 10, 2)  # 200 chunks of 16^3
SIZE = tuple(n * CHUNK for n in GRID)


def context() -> Any:
    """A forkserver whose children start with cirrus, CloudVolume and taskqueue imported."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.step_support"])
    return ctx


def make_layer(path: str, size: tuple[int, int, int] = SIZE, chunk: int = CHUNK) -> None:
    """An empty uint8 image layer on a chunk grid of `chunk`^3, written with plain CloudVolume."""
    layers.make_layer(path, size, chunk)


def seg_and_bnd(tmp_path: Any) -> tuple[str, str]:
    """Two volumes a task writes together, as a segmentation and its boundaries."""
    paths = (f"file://{tmp_path}/seg", f"file://{tmp_path}/bnd")
    for path in paths:
        make_layer(path)
    return paths


def origins(grid: tuple[int, int, int] = GRID, chunk: int = CHUNK) -> list[list[int]]:
    return [
        [x * chunk, y * chunk, z * chunk]
        for x in range(grid[0])
        for y in range(grid[1])
        for z in range(grid[2])
    ]


def task_id(origin: list[int]) -> str:
    return "x{}_y{}_z{}".format(*origin)


def paint(session: Any, layer: str, origin: list[int], value: int = 1) -> None:
    x, y, z = origin
    vol = session.volume(layer, progress=False)
    vol[x : x + CHUNK, y : y + CHUNK, z : z + CHUNK] = np.full((CHUNK,) * 3, value, np.uint8)


def _fail_or_die(marker: str, action: str) -> None:
    """The first attempt (the one that creates `marker`) fails or dies; later attempts pass."""
    if not marker:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    if action == "kill":  # after the data is written, before the fragment
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"first attempt fails on purpose ({os.path.basename(marker)})")


class PaintTask(StepTask):
    """Paints one chunk; with `marker`, its first attempt fails ("fail") or is killed ("kill")."""

    def __init__(self, token, task_id, layer, origin, marker="", action="fail"):
        super().__init__(token, task_id, layer, origin, marker, action)

    def run(self, session):
        paint(session, self.layer, self.origin)
        _fail_or_die(self.marker, self.action)


@step_task
def paint_fn(session, layer, origin, marker="", action="fail"):
    paint(session, layer, origin)
    _fail_or_die(marker, action)


def poll_worker(queue: str, lease_seconds: int = 60) -> int:
    """A python-task-queue worker: poll until every task is done (deleted), survive task errors.

    A task that raises stays leased and comes back when its lease expires, as in production.
    """
    tq = TaskQueue(queue, progress=False)
    executed = 0
    while not tq.is_empty():
        try:
            executed += tq.poll(
                lease_seconds=lease_seconds,
                stop_fn=lambda: tq.is_empty(),
                min_backoff_window=0.1,
                max_backoff_window=0.5,
            )
        except Exception:  # noqa: BLE001 - the queue re-delivers it after the lease
            time.sleep(0.1)
    return executed


def pool_task(args: tuple[str, str, str, list[int]]) -> str:
    """One task of a step run by a multiprocessing Pool: join, paint, leave."""
    token, task, layer, origin = args
    with cirrus.join(token, task=task) as session:
        paint(session, layer, origin)
    return f"{os.getpid()}:{task}"


def independent_session(
    layer: str, index: int, barrier: Any, env: dict[str, str], results: Any
) -> None:
    """One independent `cirrus.session` painting its own chunk; all commit at the same moment."""
    os.environ.update(env)
    process = cirrus.Process("independent writer", {"worker": index})
    origin = origins((8, 4, 1), CHUNK)[index % 32]
    with cirrus.session(sources=["noise"], motivation=f"writer {index}", process=process) as s:
        paint(s, layer, origin, value=index + 1)
        Ledger.open(layer).store.get("provenance")  # clients made: all commit in one burst
        barrier.wait(timeout=120)
        started = time.perf_counter()
    results.put((index, s.records[_normal(layer)], time.perf_counter() - started))


def _normal(layer: str) -> str:
    from cirrus.storage.paths import normalise_cloudpath

    return normalise_cloudpath(layer)


def killed_between_fragments(token: str, task: str, layers: list[str]) -> None:
    """A task that paints the origin chunk on each of `layers`, then is SIGKILLed right after
    filing its first fragment, before the next (a preempted worker)."""
    from cirrus.stepfiles import StepFiles

    store = StepFiles.put_fragment

    def put_then_die(self, *args, **kwargs):
        store(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    StepFiles.put_fragment = put_then_die
    with cirrus.join(token, task=task) as session:
        for layer in layers:
            paint(session, layer, [0, 0, 0])
