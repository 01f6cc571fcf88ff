"""Whether a session or step listed as writing on a volume passed its commit point.

A volume's summary lists a session (`open_sessions`) or step (`open_steps`) until its record
there is published. Its process is then running, or it died: before its commit point, and its
writes have only the listing as provenance, or after it, and it is committed: `cirrus recover`
publishes what it committed. It passed its commit point when its record is staged on the volume
(one volume's session, a step's finish, a journaled session past staging), or when its journal
(`cirrus.journal`, on the volume the listing names) has a record for this volume. `cirrus
verify` and `cirrus log` (`cirrus.history`) judge by this one definition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from cirrus.canonical import short
from cirrus.errors import IntegrityError, InvalidInput, StorageError
from cirrus.journal import read_journal


@attrs.frozen
class Commit:
    """What is known of a listed session's or step's commit on one volume."""

    committed: bool | None  # None: unknown, its journal could not be read
    how: str  # what says so
    damaged: bool = False  # its journal is damaged (or its listing names no volume)

    def to_json(self) -> dict[str, Any]:
        return {"committed": self.committed, "how": self.how}


def commit_state(volume: str, listed: str, info: Any, staged: Sequence[str] = ()) -> Commit | None:
    """Whether the session or step `listed` (as the summary of `volume` lists it, `info`)
    committed; `staged`: its records stored on `volume` that the summary does not name. None:
    no sign that it did (still running, or died before its commit point). Reads its journal
    only when nothing is staged and its listing names one."""
    if staged:
        return Commit(True, f"its record {short(staged[0])} is staged here")
    home = info.get("journal") if isinstance(info, Mapping) else None
    if not isinstance(home, str):
        return None
    try:
        journal = read_journal(home, listed)
    except (IntegrityError, InvalidInput) as error:  # damaged, or a listing edited by hand
        return Commit(None, f"its journal ({home}): {error}", damaged=True)
    except StorageError as error:
        return Commit(None, f"its journal on {home} could not be read ({error})")
    if journal is not None and volume in journal.records:
        return Commit(True, f"its journal on {home} says so")
    return None


def listed_commits(
    volume: str, section: Mapping[str, Any], staged: Mapping[str, list[str]]
) -> dict[str, Commit]:
    """The sessions and steps the summary `section` lists as writing on `volume` that committed
    (or may have: their journal could not be read), by id (`commit_state`)."""
    listed = {**(section.get("open_steps") or {}), **(section.get("open_sessions") or {})}
    found = {
        key: commit_state(volume, key, info, staged.get(key, [])) for key, info in listed.items()
    }
    return {key: commit for key, commit in found.items() if commit is not None}
