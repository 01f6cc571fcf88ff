"""Conditional object storage for provenance objects, one backend per protocol.

Chunk data stays with CloudVolume; this layer only holds `provenance` and `provenance.d/`.
"""

from __future__ import annotations

from cirrus.storage.base import Backend, Blob, Store
from cirrus.storage.paths import open_backend, open_store, wrap_backends

__all__ = ["Backend", "Blob", "Store", "open_backend", "open_store", "wrap_backends"]
