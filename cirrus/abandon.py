"""Close a dead session that a volume still lists as writing, with an interrupted record.

Before its first write to a volume a session lists itself in the volume's summary
(`cirrus.open_sessions`: its process, sources, motivation, who and where), and the record that
ends it there removes the listing. A process killed before committing (SIGKILL, the OOM killer,
a lost machine) leaves the listing behind. Nothing can tell on its own that such a session is
dead (a pid on another host cannot be checked, and sessions may stay open for hours), so a
person says so: `abandon` turns the listing into an interrupted record made from the listing
alone (status failed, an empty write set since the writes were never tallied), so two people
abandoning the same session store one record. `abandon_dead` does it for every session listed
from this host whose pid no longer runs.
"""

from __future__ import annotations

import logging
from typing import Any

from cirrus.canonical import digest
from cirrus.errors import InvalidInput
from cirrus.ledger import Ledger
from cirrus.liveness import dead_here, running_here
from cirrus.model import INTERRUPTED, Record
from cirrus.reading import require_layer
from cirrus.rollforward import recover
from cirrus.storage.paths import normalise_cloudpath
from cirrus.summary import OPEN_SESSIONS, merge, published_ids, recorded_sessions
from cirrus.writeset import WriteTracker

log = logging.getLogger("cirrus.abandon")

ABANDONED_MESSAGE = (
    "the process died before committing (it was still listed as writing here, and its session "
    "was closed as abandoned: `cirrus recover --abandon` or `--abandon-dead`); its writes to "
    "this volume were never tallied, so they are unknown and the write set is empty; re-run "
    "the work to record them"
)
LISTED = ("description", "parameters", "envs", "process", "sources", "notes", "started", "user",
          "host", "cirrus_version")  # fmt: skip


def abandon(cloudpath: str, session: str, *, force: bool = False) -> str:
    """Record a dead session that a layer still lists as writing as interrupted; returns its id.

    `session` is its id or a prefix of it (`cirrus log` shows them). Staged records are
    published first (`cirrus.recover`): a session that died while committing is completed from
    its own records instead. Refused while the listed pid runs on this host, unless `force`
    (that pid now belongs to another program).
    """
    layer = normalise_cloudpath(cloudpath)
    ledger = Ledger.open(layer)
    recovered = recover(layer).get(layer, [])
    sid, info = _listed(ledger, session, recovered)
    if not force and running_here(info):
        raise InvalidInput(
            f"session {sid} is still running here as pid {info['pid']}: let it commit or stop it "
            "first (pass force=True, `--force`, if that pid now belongs to another program)"
        )
    record = abandoned_record(sid, layer, info)
    record_id = ledger.stage(record, []).record_id  # its environments came with the listing
    pending = {record_id: record.to_json()}
    closed = []

    def close(summary: dict[str, Any]) -> dict[str, Any] | None:
        closed.clear()
        if record_id in published_ids(summary):  # a retry after our swap's lost response
            closed.append(record_id)
            return None
        listed = summary.get("cirrus", {}).get(OPEN_SESSIONS, {})
        if sid in recorded_sessions(summary) or sid not in listed:
            return None  # it committed, or was closed, since: checked inside the swap
        closed.append(record_id)
        return merge(summary, pending)

    ledger.update(close)
    if not closed:
        raise InvalidInput(
            f"session {sid} stopped being listed on {layer} while it was being abandoned: it "
            "committed, or someone else closed it, so its interrupted record stays unpublished "
            "(commits and `cirrus recover` leave an interrupted record of a session that has a "
            "record of its own alone)"
        )
    log.warning("%s: session %s recorded as interrupted (abandoned)", layer, sid)
    return record_id


def abandon_dead(cloudpath: str) -> dict[str, str]:
    """`abandon` every session the layer lists as writing whose process is gone from this host
    (the OOM killer, a killed notebook kernel); returns {session: its interrupted record's id}.

    Sessions listed from other hosts are left listed: their pids cannot be checked from here.
    """
    layer = normalise_cloudpath(cloudpath)
    require_layer(layer)
    listed = Ledger.open(layer).summary().get("cirrus", {}).get(OPEN_SESSIONS, {})
    done = {}
    for sid, info in sorted(listed.items()):
        if not dead_here(info):
            continue
        try:
            done[sid] = abandon(layer, sid)
        except InvalidInput as error:  # it ended meanwhile, or its listing cannot be recorded
            log.warning("%s: session %s not abandoned: %s", layer, sid, error)
    return done


def _listed(ledger: Ledger, session: str, recovered: list[str]) -> tuple[str, dict[str, Any]]:
    """The one listed session `session` names (an id or a prefix), and its listing."""
    summary = ledger.summary()
    listed = summary.get("cirrus", {}).get(OPEN_SESSIONS, {})
    matches = sorted(sid for sid in listed if sid.startswith(session)) if session else []
    ended = [
        pointer
        for pointer in summary.get("cirrus", {}).get("records", [])
        if session and str(pointer.get("session", "")).startswith(session)
    ]
    hint = (
        f"; `cirrus recover` just published {len(recovered)} staged record(s) here, which "
        "may have ended it: `cirrus log` shows them"
        if recovered
        else ""
    )
    if not matches and len({pointer["session"] for pointer in ended}) == 1:
        last = ended[-1]
        raise InvalidInput(
            f"session {last['session']} is not listed as writing on {ledger.cloudpath}: it "
            f"ended here already, {last.get('status')} (record {str(last.get('id'))[:12]}; "
            f"`cirrus log` shows it), so there is nothing to abandon{hint}"
        )
    if len(matches) != 1:
        known = ", ".join(sid[:12] for sid in listed) or "none"
        problem = "matches several" if matches else "is not one"
        raise InvalidInput(
            f"{session!r} {problem} of the sessions {ledger.cloudpath} lists as writing "
            f"(listed: {known}){hint}"
        )
    return matches[0], listed[matches[0]]


def abandoned_record(session: str, layer: str, info: dict[str, Any]) -> Record:
    """The interrupted record of a listed session: a function of the listing only."""
    missing = [key for key in LISTED if key not in info]
    process = {key: info.get(key) for key in ("description", "parameters", "envs")}
    if missing or digest(process) != info["process"]:
        problem = f"lacks {', '.join(missing)}" if missing else "does not match its digest"
        raise InvalidInput(
            f"{layer}: the listing of session {session} {problem} (written by hand, or by an "
            "older cirrus); it cannot be recorded. Edit the summary, or leave it listed"
        )
    return Record(
        session=session,
        volume=layer,
        process={**process, "digest": info["process"]},
        sources=tuple(info["sources"]),
        notes=tuple(info["notes"]),
        status="failed",
        started=info["started"],
        ended=info["started"],  # unknown: the process died without saying
        user=info["user"],
        host=info["host"],
        cirrus_version=info["cirrus_version"],
        writes=WriteTracker().to_json(),
        error={"type": INTERRUPTED, "message": ABANDONED_MESSAGE},
    )
