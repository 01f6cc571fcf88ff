"""`cirrus export`: a volume's history as a W3C PROV document (PROV-JSON or PROV-JSONLD).

Mapping:
- the volume and every source cloudpath are `prov:Entity` (free-text sources too, labelled);
- each session or step is a `prov:Activity` (start and end times, status, motivation, notes,
  record id, write set), which `used` the sources and by which the volume `wasGeneratedBy`;
- each process is a `prov:Plan` (description, parameters, environment ids), and each code
  environment an entity the plan `wasInfluencedBy`, with its headline facts (git remotes,
  commit, branch, dirty; Docker image, tag, image id, digests; never diffs or packages);
- each user is a `prov:Agent` (`prov:Person`); the activity `wasAssociatedWith` the user under
  the plan;
- the volume `wasDerivedFrom` each source, through the activity, once however many spellings
  of a layer the record names; a source the summary lists that no cirrus record names
  (another tool's, as `cirrus log` shows them) is a derivation with no activity, marked
  `cirrus:listedIn` `summary` and `cirrus:recordedBy` `another tool`;
- a damaged record is an activity too, with what the summary says of it (`cirrus:damaged`).
A source that names a layer is named as lineage names it (`sources.source_layer`), so every
spelling of a layer is the entity that layer's own export has.
`prov` is imported here only, so nothing else pays for it.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from cirrus.errors import CirrusError, InvalidInput
from cirrus.ledger import Ledger
from cirrus.overlap import overlapped
from cirrus.reading import DamagedRecord, History
from cirrus.sources import source_layer

NAMESPACE = "urn:cirrus:"
FORMATS = {"prov-json": "json", "prov-jsonld": "jsonld"}


# code environment fields exported as attributes: (document key, attribute); lists and dicts
# become JSON. Diffs, package lists and untracked files stay in the environment file.
ENV_FIELDS = (
    ("kind", "kind"),
    ("remotes", "remotes"),  # {name: url}, credentials stripped when captured
    ("commit", "commit"),
    ("branch", "branch"),
    ("detached", "detached"),
    ("dirty", "dirty"),
    ("python", "python"),
    ("image", "image"),
    ("tag", "tag"),
    ("image_id", "imageId"),
    ("repo_digests", "repoDigests"),
    ("capture_error", "captureError"),
)


def _local(text: str) -> str:
    return quote(text, safe="")


def _source_name(source: str) -> str | None:
    """The layer a source names (None for free text); a cloudpath cirrus cannot follow keeps
    its own spelling."""
    try:
        return source_layer(source)
    except InvalidInput:
        return source.strip()


def env_facts(document: dict[str, Any] | str | None) -> dict[str, Any]:
    """A code environment's headline facts, by attribute name; `error` when it is unreadable."""
    if document is None:
        return {}
    if isinstance(document, str):
        return {"error": document}
    facts = {}
    for key, name in ENV_FIELDS:
        value = document.get(key)
        if value in (None, "", [], {}):
            continue
        facts[name] = json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value
    return facts


def read_envs(history: History) -> dict[str, dict[str, Any] | str]:
    """Each code environment the history's processes name: its document, or why it cannot be
    read (a damaged environment is marked in the export, never fatal)."""
    env_ids = list(
        dict.fromkeys(
            env_id for stored in history for env_id in (stored.record.process or {}).get("envs", [])
        )
    )
    if not env_ids or not history.volume:
        return {}
    ledger = Ledger.open(history.volume)

    def read(env_id: str) -> dict[str, Any] | str:
        try:
            return ledger.read_env(env_id)
        except CirrusError as error:
            return str(error)

    with overlapped(len(env_ids)) as run:
        return dict(zip(env_ids, run(read, env_ids), strict=True))


def document(history: History, envs: dict[str, dict[str, Any] | str] | None = None) -> Any:
    """A `prov.model.ProvDocument` for one volume's history; `envs` (`read_envs`) gives the
    code environments' facts, else they are typed only."""
    from prov.model import PROV, PROV_LABEL, PROV_TYPE, ProvDocument

    doc = ProvDocument()
    doc.set_default_namespace(NAMESPACE)
    cirrus = doc.add_namespace("cirrus", NAMESPACE)
    vol = doc.add_namespace("vol", f"{NAMESPACE}volume:")
    src = doc.add_namespace("src", f"{NAMESPACE}source:")
    act = doc.add_namespace("act", f"{NAMESPACE}activity:")
    plan_ns = doc.add_namespace("plan", f"{NAMESPACE}process:")
    env_ns = doc.add_namespace("env", f"{NAMESPACE}env:")
    user_ns = doc.add_namespace("user", f"{NAMESPACE}user:")

    made: set[Any] = set()
    related: set[tuple[Any, Any]] = set()  # (activity, or None for the summary; entity)

    def once(identifier: Any, build: Any) -> Any:
        if identifier not in made:
            made.add(identifier)
            build()
        return identifier

    def source_entity(source: str) -> Any:
        name = _source_name(source)
        if name is not None:
            ident, kind, label = vol[_local(name)], cirrus["Volume"], name
        else:
            ident, kind, label = src[_local(source)], cirrus["TextSource"], source
        return once(
            ident,
            lambda: doc.entity(ident, {PROV_TYPE: kind, PROV_LABEL: label}),
        )

    def env_entity(env_id: str) -> Any:
        env = env_ns[env_id]
        facts = env_facts((envs or {}).get(env_id))
        attributes = {PROV_TYPE: cirrus["CodeEnv"], **{cirrus[k]: v for k, v in facts.items()}}
        return once(env, lambda: doc.entity(env, attributes))

    volume = vol[_local(history.volume)]
    doc.entity(volume, {PROV_TYPE: cirrus["Volume"], PROV_LABEL: history.volume})
    made.add(volume)

    for stored in history:
        record = stored.to_json()
        kind = "Step" if record.get("step") else "Session"
        activity = act[record["session"]]
        writes = record.get("writes", {})
        attributes = {
            PROV_TYPE: cirrus[kind],
            cirrus["record"]: stored.id,
            cirrus["status"]: record["status"],
            cirrus["host"]: record.get("host", ""),
            cirrus["cirrusVersion"]: record.get("cirrus_version", ""),
            cirrus["writes"]: json.dumps(writes, sort_keys=True),
            cirrus["chunks"]: sum(m.get("chunks", 0) for m in writes.get("mips", {}).values()),
            cirrus["bytes"]: sum(m.get("bytes", 0) for m in writes.get("mips", {}).values()),
        }
        for note in record.get("notes", []):
            attributes.setdefault(cirrus[note["kind"]], note["text"])
        if record.get("notes"):
            attributes[cirrus["notes"]] = json.dumps(record["notes"], sort_keys=True)
        if record.get("error"):
            attributes[cirrus["error"]] = json.dumps(record["error"], sort_keys=True)
        if record.get("tasks"):
            attributes[cirrus["tasks"]] = json.dumps(record["tasks"], sort_keys=True)
        if activity not in made:
            doc.activity(activity, record["started"], record["ended"], attributes)
            made.add(activity)

        user = user_ns[_local(record.get("user", "unknown"))]
        once(
            user,
            lambda user=user, record=record: doc.agent(
                user, {PROV_TYPE: PROV["Person"], PROV_LABEL: record.get("user", "unknown")}
            ),
        )
        plan = None
        process = record.get("process")
        if process:
            plan = plan_ns[process["digest"]]

            def build_plan(plan: Any = plan, process: dict = process) -> None:
                doc.entity(
                    plan,
                    {
                        PROV_TYPE: PROV["Plan"],
                        PROV_LABEL: process["description"],
                        cirrus["parameters"]: json.dumps(process["parameters"], sort_keys=True),
                        cirrus["envs"]: json.dumps(process.get("envs", [])),
                    },
                )
                for env_id in process.get("envs", []):
                    doc.wasInfluencedBy(plan, env_entity(env_id))

            once(plan, build_plan)
        doc.wasAssociatedWith(activity, user, plan)
        doc.wasGeneratedBy(volume, activity, record["ended"], {cirrus["record"]: stored.id})
        for source in record.get("sources", []):
            entity = source_entity(source)
            if (activity, entity) not in related:  # two spellings of one layer: one source
                related.add((activity, entity))
                doc.used(activity, entity)
                doc.wasDerivedFrom(volume, entity, activity)
    listed = {cirrus["listedIn"]: "summary", cirrus["recordedBy"]: "another tool"}
    for source in history.other_tools.get("sources", []):
        entity = source_entity(source)
        if (None, entity) not in related:
            related.add((None, entity))
            doc.wasDerivedFrom(volume, entity, other_attributes=listed)
    for damaged in history.damaged:
        activity = act[damaged.session]
        if activity not in made:
            made.add(activity)
            attributes = _damaged_attributes(damaged, cirrus)
            doc.activity(activity, damaged.started, damaged.ended, attributes)
        doc.wasGeneratedBy(volume, activity, damaged.ended, {cirrus["record"]: damaged.id})
    return doc


def _damaged_attributes(damaged: DamagedRecord, cirrus: Any) -> dict[Any, Any]:
    """A damaged record's activity: what the summary says of it, the problem and the remedy."""
    from prov.model import PROV_TYPE

    attributes = {
        PROV_TYPE: cirrus["Step" if damaged.step else "Session"],
        cirrus["record"]: damaged.id,
        cirrus["status"]: damaged.status,
        cirrus["damaged"]: damaged.problem,
        cirrus["remedy"]: damaged.remedy,
    }
    if damaged.process_digest:
        attributes[cirrus["process"]] = damaged.process_digest
    return attributes


def serialize(history: History, format: str) -> str:
    """The history as `prov-json` or `prov-jsonld` text."""
    if format not in FORMATS:
        raise InvalidInput(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
    return document(history, read_envs(history)).serialize(format=FORMATS[format], indent=2)
