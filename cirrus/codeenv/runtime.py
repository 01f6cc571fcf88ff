"""Facts about the running interpreter shared by every code environment."""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import sys
import time
from typing import Any

log = logging.getLogger("cirrus.codeenv")
_warned: set[str] = set()


def installed_packages() -> list[list[str]]:
    """Sorted, deduplicated `[name, version]` pairs of every distribution importlib can see.

    `importlib.metadata` is used rather than `pip freeze` (~10x faster, no subprocess); the same
    distribution found on two `sys.path` entries appears once.
    """
    pairs = {_name_and_version(dist) for dist in importlib.metadata.distributions()}
    named = (pair for pair in pairs if pair[0])
    return [list(pair) for pair in sorted(named, key=lambda p: (p[0].lower(), p[0], p[1]))]


def _name_and_version(dist: importlib.metadata.Distribution) -> tuple[str, str]:
    """Name and Version from the metadata header, read directly: ~8x faster than `dist.metadata`,
    which parses the whole file (long descriptions included) with the email parser."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    fields = {}
    for line in text.splitlines():
        if not line:
            break  # the header ends at the first blank line
        key, _, value = line.partition(":")
        if key in ("Name", "Version"):
            fields[key] = value.strip()
    if len(fields) < 2:
        return dist.metadata["Name"] or "", dist.version or ""
    return fields["Name"], fields["Version"]


def interpreter() -> dict[str, Any]:
    """Python version, implementation and platform: stable for one interpreter on one machine."""
    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": f"{sys.platform}-{platform.machine()}",
    }


def elapsed_ms(start: float) -> float:
    """Milliseconds since `start`, a `time.perf_counter()` reading."""
    return round((time.perf_counter() - start) * 1000, 3)


def warn_capture_failed(message: str) -> None:
    """Log a capture recorded as failed: a warning the first time, debug when it repeats."""
    if message in _warned:
        log.debug("%s", message)
        return
    _warned.add(message)
    log.warning("%s", message)
