"""One layer's provenance on storage: stage write-once objects, publish into the summary, recover.

Layout under the layer:
    provenance                          the summary (CloudVolume's shape), compare-and-swap only
    provenance.d/envs/<sha256>.json     code environments, write-once
    provenance.d/records/<sha256>.json  one record per session per layer, write-once
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from cirrus.canonical import canonical_json, check_digest, sha256_hex
from cirrus.errors import CorruptProvenance, IntegrityError, PreconditionFailed, StorageError
from cirrus.model import Record
from cirrus.storage import Store, open_store
from cirrus.storage.paths import normalise_cloudpath
from cirrus.summary import empty_summary, merge, parse_summary, published_ids, render_summary

log = logging.getLogger("cirrus.ledger")

SUMMARY_KEY = "provenance"
ENVS = "provenance.d/envs/"
RECORDS = "provenance.d/records/"
CORRUPT = "provenance.d/corrupt/"
PUBLISH_DEADLINE = 300.0


@attrs.frozen
class StoredRecord:
    """A record as read back from storage, verified against the digest it is filed under."""

    id: str
    record: Record

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, **self.record.to_json()}


@attrs.define
class Ledger:
    """The provenance objects of one layer."""

    cloudpath: str
    store: Store

    @classmethod
    def open(cls, cloudpath: str) -> Ledger:
        name = normalise_cloudpath(cloudpath)
        return cls(name, open_store(name))

    # -- stage: write-once, content-addressed, idempotent -------------------------------------
    def stage_env(self, document: Mapping[str, Any]) -> str:
        data = canonical_json(document)
        env_id = sha256_hex(data)
        self.store.create(f"{ENVS}{env_id}.json", data)
        return env_id

    def stage_record(self, record: Record) -> str:
        data = canonical_json(record.to_json())
        record_id = sha256_hex(data)
        self.store.create(f"{RECORDS}{record_id}.json", data)
        return record_id

    # -- publish: compare-and-swap the summary, re-merge on conflict ---------------------------
    def publish(self, records: Mapping[str, Record] | None = None) -> list[str]:
        """Point the summary at `records` and at any staged record it does not point to yet.

        Returns the ids this call added. Conflicts re-read and re-merge with jittered backoff.
        """
        pending = {rid: rec.to_json() for rid, rec in (records or {}).items()}
        deadline = time.monotonic() + PUBLISH_DEADLINE
        orphans_checked = False
        attempt = 0
        while True:
            blob = self.store.get(SUMMARY_KEY)
            summary = parse_summary(None if blob is None else blob.data, self.cloudpath)
            if not orphans_checked:
                pending.update(self._orphans(summary, exclude=pending))
                orphans_checked = True
            added = sorted(set(pending) - published_ids(summary))
            if not added:
                return []
            merged = merge(summary, pending)
            try:
                self.store.swap(
                    SUMMARY_KEY, render_summary(merged), None if blob is None else blob.token
                )
                return added
            except PreconditionFailed:
                attempt += 1
                if time.monotonic() > deadline:
                    raise StorageError(
                        f"summary still contended after {attempt} attempts; "
                        "the records are staged: run `cirrus recover PATH` to publish them",
                        cloudpath=self.cloudpath,
                        key=SUMMARY_KEY,
                    ) from None
                time.sleep(random.uniform(0, min(2.0, 0.01 * 2 ** min(attempt, 8))))

    def _orphans(self, summary: Mapping[str, Any], exclude: Iterable[str]) -> dict[str, dict]:
        """Staged records the summary does not point to (a commit that crashed before publish)."""
        known = published_ids(summary) | set(exclude)
        found = {}
        for record_id in self.record_ids():
            if record_id not in known:
                found[record_id] = self.read_record(record_id).record.to_json()
        if found:
            log.warning("%s: rolling forward %d orphaned record(s)", self.cloudpath, len(found))
        return found

    # -- read ----------------------------------------------------------------------------------
    def record_ids(self) -> list[str]:
        ids = []
        for key in self.store.list(RECORDS):
            name = key[len(RECORDS) :]
            if name.endswith(".json"):
                ids.append(name[: -len(".json")])
        return ids

    def read_record(self, record_id: str) -> StoredRecord:
        document = self._read_verified(f"{RECORDS}{check_digest(record_id, 'record id')}.json")
        return StoredRecord(record_id, Record.from_json(document))

    def read_env(self, env_id: str) -> dict[str, Any]:
        return self._read_verified(f"{ENVS}{check_digest(env_id, 'environment id')}.json")

    def _read_verified(self, key: str) -> dict[str, Any]:
        blob = self.store.get(key)
        if blob is None:
            raise IntegrityError(f"{self.cloudpath}/{key} is missing")
        expected = key.rsplit("/", 1)[-1][: -len(".json")]
        actual = sha256_hex(blob.data)
        if actual != expected:
            raise IntegrityError(
                f"{self.cloudpath}/{key} was changed after it was written (sha256 {actual})"
            )
        return json.loads(blob.data)

    def summary(self) -> dict[str, Any]:
        blob = self.store.get(SUMMARY_KEY)
        return parse_summary(None if blob is None else blob.data, self.cloudpath)

    def history(self) -> list[StoredRecord]:
        """Published records, oldest first, each verified against its digest."""
        pointers = self.summary().get("cirrus", {}).get("records", [])
        return [self.read_record(entry["id"]) for entry in pointers]

    # -- repair ----------------------------------------------------------------------------------
    def repair(self) -> str | None:
        """Set a malformed summary aside (kept under provenance.d/corrupt/) and rebuild it.

        Returns the key the original was kept under, or None when the summary was fine.
        """
        blob = self.store.get(SUMMARY_KEY)
        if blob is None:
            return None
        try:
            parse_summary(blob.data, self.cloudpath)
            return None
        except CorruptProvenance:
            pass
        kept = f"{CORRUPT}{sha256_hex(blob.data)}"
        self.store.create(kept, blob.data)
        records = {rid: self.read_record(rid).record.to_json() for rid in self.record_ids()}
        rebuilt = merge(empty_summary(), records)
        self.store.swap(SUMMARY_KEY, render_summary(rebuilt), blob.token)
        return kept


def recover(cloudpath: str) -> dict[str, list[str]]:
    """Roll forward staged records that no summary points to, on the layer and its siblings.

    A record names the other layers its session wrote, so one call completes a session that
    crashed between publishes. Returns {layer: ids published} for every layer that changed.
    """
    done: dict[str, list[str]] = {}
    queue = [normalise_cloudpath(cloudpath)]
    while queue:
        layer = queue.pop()
        if layer in done:
            continue
        ledger = Ledger.open(layer)
        done[layer] = ledger.publish()
        for record_id in done[layer]:
            queue.extend(ledger.read_record(record_id).record.siblings)
    return {layer: ids for layer, ids in done.items() if ids}
