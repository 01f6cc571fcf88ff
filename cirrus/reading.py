"""Reading a volume's provenance back: its verified history, one record, its code environments."""

from __future__ import annotations

import numbers
from typing import Any

from cirrus.errors import CirrusError, InvalidInput
from cirrus.ledger import Ledger, StoredRecord
from cirrus.overlap import overlapped
from cirrus.summary import current_ids


class History(list):
    """A volume's published records, oldest first (a plain list of StoredRecord).

    Shows as a table in Jupyter and as `cirrus log` text elsewhere, newest first. `total` is how
    many records stand on the volume: more than the list holds when only the newest were read.
    """

    def __init__(
        self,
        records: list[StoredRecord] = (),  # type: ignore[assignment]
        volume: str = "",
        open_steps: dict[str, Any] | None = None,
        open_sessions: dict[str, Any] | None = None,
        total: int | None = None,
    ):
        super().__init__(records)
        self.volume = volume
        self.open_steps = dict(open_steps or {})
        self.open_sessions = dict(open_sessions or {})  # wrote here, not committed (or died)
        self.total = len(self) if total is None else total

    def to_json(self) -> dict[str, Any]:
        return {
            "volume": self.volume,
            "records": [record.to_json() for record in self],
            "total": self.total,
            "open_steps": self.open_steps,
            "open_sessions": self.open_sessions,
        }

    def __str__(self) -> str:
        from cirrus.display import history_text

        records = [r.to_json() for r in self]
        return history_text(records, self.volume, self.open_steps, self.total, self.open_sessions)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        from cirrus.display_html import history_html

        records = [r.to_json() for r in self]
        return history_html(records, self.volume, self.open_steps, self.open_sessions, self.total)


def read_history(ledger: Ledger, newest: int | None = None) -> History:
    """The published records of `ledger`'s layer (only the `newest` N if given), each verified,
    read `overlap.THREADS` at a time: 10,000 records are 10,000 GETs."""
    summary = ledger.summary()
    section = summary.get("cirrus", {})
    ids = current_ids(summary)
    wanted = ids if newest is None else ids[len(ids) - min(newest, len(ids)) :]
    with overlapped(len(wanted)) as run:
        records = run(ledger.read_record, wanted)
    return History(
        records,
        ledger.cloudpath,
        section.get("open_steps"),
        section.get("open_sessions"),
        total=len(ids),
    )


def history(cloudpath: str, *, newest: int | None = None) -> History:
    """The volume's published records, oldest first, each verified against its digest.

    `newest`: read only the newest N (by start time) of a long history.
    """
    if newest is not None:
        if isinstance(newest, bool) or not isinstance(newest, numbers.Integral) or newest < 0:
            raise InvalidInput(f"newest must be a whole number of records, got {newest!r}")
        newest = int(newest)
    return read_history(Ledger.open(cloudpath), newest)


def resolve_record_id(ledger: Ledger, prefix: str) -> str:
    """The one record id on the layer starting with `prefix` (published or staged)."""
    prefix = prefix.strip().lower()
    if not prefix or any(c not in "0123456789abcdef" for c in prefix):
        raise InvalidInput(f"{prefix!r} is not a record id or a prefix of one (hex digits)")
    matches = sorted({rid for rid in ledger.record_ids() if rid.startswith(prefix)})
    if not matches:
        raise InvalidInput(f"{ledger.cloudpath} has no record whose id starts with {prefix!r}")
    if len(matches) > 1:
        shown = ", ".join(m[:16] for m in matches[:5])
        raise InvalidInput(
            f"{prefix!r} matches {len(matches)} records on {ledger.cloudpath} ({shown}); "
            "give more characters"
        )
    return matches[0]


def record_envs(
    ledger: Ledger, record: StoredRecord
) -> list[tuple[str, dict[str, Any] | None, str | None]]:
    """[(env id, document, None)] for each code environment of the record's process, or
    (env id, None, error) for one that is missing or fails its digest."""
    out: list[tuple[str, dict[str, Any] | None, str | None]] = []
    for env_id in (record.record.process or {}).get("envs", []):
        try:
            out.append((env_id, ledger.read_env(env_id), None))
        except CirrusError as error:
            out.append((env_id, None, str(error)))
    return out
