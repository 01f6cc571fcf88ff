"""Set a malformed `provenance` summary aside and rebuild it from the layer's records.

The original is kept under `provenance.d/corrupt/<sha256>`, and the rebuilt summary replaces it
by compare-and-swap against the malformed bytes, so a concurrent repair or commit is not
overwritten.
"""

from __future__ import annotations

from typing import Any

from cirrus.canonical import sha256_hex
from cirrus.errors import CorruptProvenance
from cirrus.ledger import CORRUPT, SUMMARY_KEY, Ledger
from cirrus.model import is_interrupted
from cirrus.stepfiles import StepFiles
from cirrus.summary import (
    empty_summary,
    mark_step_open,
    merge,
    open_step_info,
    parse_summary,
    render_summary,
)


def repair_summary(cloudpath: str) -> str | None:
    """Rebuild the layer's summary if it is malformed; returns the key the original was kept
    under, or None when the summary was fine (it is then left untouched)."""
    ledger = Ledger.open(cloudpath)
    blob = ledger.store.get(SUMMARY_KEY)
    if blob is None:
        return None
    try:
        parse_summary(blob.data, ledger.cloudpath)
        return None
    except CorruptProvenance:
        pass
    kept = f"{CORRUPT}{sha256_hex(blob.data)}"
    ledger.store.create(kept, blob.data)
    records = _standing(
        {rid: ledger.read_record(rid).record.to_json() for rid in ledger.record_ids()}
    )
    rebuilt = merge(empty_summary(), records)
    finished = {record.get("step") for record in records.values()}
    steps = StepFiles.beside(ledger)
    for step_id in sorted(steps.step_ids() - finished):  # steps still running stay listed open
        manifest = steps.manifest(step_id)
        rebuilt = mark_step_open(rebuilt, manifest["id"], open_step_info(manifest)) or rebuilt
    ledger.store.swap(SUMMARY_KEY, render_summary(rebuilt), blob.token)
    return kept


def _standing(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The records to publish: an interrupted record only where its session has no real one
    (which it lost a race to, see `model.superseded_unpublished`)."""
    real = {r["session"] for r in records.values() if not r.get("step") and not is_interrupted(r)}
    return {
        rid: record
        for rid, record in records.items()
        if not (is_interrupted(record) and record["session"] in real)
    }
