"""Reading a volume's provenance back: its verified history."""

from __future__ import annotations

from cirrus.ledger import Ledger, StoredRecord


def history(cloudpath: str) -> list[StoredRecord]:
    """The volume's published records, oldest first, each verified against its digest."""
    return Ledger.open(cloudpath).history()
