"""The one retry layer: transient errors retried with jittered backoff under a deadline.

The first retry of a call is logged at WARNING (once: which call, why, and for how long it will
be retried); every later attempt at DEBUG, so a dead endpoint costs one line, not one per
attempt. `CIRRUS_STORAGE_DEADLINE` (seconds, default 60) bounds how long a call is retried.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from cirrus.errors import InvalidInput, TransientStorageError

log = logging.getLogger("cirrus.storage")
T = TypeVar("T")
DEFAULT_DEADLINE = 60.0


def storage_deadline() -> float:
    """Seconds a storage call is retried: CIRRUS_STORAGE_DEADLINE, or 60."""
    value = os.environ.get("CIRRUS_STORAGE_DEADLINE", "").strip()
    if not value:
        return DEFAULT_DEADLINE
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also NaN
        raise InvalidInput(
            f"CIRRUS_STORAGE_DEADLINE must be a number of seconds (0 or more), got {value!r}"
        )
    return seconds


@attrs.frozen
class RetryPolicy:
    """Retry `TransientStorageError` only; conflicts and permanent errors surface at once."""

    deadline: float = attrs.field(factory=storage_deadline)
    initial: float = 0.05
    maximum: float = 2.0

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        import tenacity

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientStorageError),
            wait=tenacity.wait_random_exponential(multiplier=self.initial, max=self.maximum),
            stop=tenacity.stop_after_delay(self.deadline),
            before_sleep=self._log_retry,
            reraise=True,
        )
        return retrying(fn, *args)

    def _log_retry(self, state: Any) -> None:
        error = state.outcome.exception()
        name = getattr(state.fn, "__name__", "storage call")
        if state.attempt_number == 1:
            log.warning(
                "retrying %s for up to %gs (CIRRUS_STORAGE_DEADLINE): %s",
                name,
                self.deadline,
                error,
            )
        else:
            log.debug(
                "retrying %s (attempt %d, %.1fs so far): %s",
                name,
                state.attempt_number,
                state.seconds_since_start,
                error,
            )
