"""A multi-volume session's commit point: every record it will publish, in one object.

A session that wrote several volumes creates its journal on the volume it wrote first (each
volume's listing of the session names that volume) before it stages any record. Once the
journal exists the session is committed: a process killed while staging or publishing leaves
volumes that `cirrus recover`, and the next commit that rolls its records forward, complete from
the journal with the very records the commit would have published. Before it, nothing is
staged, and the session is one that died before committing (`cirrus.abandon`).

    <first volume>/provenance.d/journals/<session>.json     create-only, never rewritten
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping

import attrs

from cirrus.canonical import canonical_json
from cirrus.errors import IntegrityError, InvalidInput, PreconditionFailed
from cirrus.ledger import Ledger, record_id
from cirrus.model import Record
from cirrus.readback import check_record

log = logging.getLogger("cirrus.journal")

JOURNALS = "provenance.d/journals/"
SCHEMA = "cirrus.journal/1"
_SESSION_ID = re.compile(r"^[0-9a-f]{32}$")  # uuid4().hex, as `Session` makes them


@attrs.frozen
class Journal:
    """The records one session publishes, by volume, as its journal holds them."""

    session: str
    records: dict[str, Record]

    def ids(self) -> dict[str, str]:
        return {layer: record_id(record) for layer, record in self.records.items()}

    def to_bytes(self, encoded: Mapping[str, bytes] | None = None) -> bytes:
        """Its canonical JSON. `encoded`: each record's canonical JSON, when the caller has it
        (a commit stages those very bytes): spliced in as `canonical_json` would write them."""
        if encoded is None:
            encoded = {layer: canonical_json(rec.to_json()) for layer, rec in self.records.items()}
        records = b",".join(canonical_json(key) + b":" + encoded[key] for key in sorted(encoded))
        head = canonical_json({"schema": SCHEMA, "session": self.session})
        return b'{"records":{' + records + b"}," + head[1:]


def journal_key(session: str) -> str:
    if not isinstance(session, str) or not _SESSION_ID.match(session):
        raise InvalidInput(f"session id must be 32 lowercase hex characters, got {session!r}")
    return f"{JOURNALS}{session}.json"


def write_journal(
    home: str, journal: Journal, encoded: Mapping[str, bytes] | None = None
) -> Journal:
    """Create `journal` on the layer `home`; returns the journal that stands.

    That is `journal`, unless an earlier attempt of the same session created one already (its
    response lost, say, and the session then aborted): its commit point passed with those
    records, so they stand and are what gets published.
    """
    ledger = Ledger.open(home)
    try:
        ledger.store.create(journal_key(journal.session), journal.to_bytes(encoded))
        return journal
    except PreconditionFailed:
        stored = read_journal(home, journal.session)
        if stored is None:  # deleted in between: nothing stands, so ours may
            raise
        ended = "/".join(sorted({record.status for record in stored.records.values()}))
        log.warning(
            "%s: session %s had ended already, %s: an earlier attempt stored its journal, whose "
            "answer was lost; those records stand, not these",
            home,
            journal.session,
            ended,
        )
        return stored


def read_journal(home: str, session: str) -> Journal | None:
    """The session's journal on `home` (None: there is none). IntegrityError if damaged."""
    if not _SESSION_ID.match(session):
        return None  # no `Session` made that id, so no journal has it
    ledger = Ledger.open(home)
    key = journal_key(session)
    blob = ledger.store.get(key)
    if blob is None:
        return None
    try:
        document = json.loads(blob.data)
        if document.get("schema") != SCHEMA or document.get("session") != session:
            raise ValueError(f"not the journal of session {session}")
        records = {}
        for layer, data in document["records"].items():
            check_record(data)
            records[layer] = Record.from_json(data)
            if records[layer].session != session or records[layer].volume != layer:
                raise ValueError(f"its record for {layer} is another session's or volume's")
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError, InvalidInput) as e:
        raise IntegrityError(
            f"{home}/{key} is damaged ({type(e).__name__}: {e})",
            "cirrus only creates it; restore it from a backup or an earlier object version, or "
            "move it aside: recovery then records the volumes it would have completed as "
            "interrupted",
        ) from None
    return Journal(session, records)
