"""`cirrus verify`: re-hash every stored object of a layer and check the summary agrees with them.

Checks, each reported as a problem (verification fails) or a remark (informational):
- every record and every environment file matches the sha256 it is filed under;
- each record's process digest is the digest of its description, parameters and environments,
  and every environment it names is stored;
- every pointer in the summary has a record, and its fields (session, status, times, process,
  step) are the record's; every record is pointed to (else it is an orphan: `cirrus recover`);
- every processing entry that names a cirrus process matches a record's process, and the sources
  and notes of every published record appear in the summary;
- a finished step's record here accounts for every task fragment here: their number, the
  committed ones, their end times and their attempts (else tasks ran after the finish: finish
  it again), and for every task that wrote here but was cut short before filing its fragment
  here, as its fragments on the step's other volumes say (`cirrus/stepsiblings.py`; another
  volume that cannot be read is a remark);
- open steps, and sessions that wrote and have not committed (still running, or dead), are
  listed as remarks; a session listed here that committed (`cirrus.commitpoint`: its record is
  staged here, or its journal says so) is a problem (`cirrus recover` publishes its record).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs

from cirrus.canonical import digest
from cirrus.commitpoint import commit_state
from cirrus.errors import CorruptProvenance, IntegrityError, InvalidInput
from cirrus.ledger import ENVS, Ledger
from cirrus.model import superseded_unpublished
from cirrus.overlap import THREADS
from cirrus.stepfiles import NOT_OPENED, StepFiles, unaccounted
from cirrus.stepsiblings import unfiled_here
from cirrus.summary import NOTE_SEP, note_key, note_line, notes_counted, processing_entry

POINTER_FIELDS = ("session", "status", "started", "ended", "step")


@attrs.define
class Report:
    """What `verify` found on one layer."""

    volume: str
    records: int = 0
    envs: int = 0
    problems: list[str] = attrs.field(factory=list)
    remarks: list[str] = attrs.field(factory=list)
    orphans: list[str] = attrs.field(factory=list)
    open_steps: dict[str, Any] = attrs.field(factory=dict)
    open_sessions: dict[str, Any] = attrs.field(factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "ok": self.ok}


def _env_ids(ledger: Ledger) -> list[str]:
    keys = ledger.store.list(ENVS)
    return [key[len(ENVS) : -len(".json")] for key in keys if key.endswith(".json")]


def verify(
    cloudpath: str,
    progress: Callable[[int, int], None] | None = None,
    workers: int = THREADS,
) -> Report:
    """Check one layer; `progress(done, total)` is called as objects are re-hashed.

    Storage errors here propagate (the check could not be made); everything else is a finding,
    and so is a step's other volume that cannot be read (a remark).
    """
    ledger = Ledger.open(cloudpath)
    report = Report(ledger.cloudpath)
    try:
        summary = ledger.summary()
    except CorruptProvenance as error:
        report.problems.append(str(error))
        summary = None

    record_ids = ledger.record_ids()
    env_ids = _env_ids(ledger)
    total = len(record_ids) + len(env_ids)
    done = 0

    def read(kind: str, object_id: str) -> tuple[str, str, Any]:
        try:
            if kind == "record":
                return kind, object_id, ledger.read_record(object_id).to_json()
            return kind, object_id, ledger.read_env(object_id)
        except (IntegrityError, InvalidInput, ValueError, TypeError, KeyError) as error:
            return kind, object_id, error

    records: dict[str, dict[str, Any]] = {}
    envs: set[str] = set()
    jobs = [("record", rid) for rid in record_ids] + [("env", eid) for eid in env_ids]
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs)))) as pool:
        for kind, object_id, result in pool.map(lambda job: read(*job), jobs):
            done += 1
            if progress:
                progress(done, total)
            if isinstance(result, Exception):
                if isinstance(result, IntegrityError):  # names the object already
                    report.problems.append(result.problem)
                else:
                    name = "record" if kind == "record" else "environment"
                    report.problems.append(
                        f"{name} {object_id}: unreadable ({type(result).__name__}: {result})"
                    )
            elif kind == "record":
                records[object_id] = result
            else:
                envs.add(object_id)
    report.records, report.envs = len(record_ids), len(env_ids)

    for rid, record in sorted(records.items()):
        _check_record(report, ledger.cloudpath, rid, record, envs)
    if summary is not None:
        _check_summary(report, summary, records, set(record_ids))
        _check_open_sessions(report, records)
        _check_steps(report, StepFiles.beside(ledger), summary, records)
    return report


def _superseded(pointer: dict[str, Any], pointers: list[dict[str, Any]]) -> bool:
    """Whether a pointer's `superseded_by` names another finish of its step (as it must)."""
    later = [p for p in pointers if p.get("id") == pointer["superseded_by"]]
    return bool(pointer.get("step")) and any(p.get("step") == pointer["step"] for p in later)


def _check_steps(
    report: Report, steps: StepFiles, summary: dict[str, Any], records: dict[str, dict[str, Any]]
) -> None:
    """Every step's files here, open or finished: a damaged manifest, list of expected tasks
    or fragment; and, for a finished step, fragments its standing record here does not account
    for: tasks that ran after the finish (a queue's redelivery, a re-run), whose writes no
    record names yet. A record's `ended` is its latest fragment's, so a later one ran after.
    Such a task cut short before filing here shows only on the step's other volumes."""
    section = summary.get("cirrus", {})
    standing: dict[str, tuple[str, dict[str, Any] | None]] = {}
    for pointer in section.get("records", []):
        if pointer.get("step") and "superseded_by" not in pointer:
            standing[pointer["step"]] = (pointer.get("id"), records.get(pointer.get("id")))
    for step_id in sorted(steps.step_ids()):
        manifest = None
        try:
            manifest = steps.manifest(step_id)
            steps.expected(step_id)
        except IntegrityError as damaged:  # tasks and finishes read another volume's copy
            report.problems.append(damaged.problem)
        try:
            fragments = steps.fragments(step_id)
        except IntegrityError as damaged:
            report.problems.append(damaged.problem)
            continue
        if manifest is not None and NOT_OPENED in manifest:  # its opening failed, undone
            if fragments:  # joined before the mark (or before cirrus marked such steps)
                report.problems.append(
                    f"step {step_id[:12]}: it was never opened ({manifest[NOT_OPENED]['error']}"
                    f"), but {len(fragments)} task(s) filed fragments here: no record holds "
                    "their writes; run those tasks again in a new step (`cirrus.step(...)`)"
                )
            continue
        rid, record = standing.get(step_id, (None, None))
        if step_id in section.get("open_steps", {}) or (rid is not None and record is None):
            continue  # not finished yet, or its record is unreadable (reported already)
        problem = unaccounted(fragments, record) if fragments else ""
        if problem:
            report.problems.append(
                f"step {step_id[:12]}: {problem}: tasks ran after it was finished; finish "
                "it again (`cirrus step finish TOKEN`) to record their writes"
            )
        here = steps.cloudpath
        # the step's volumes; if its manifest here is damaged (reported above), its record's
        volumes = manifest["volumes"] if manifest else [here, *(record or {}).get("siblings", [])]
        problems, remarks = unfiled_here(here, step_id, fragments, record, volumes)
        report.problems += problems
        report.remarks += remarks


def _check_record(
    report: Report, volume: str, rid: str, record: dict[str, Any], envs: set[str]
) -> None:
    process = record.get("process")
    if process:
        expected = digest({k: process.get(k) for k in ("description", "parameters", "envs")})
        if process.get("digest") != expected:
            report.problems.append(
                f"record {rid[:12]}: process digest {str(process.get('digest'))[:12]} is not "
                f"the digest of its description, parameters and environments ({expected[:12]})"
            )
        for env_id in process.get("envs", []):
            if env_id not in envs:
                report.problems.append(f"record {rid[:12]}: environment {env_id} is not stored")
    if record.get("volume") != volume:
        report.remarks.append(
            f"record {rid[:12]} was written for {record.get('volume')} (layer copied or moved?)"
        )


def _check_summary(
    report: Report,
    summary: dict[str, Any],
    records: dict[str, dict[str, Any]],
    stored: set[str],
) -> None:
    section = summary.get("cirrus", {})
    pointers = section.get("records", [])
    report.open_steps = dict(section.get("open_steps", {}))
    report.open_sessions = dict(section.get("open_sessions", {}))
    seen: set[str] = set()
    for pointer in pointers:
        rid = pointer.get("id")
        if not isinstance(rid, str):
            report.problems.append(f"summary: a record pointer has no id: {pointer!r}")
            continue
        if rid in seen:
            report.problems.append(f"summary: record {rid[:12]} is pointed to twice")
        seen.add(rid)
        if rid not in stored:
            report.problems.append(f"summary points to record {rid[:12]}, which is not stored")
            continue
        record = records.get(rid)
        if record is None:  # unreadable: already reported
            continue
        for field in POINTER_FIELDS:
            if pointer.get(field) != record.get(field):
                report.problems.append(
                    f"summary: record {rid[:12]} has {field}={pointer.get(field)!r} in the "
                    f"summary but {record.get(field)!r} in the record"
                )
        if pointer.get("process") != (record.get("process") or {}).get("digest"):
            report.problems.append(
                f"summary: record {rid[:12]} has process {pointer.get('process')!r} in the "
                "summary but a different one in the record"
            )
        if "superseded_by" in pointer and not _superseded(pointer, pointers):
            report.problems.append(
                f"summary: record {rid[:12]} is marked superseded by "
                f"{str(pointer['superseded_by'])[:12]}, which is no finish of the same step, so "
                "`cirrus log` hides it: remove `superseded_by` from its pointer"
            )
    # how sessions ended here: a pointer to a record that is not stored does not count
    ended: dict[str, list[dict[str, Any]]] = {}
    for rid in sorted(seen & stored & set(records)):
        ended.setdefault(records[rid]["session"], []).append(records[rid])
    unpublished = sorted(stored - seen)
    for rid in unpublished:
        record = records.get(rid)
        if record is None:  # unreadable: reported already, and no recover publishes it
            continue
        if superseded_unpublished(record, ended.get(record.get("session"), [])):
            report.remarks.append(
                f"record {rid[:12]} of session {record['session'][:12]}, which ended here with "
                "another record, is left unpublished"
            )
            continue
        report.orphans.append(rid)
        report.problems.append(
            f"record {rid[:12]} is stored but the summary does not point to it (an orphan from "
            "an interrupted commit: `cirrus recover PATH` publishes it)"
        )
    published = [records[rid] for rid in seen if rid in records]
    # a process whose only record is unreadable is already reported: do not report it twice
    unreadable = {p.get("process") for p in pointers if p.get("id") not in records}
    _check_processing(report, summary, published, unreadable)
    _check_sources_and_notes(report, summary, published)
    for step_id, info in report.open_steps.items():
        report.remarks.append(
            f"step {step_id[:12]} is open since {info.get('started')} "
            f"({info.get('description')}); `cirrus step status` / `cirrus step finish`"
        )


def _check_open_sessions(report: Report, records: dict[str, dict[str, Any]]) -> None:
    """A session listed as writing here is running, or died before its commit point (a
    remark), or after it (`commitpoint`): then its record is staged here, or its journal holds
    the record this volume lacks (a problem)."""
    staged: dict[str, list[str]] = {}
    for rid in report.orphans:
        staged.setdefault(records[rid]["session"], []).append(rid)
    for session, info in report.open_sessions.items():
        found = commit_state(report.volume, session, info, staged.get(session, []))
        if found is not None and found.committed:
            if session in staged:
                continue  # its staged record is reported already, and how to publish it
            report.problems.append(
                f"session {session[:12]} committed ({found.how}) but its record here is not "
                f"published: `cirrus recover {report.volume}` publishes it"
            )
        elif found is not None and found.damaged:
            report.problems.append(f"session {session[:12]}'s {found.how}")
        elif found is not None:
            report.remarks.append(
                f"session {session[:12]} is listed as writing here; {found.how}, so whether it "
                "committed is unknown"
            )
        else:
            report.remarks.append(
                f"session {session[:12]} (started {info.get('started')}) has written here "
                f"({info.get('description')}, {info.get('user')}@{info.get('host')} pid "
                f"{info.get('pid')}) and not committed: still running, or it died and these "
                "writes have only this listing as provenance (once you know it is dead: "
                f"`cirrus recover {report.volume} --abandon {session[:12]}`; "
                "`--abandon-dead` on its host)"
            )


def _check_processing(
    report: Report, summary: dict[str, Any], published: list[dict[str, Any]], unreadable: set
) -> None:
    processes = {
        rec["process"]["digest"]: rec["process"] for rec in published if rec.get("process")
    }
    listed = set()
    for entry in summary.get("processing", []):
        process_digest = entry.get("cirrus_process")
        if process_digest is None:
            continue  # written by another tool (igneous, provenance-toolbox): not ours to check
        listed.add(process_digest)
        process = processes.get(process_digest)
        if process is None and process_digest in unreadable:
            continue
        if process is None:
            report.problems.append(
                f"summary: processing entry {entry.get('task')!r} names cirrus process "
                f"{str(process_digest)[:12]}, which no published record has"
            )
            continue
        for key, value in processing_entry(process).items():
            if entry.get(key) != value:
                report.problems.append(
                    f"summary: processing entry for process {process_digest[:12]} has "
                    f"{key}={entry.get(key)!r}, the records say {value!r}"
                )
    for process_digest in sorted(set(processes) - listed):
        report.problems.append(
            f"summary: process {process_digest[:12]} of a published record is missing from "
            "`processing`"
        )


def _check_sources_and_notes(
    report: Report, summary: dict[str, Any], published: list[dict[str, Any]]
) -> None:
    sources = set(summary.get("sources", []))
    missing = sorted({s for rec in published for s in rec.get("sources", [])} - sources)
    for source in missing:
        report.problems.append(f"summary: source {source!r} of a published record is missing")
    description = summary.get("description", "")
    present = {note_key(chunk) for chunk in description.split(NOTE_SEP)}
    for rec in published:
        if notes_counted(description, rec["id"]):  # shown up to NOTES_SHOWN, the rest counted
            continue
        for note in rec.get("notes", []):
            if note_key(note_line(note)) not in present:
                report.problems.append(
                    f"summary: {note['kind']} note {note['text']!r} of record "
                    f"{rec['id'][:12]} is missing from `description`"
                )
