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

# Touched from the main thread (where Python runs signal handlers), and by `leave` of a
# compatibility volume collected in another thread: a counter, so no lock is needed.
_state = {"scopes": 0, "holds": 0, "held": False, "raised": False}


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _handle(signum: int, _frame: Any) -> None:
    if _state["scopes"] == 0:  # left off the main thread, which could not restore the default
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)
        return
    if _state["holds"] and not _state["held"]:
        _state["held"] = True
        log.warning("SIGTERM: finishing the commit first (send SIGTERM again to stop at once)")
        return
    _state["held"] = False
    _state["raised"] = True
    raise Terminated(signum)


def raised() -> bool:
    """Whether SIGTERM was raised as `Terminated` in this process (a SystemExit, so an exit
    hook cannot tell it from `sys.exit` otherwise)."""
    return bool(_state["raised"])


def enter() -> bool:
    """Take SIGTERM over for an open scope; False when this thread or handler does not allow it."""
    if not _main_thread():
        return False
    if _state["scopes"] == 0:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return False
        signal.signal(signal.SIGTERM, _handle)
    _state["scopes"] += 1
    return True


def leave() -> None:
    """End a scope `enter` admitted; the last one gives SIGTERM its default action back.

    Unless the program installed a handler of its own meanwhile: that one stays.
    """
    _state["scopes"] -= 1
    if _state["scopes"] == 0:
        _state["held"] = False
        if _main_thread() and signal.getsignal(signal.SIGTERM) is _handle:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold SIGTERM while records are committed; one that arrived is raised when this ends.

    Only the main thread holds it: a commit in another thread must not delay the main thread's.
    """
    if not _main_thread():
        yield
        return
    _state["holds"] += 1
    try:
        yield
    finally:
        _state["holds"] -= 1
        if _state["holds"] == 0 and _state["held"]:
            signal.raise_signal(signal.SIGTERM)  # runs `_handle`, which raises Terminated


def _after_fork_in_child() -> None:
    """A forked child has none of its parent's scopes: SIGTERM gets its default action back."""
    _state.update(scopes=0, holds=0, held=False, raised=False)
    with contextlib.suppress(ValueError):  # forked from a thread CPython does not make main
        if signal.getsignal(signal.SIGTERM) is _handle:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
