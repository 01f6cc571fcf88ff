"""`cirrus export`: W3C PROV documents that `prov` reads back, with the mapping DESIGN asks for."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_support import StaticEnv, invoke, layers, write


@pytest.fixture
def derived(tmp_path: Path) -> dict[str, str]:
    a, b, c = layers(tmp_path, "a", "b", "c")
    write([a], ["manual tracing"], "trace it", "trace")
    write([b, c], [a, "a free-text source"], "segment", "watershed", "9 segments", (StaticEnv(),))
    return {"a": a, "b": b, "c": c}


@pytest.mark.parametrize("fmt,prov_format", [("prov-json", "json"), ("prov-jsonld", "jsonld")])
def test_export_loads_back_with_prov(derived: dict[str, str], fmt: str, prov_format: str) -> None:
    import prov
    from prov.model import (
        PROV_LABEL,
        PROV_TYPE,
        ProvActivity,
        ProvAgent,
        ProvAssociation,
        ProvDerivation,
        ProvEntity,
        ProvGeneration,
        ProvUsage,
    )

    text = invoke("export", derived["b"], "--format", fmt).output
    document = prov.read(text, format=prov_format)
    records = list(document.get_records())

    def of(kind: type) -> list:
        return [r for r in records if isinstance(r, kind)]

    def label(record) -> str:
        return str(next(iter(record.get_attribute(PROV_LABEL)), ""))

    entities = {label(e): e for e in of(ProvEntity)}
    assert derived["b"] in entities and derived["a"] in entities
    assert "a free-text source" in entities and "watershed" in entities
    plan = entities["watershed"]
    assert "prov:Plan" in {str(t) for t in plan.get_attribute(PROV_TYPE)}
    (activity,) = of(ProvActivity)
    assert "cirrus:Session" in {str(t) for t in activity.get_attribute(PROV_TYPE)}
    assert activity.get_startTime() is not None and activity.get_endTime() is not None
    (agent,) = of(ProvAgent)
    assert "prov:Person" in {str(t) for t in agent.get_attribute(PROV_TYPE)}
    assert len(of(ProvDerivation)) == 2 and len(of(ProvUsage)) == 2
    assert len(of(ProvGeneration)) == 1 and len(of(ProvAssociation)) == 1
    derived_from = {
        (str(r.formal_attributes[0][1]), str(r.formal_attributes[1][1])) for r in of(ProvDerivation)
    }
    assert (str(entities[derived["b"]].identifier), str(entities[derived["a"]].identifier)) in (
        derived_from
    )


def test_export_to_a_file_and_an_empty_volume(derived: dict[str, str], tmp_path: Path) -> None:
    import prov

    target = tmp_path / "out.json"
    assert invoke("export", derived["a"], "-o", str(target)).output == ""
    assert prov.read(str(target), format="json").get_records()
    (empty,) = layers(tmp_path, "empty")
    document = prov.read(invoke("export", empty).output, format="json")
    assert len(document.get_records()) == 1  # the volume alone
    invoke("export", derived["a"], "--format", "rdf", code=2)
