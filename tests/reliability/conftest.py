"""Reliability suite: the `slow` marker (heavy parts: RGW contention, the crash matrix).

Slow tests still run by default; `-m "not slow"` leaves them out for a quick CI stage.
"""

from __future__ import annotations


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "slow: heavy reliability tests (RGW contention, crash matrix); run by default"
    )
