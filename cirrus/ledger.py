"""One layer's provenance on storage: stage write-once objects, publish into the summary.

Publishing also rolls forward the layer's orphans (records staged by a commit that died before
publishing them); completing their sessions on the sibling volumes is `cirrus.rollforward`'s.

Layout under the layer:
    provenance                          the summary (CloudVolume's shape), compare-and-swap only
    provenance.d/envs/<sha256>.json     code environments, write-once
    provenance.d/records/<sha256>.json  one record per session per layer, write-once
    provenance.d/steps/                 steps' manifests and task fragments (`cirrus.stepfiles`)
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from cirrus.canonical import canonical_json, check_digest, is_digest, sha256_hex, short
from cirrus.errors import IntegrityError, InvalidInput
from cirrus.liveness import left_to_us
from cirrus.model import Record, parse_time, superseded_unpublished, utcnow
from cirrus.overlap import overlapped
from cirrus.readback import CORRUPT, check_record
from cirrus.storage.base import NOT_READ, Blob
from cirrus.storage.paths import OnLayer
from cirrus.summary import (
    ENVS,
    clear_session,
    clear_step,
    listed,
    listed_for,
    mark_session_open,
    mark_step_open,
    merge,
    named_envs,
    parse_summary,
    published_ids,
    render_summary,
)

log = logging.getLogger("cirrus.ledger")

SUMMARY_KEY = "provenance"
RECORDS = "provenance.d/records/"
LARGE_SUMMARY = 1 << 20  # bytes; every commit on the layer reads and rewrites the summary
_warned_large: set[str] = set()  # layers warned about, once per process


def env_blobs(documents: Iterable[Mapping[str, Any]]) -> list[bytes]:
    """Canonical JSON of code environments, computed once however many layers get them."""
    return [canonical_json(document) for document in documents]


def record_id(record: Record) -> str:
    """The id a record is stored under: the sha256 of its canonical JSON."""
    return sha256_hex(canonical_json(record.to_json()))


@attrs.frozen
class Staged:
    """A record staged on a layer, and the summary as read just before (None: no summary)."""

    record_id: str
    summary: Blob | None


@attrs.frozen
class Published:
    """What `Ledger.publish` did: the ids it added, the orphans it found, the summary it left."""

    added: list[str]
    rolled_forward: dict[str, dict[str, Any]]  # orphans found: id -> record JSON
    summary: dict[str, Any]  # as stored when the call returned
    # a record given that stays unpublished -> its session's record that stands there instead
    standing: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen(repr=False)
class StoredRecord:
    """A record as read back from storage, verified against the digest it is filed under."""

    id: str
    record: Record

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, **self.record.to_json()}

    def __repr__(self) -> str:
        from cirrus.display import process_line

        data = self.to_json()
        return f"<cirrus record {short(self.id)} {data['status']}: {process_line(data)}>"

    def __str__(self) -> str:
        from cirrus.display import record_text

        return record_text(self.to_json())

    def _repr_html_(self) -> str:
        from cirrus.display_html import record_html

        return record_html(self.to_json())


@attrs.define
class Ledger(OnLayer):
    """The provenance objects of one layer."""

    # -- stage: write-once, content-addressed, idempotent -------------------------------------
    def stage_envs(self, blobs: Iterable[bytes]) -> list[str]:
        """Store code environments' canonical JSON (see `env_blobs`), each under its sha256."""
        ids = []
        for data in blobs:
            ids.append(sha256_hex(data))
            self.store.create(f"{ENVS}{ids[-1]}.json", data, addressed=True)
        return ids

    def stage_record(self, record: Record, data: bytes | None = None) -> str:
        """Store `record` under its id; `data`: its canonical JSON, when the caller has it."""
        data = canonical_json(record.to_json()) if data is None else data
        stored_as = sha256_hex(data)
        self.store.create(f"{RECORDS}{stored_as}.json", data, addressed=True)
        return stored_as

    def restore_record(self, record: Record) -> bool:
        """Store `record` again where its copy was damaged or deleted. Its bytes are known
        exactly (its id is their sha256), so nothing is guessed; the damaged bytes are kept
        under provenance.d/corrupt/. A step's record is rebuilt from its fragments at every
        finish, so finishing again mends it. Returns whether anything was written."""
        data = canonical_json(record.to_json())
        key = f"{RECORDS}{sha256_hex(data)}.json"
        blob = self.store.get(key)
        if blob is not None and blob.data == data:
            return False
        if blob is None:
            self.store.create(key, data)
        else:
            self.store.create(f"{CORRUPT}{sha256_hex(blob.data)}", blob.data, addressed=True)
            self.store.swap(key, data, blob.token)
        log.warning("%s/%s was damaged or missing; stored again", self.cloudpath, key)
        return True

    def stage(
        self,
        record: Record,
        blobs: Sequence[bytes],
        *,
        read: Blob | None | object = NOT_READ,
        data: bytes | None = None,
    ) -> Staged:
        """Stage a record and the environments the summary does not name yet.

        The summary (`read`, the one a session stored when it marked itself open, or read here)
        is where publishing starts, so a volume costs the creates and one compare-and-swap when
        nobody else commits in between.
        """
        summary = self.stage_envs_for(blobs, read)
        return Staged(self.stage_record(record, data), summary)

    def stage_envs_for(
        self, blobs: Sequence[bytes], read: Blob | None | object = NOT_READ
    ) -> Blob | None:
        """Stage the environments the summary (`read`, or read now) does not name; returns it."""
        summary = self.store.get(SUMMARY_KEY) if read is NOT_READ else read
        if not blobs:
            return summary
        named = named_envs(None if summary is None else summary.data)
        self.stage_envs(blob for blob in blobs if sha256_hex(blob) not in named)
        return summary

    # -- publish: compare-and-swap the summary, re-merge on conflict ---------------------------
    def publish(
        self,
        records: Mapping[str, Record] | None = None,
        *,
        read: Blob | None | object = NOT_READ,
    ) -> Published:
        """Point the summary at `records` and at any staged record it does not point to yet.

        Orphans are looked for at most once, not on every retry, and only where one can be:
        with no `records` (`cirrus recover`), or when the summary lists, other than those of
        `records`, a step or a session that may not publish itself (`liveness.left_to_us`).
        Every session and step is listed on a layer before it stages a record there, until
        that record is published, so a commit on a layer nobody else is writing skips the LIST
        of all its records, and 64 processes of one host committing at once do not each read
        the others' records. The caller completes the orphans' sessions on the sibling layers
        (`cirrus.rollforward`). `read` is the summary as last
        read (see `stage`), tried first instead of reading it again.
        """
        given = {rid: rec.to_json() for rid, rec in (records or {}).items()}
        ours = listed_for(given.values())
        pending = dict(given)
        orphans: dict[str, dict] | None = None  # None: not looked for yet
        added: list[str] = []
        standing: dict[str, str] = {}
        final: dict[str, Any] = {}

        def fold(summary: dict[str, Any]) -> dict[str, Any] | None:
            nonlocal added, orphans, standing, final
            listings = listed(summary)
            # the summary first tried may be stale: a session it lists may have published and
            # exited since, so a fresh read confirms before every record is read
            if orphans is None and (
                not ours or (left_to_us(summary, ours) and left_to_us(self.summary(), ours))
            ):
                orphans = self._orphans(summary, pending)
                pending.update(orphans)
            standing = self._ended_already(summary, given)
            own = {rid: rec for rid, rec in given.items() if rid not in standing}
            added = sorted(set(pending) - published_ids(summary) - set(standing))
            final = summary
            if added or listings & ours:  # ours may be published already, and listed again
                final = merge(summary, {**{rid: pending[rid] for rid in added}, **own})
                return final
            return None

        self.update(fold, read=read)
        return Published(added, orphans or {}, final, standing)

    def _ended_already(
        self, summary: Mapping[str, Any], records: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, str]:
        """Which of `records` stay unpublished because their session already ended here: record
        id -> the session's record that stands (`model.superseded_unpublished`).

        E.g. a commit failed while staging, another session's commit rolled its staged record
        forward, and then the session was aborted: its `failed` record stays unpublished.
        """
        published = published_ids(summary)
        pointers = summary.get("cirrus", {}).get("records", [])
        standing = {}
        for rid, record in records.items():
            if rid in published or record.get("step"):
                continue
            theirs = [p["id"] for p in pointers if p.get("session") == record["session"]]
            if theirs and superseded_unpublished(record, self.readable_records(theirs)):
                standing[rid] = theirs[-1]
        return standing

    def update(
        self,
        change: Callable[[dict[str, Any]], dict[str, Any] | None],
        *,
        read: Blob | None | object = NOT_READ,
    ) -> Blob | None:
        """Compare-and-swap the summary through `change` (None: nothing to write).

        Starts from `read` when given; on a conflict re-reads and re-applies `change`, never
        writing blindly (`Store.update`). Returns the summary it stored, or, when `change` had
        nothing to write, the one it read (`read` itself if given: possibly stale, which later
        only costs a conflict).
        """

        def rendered(blob: Blob | None) -> bytes | None:
            changed = change(parse_summary(None if blob is None else blob.data, self.cloudpath))
            if changed is None:
                return None
            data = render_summary(changed)
            if len(data) > LARGE_SUMMARY and self.cloudpath not in _warned_large:
                _warned_large.add(self.cloudpath)
                log.warning(
                    "%s: the provenance summary is %.1f MiB and every commit here reads and "
                    "rewrites it (it grows ~0.3 KB per session); run many small writers as one "
                    "step (cirrus.step / cirrus.join), which adds one entry per step",
                    self.cloudpath,
                    len(data) / LARGE_SUMMARY,
                )
            return data

        contended = "anything staged stays safe: run `cirrus recover PATH` to publish it"
        return self.store.update(SUMMARY_KEY, rendered, read=read, contended=contended).blob

    def _orphans(
        self, summary: Mapping[str, Any], pending: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, dict]:
        """Staged records the summary does not point to (a commit that crashed before publish).

        A record of a session that ended here already, with a record published or being
        published (`pending`), may not be one (`model.superseded_unpublished`).
        """
        stored = self.record_ids()
        known = published_ids(summary) | set(pending)
        readable = set(stored) - set(pending)
        ended: dict[str, list[str]] = {}  # session -> its published records that are stored
        for pointer in summary.get("cirrus", {}).get("records", []):
            if pointer["id"] in readable:
                ended.setdefault(pointer["session"], []).append(pointer["id"])
        unknown = [rid for rid in stored if rid not in known]
        with overlapped(len(unknown)) as run:
            read = run(self._read_undamaged, unknown)
        found = {}
        for record_id, record in zip(unknown, read, strict=True):
            if record is None:
                continue
            ended_with = [r for r in pending.values() if r["session"] == record["session"]]
            ended_with += self.readable_records(ended.get(record["session"], []))
            if not superseded_unpublished(record, ended_with):
                found[record_id] = record
        if found:
            # A record staged moments ago is most likely a concurrent session mid-commit.
            stale = [
                rid
                for rid, rec in found.items()
                if (utcnow() - parse_time(rec["ended"])).total_seconds() > 60
            ]
            log.log(
                logging.WARNING if stale else logging.INFO,
                "%s: rolling forward %d staged record(s) no summary named (%d older than 60 s)",
                self.cloudpath,
                len(found),
                len(stale),
            )
        return found

    def _read_undamaged(self, record_id: str) -> dict[str, Any] | None:
        """The record stored under `record_id`, or None if damaged (`cirrus verify` reports it)."""
        try:
            return self.read_record(record_id).record.to_json()
        except IntegrityError as error:
            log.warning("%s: damaged record not rolled forward: %s", self.cloudpath, error)
            return None

    def readable_records(self, record_ids: Iterable[str]) -> list[dict[str, Any]]:
        """The records stored under `record_ids`, skipping damaged ones (`verify` reports them)."""
        found = []
        for rid in record_ids:
            with contextlib.suppress(IntegrityError):
                found.append(self.read_record(rid).record.to_json())
        return found

    # -- steps: listed as open on a layer until their record (their files: `cirrus.stepfiles`) --
    def mark_step_open(self, step_id: str, info: Mapping[str, Any]) -> None:
        self.update(lambda summary: mark_step_open(summary, step_id, info))

    def clear_step(self, step_id: str) -> None:
        self.update(lambda summary: clear_step(summary, step_id))

    # -- sessions: listed as open on a layer from their first write until their record --------
    def mark_session_open(
        self, session: str, info: Mapping[str, Any], *, read: Blob | None | object = NOT_READ
    ) -> Blob | None:
        """List `session` as writing here; returns the summary stored (where its commit starts)."""
        return self.update(lambda summary: mark_session_open(summary, session, info), read=read)

    def clear_session(self, session: str) -> None:
        """Unlist a session that ends with no record here (every write it tried was refused)."""
        self.update(lambda summary: clear_session(summary, session))

    # -- read ----------------------------------------------------------------------------------
    def record_ids(self) -> list[str]:
        """Ids of the staged records; anything else in the folder is skipped with a warning."""
        ids = []
        for key in self.store.list(RECORDS):
            name = key[len(RECORDS) :].removesuffix(".json")
            if is_digest(name) and key.endswith(".json"):
                ids.append(name)
            else:
                log.warning("%s: ignoring %s, which is not a record", self.cloudpath, key)
        return ids

    def read_record(self, record_id: str) -> StoredRecord:
        key = f"{RECORDS}{check_digest(record_id, 'record id')}.json"
        document = self._read_verified(key)
        try:
            check_record(document)
            return StoredRecord(record_id, Record.from_json(document))
        except (ValueError, TypeError, KeyError, AttributeError, InvalidInput) as error:
            raise IntegrityError(  # stored under its digest, but by something else
                f"{self.cloudpath}/{key} is not a cirrus record ({type(error).__name__}: {error})",
                f"move it out of {RECORDS}: cirrus writes only records there",
            ) from None

    def read_env(self, env_id: str) -> dict[str, Any]:
        return self._read_verified(f"{ENVS}{check_digest(env_id, 'environment id')}.json")

    def _read_verified(self, key: str) -> dict[str, Any]:
        blob = self.store.get(key)
        restore = (
            f"restore it from a backup or an earlier object version (its name is the sha256 of "
            f"its bytes); `cirrus verify {self.cloudpath}` lists every damaged object"
        )
        if blob is None:
            raise IntegrityError(f"{self.cloudpath}/{key} is missing", restore)
        expected = key.rsplit("/", 1)[-1][: -len(".json")]
        actual = sha256_hex(blob.data)
        if actual != expected:
            raise IntegrityError(
                f"{self.cloudpath}/{key} was changed after it was written (sha256 {actual})",
                restore,
            )
        try:
            return json.loads(blob.data)
        except (ValueError, RecursionError) as error:
            raise IntegrityError(f"{self.cloudpath}/{key} is not JSON ({error})", restore) from None

    def summary(self) -> dict[str, Any]:
        blob = self.store.get(SUMMARY_KEY)
        return parse_summary(None if blob is None else blob.data, self.cloudpath)

    def summary_blob(self) -> Blob | None:
        """The summary as stored (bytes and version token), refused if malformed."""
        blob = self.store.get(SUMMARY_KEY)
        parse_summary(None if blob is None else blob.data, self.cloudpath)
        return blob
