"""The one retry layer: transient errors retried with jittered backoff under a deadline."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from cirrus.errors import TransientStorageError

log = logging.getLogger("cirrus.storage")
T = TypeVar("T")


def _default_deadline() -> float:
    return float(os.environ.get("CIRRUS_STORAGE_DEADLINE", "60"))


@attrs.frozen
class RetryPolicy:
    """Retry `TransientStorageError` only; conflicts and permanent errors surface at once."""

    deadline: float = attrs.field(factory=_default_deadline)
    initial: float = 0.05
    maximum: float = 2.0

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        import tenacity

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientStorageError),
            wait=tenacity.wait_random_exponential(multiplier=self.initial, max=self.maximum),
            stop=tenacity.stop_after_delay(self.deadline),
            before_sleep=_log_retry,
            reraise=True,
        )
        return retrying(fn, *args)


def _log_retry(state: Any) -> None:
    error = state.outcome.exception()
    log.warning(
        "retrying %s (attempt %d, %.1fs so far): %s",
        getattr(state.fn, "__name__", "storage call"),
        state.attempt_number,
        state.seconds_since_start,
        error,
    )
