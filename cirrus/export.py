"""`cirrus export`: a volume's history as a W3C PROV document (PROV-JSON or PROV-JSONLD).

Mapping:
- the volume and every source cloudpath are `prov:Entity` (free-text sources too, labelled);
- each session or step is a `prov:Activity` (start and end times, status, motivation, notes,
  record id, write set), which `used` the sources and by which the volume `wasGeneratedBy`;
- each process is a `prov:Plan` (description, parameters, environment ids), and each code
  environment an entity the plan `wasInfluencedBy`;
- each user is a `prov:Agent` (`prov:Person`); the activity `wasAssociatedWith` the user under
  the plan;
- the volume `wasDerivedFrom` each source, through the activity.
`prov` is imported here only, so nothing else pays for it.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from cirrus.errors import InvalidInput
from cirrus.lineage import is_cloudpath
from cirrus.reading import History

NAMESPACE = "urn:cirrus:"
FORMATS = {"prov-json": "json", "prov-jsonld": "jsonld"}


def _local(text: str) -> str:
    return quote(text, safe="")


def document(history: History) -> Any:
    """A `prov.model.ProvDocument` for one volume's history."""
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

    def once(identifier: Any, build: Any) -> Any:
        if identifier not in made:
            made.add(identifier)
            build()
        return identifier

    def source_entity(source: str) -> Any:
        if is_cloudpath(source):
            ident = vol[_local(source)]
            kind = cirrus["Volume"]
        else:
            ident = src[_local(source)]
            kind = cirrus["TextSource"]
        return once(
            ident,
            lambda: doc.entity(ident, {PROV_TYPE: kind, PROV_LABEL: source}),
        )

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
                    env = env_ns[env_id]
                    once(env, lambda env=env: doc.entity(env, {PROV_TYPE: cirrus["CodeEnv"]}))
                    doc.wasInfluencedBy(plan, env)

            once(plan, build_plan)
        doc.wasAssociatedWith(activity, user, plan)
        doc.wasGeneratedBy(volume, activity, record["ended"], {cirrus["record"]: stored.id})
        for source in record.get("sources", []):
            entity = source_entity(source)
            doc.used(activity, entity)
            doc.wasDerivedFrom(volume, entity, activity)
    return doc


def serialize(history: History, format: str) -> str:
    """The history as `prov-json` or `prov-jsonld` text."""
    if format not in FORMATS:
        raise InvalidInput(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
    return document(history).serialize(format=FORMATS[format], indent=2)
