"""Whether a listed session's process still runs: on this host its pid can be checked.

A session lists itself on a volume with its host and pid (`summary.open_session_info`). On
this host a pid can be checked; on another it cannot, and containers that share a host name
but not a pid namespace can answer wrongly. Used to abandon dead sessions (`cirrus.abandon`)
and to leave live ones to publish their own records (`Ledger.publish`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from cirrus.summary import OPEN_SESSIONS, OPEN_STEPS

_committing: dict[str, int] = {}  # sessions of this process inside a commit -> commits under way
_lock = threading.Lock()


def pid_here(info: Mapping[str, Any]) -> int | None:
    """The listing's pid, if it is one of this host's (None: another host, or no valid pid)."""
    pid = info.get("pid")
    if info.get("host") != socket.gethostname() or os.name == "nt":
        return None
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return None
    return pid


def running_here(info: Mapping[str, Any]) -> bool:
    """Whether the listed pid is alive on this host (elsewhere it cannot be checked)."""
    pid = pid_here(info)
    return pid is not None and _alive(pid)


def dead_here(info: Mapping[str, Any]) -> bool:
    """Whether the listing names a process of this host that no longer runs."""
    pid = pid_here(info)
    return pid is not None and not _alive(pid)


def publishes_itself(session: str, info: Mapping[str, Any]) -> bool:
    """Whether a listed session will publish what it stages: it runs in another live process
    of this host, or is committing in a thread of this one.

    A session of this process that is not committing may have failed to publish (its records
    are then rolled forward by whoever finds them), so only a commit under way counts here.
    """
    pid = pid_here(info)
    if pid is None:
        return False
    if pid == os.getpid():
        with _lock:
            return session in _committing
    return _alive(pid)


def left_to_us(summary: Mapping[str, Any], ours: set[str]) -> bool:
    """Whether the summary lists, other than `ours`, a step (its finish may have died) or a
    session that may not publish what it staged: one of another host, of a dead process, or
    of this process and not committing (`publishes_itself`)."""
    section = summary.get("cirrus", {})
    if set(section.get(OPEN_STEPS, {})) - ours:
        return True
    return any(
        not (isinstance(info, Mapping) and publishes_itself(session, info))
        for session, info in section.get(OPEN_SESSIONS, {}).items()
        if session not in ours
    )


@contextlib.contextmanager
def committing(sessions: Iterable[str]) -> Iterator[None]:
    """Mark `sessions` as committing in this process for the block (`publishes_itself`)."""
    sessions = list(sessions)
    with _lock:
        for session in sessions:
            _committing[session] = _committing.get(session, 0) + 1
    try:
        yield
    finally:
        with _lock:
            for session in sessions:
                _committing[session] -= 1
                if not _committing[session]:
                    del _committing[session]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
