"""SIGTERM inside a `with` session: raised as an exception, so the writes still get a record.

Schedulers stop work with SIGTERM (preemptible VMs, Kubernetes evictions, SLURM time limits,
`kill`), and Python's default action ends the process on the spot: no `finally`, no `__exit__`,
data left without provenance. While a `with` session or task is open in the main thread, SIGTERM
raises `Terminated` instead, so the session records its writes as failed and the process then
exits with status 143. While records are being committed the signal waits until they are (a
second SIGTERM does not wait). Only the default action is replaced, and only from the main
thread: a handler the program or its framework installed is left alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

from cirrus.errors import Terminated

log = logging.getLogger("cirrus.termination")

_lock = threading.Lock()
_state = {"scopes": 0, "holds": 0, "held": False, "pid": 0}


def _handle(signum: int, _frame: Any) -> None:
    if os.getpid() != _state["pid"]:  # a forked child inherited this: it has no session
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if _state["holds"] and not _state["held"]:
        _state["held"] = True
        log.warning("SIGTERM: finishing the commit first (send SIGTERM again to stop at once)")
        return
    _state["held"] = False
    raise Terminated(signum)


def enter() -> bool:
    """Take SIGTERM over for an open scope; False when this thread or handler does not allow it."""
    if threading.current_thread() is not threading.main_thread():
        return False
    with _lock:
        if _state["scopes"] == 0:
            if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
                return False
            signal.signal(signal.SIGTERM, _handle)
            _state["pid"] = os.getpid()
        _state["scopes"] += 1
    return True


def leave() -> None:
    """End a scope `enter` admitted; the last one gives SIGTERM its default action back."""
    with _lock:
        _state["scopes"] -= 1
        if _state["scopes"] == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _state["held"] = False


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold SIGTERM while records are committed; one that arrived is raised when this ends."""
    with _lock:
        _state["holds"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["holds"] -= 1
            deliver = _state["holds"] == 0 and _state["held"]
        if deliver:
            signal.raise_signal(signal.SIGTERM)  # runs `_handle` in the main thread, now
