"""`cirrus export`: W3C PROV documents that `prov` reads back, with the mapping DESIGN asks for."""

from __future__ import annotations

import json
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


def _export(path: str, code: int = 0) -> dict:
    return json.loads(invoke("export", path, code=code).stdout)


def test_every_spelling_of_a_layer_is_one_entity(tmp_path: Path) -> None:
    image, seg = layers(tmp_path, "image", "seg")
    write([image], ["microscope"], "acquire it", "acquire")
    write([seg], [f"precomputed://{image}/", "microscope"], "segment it", "segment")
    image_doc, seg_doc = _export(image), _export(seg)
    (own,) = [key for key, e in image_doc["entity"].items() if e.get("prov:label") == image]
    assert seg_doc["entity"][own]["prov:label"] == image  # the source is the image's own entity
    (seg_id,) = [key for key, e in seg_doc["entity"].items() if e.get("prov:label") == seg]
    derived = {
        (d["prov:generatedEntity"], d["prov:usedEntity"])
        for d in seg_doc["wasDerivedFrom"].values()
    }
    assert (seg_id, own) in derived
    texts = [e for e in seg_doc["entity"].values() if e.get("prov:label") == "microscope"]
    assert len(texts) == 1 and texts[0]["prov:type"]["$"] == "cirrus:TextSource"  # kept as is


def test_code_environments_carry_their_headline_facts(
    tmp_path: Path, fake_docker_engine: object
) -> None:
    import os
    import subprocess

    import cirrus

    git_env = {**os.environ, "GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@example.org"}
    git_env.update(GIT_COMMITTER_NAME="T", GIT_COMMITTER_EMAIL="t@example.org")
    code = tmp_path / "code"
    code.mkdir()
    (code / "a.py").write_text("x = 1\n")
    for args in (
        ["init", "-q", "-b", "main"],
        ["add", "a.py"],
        ["commit", "-q", "-m", "first"],
        ["remote", "add", "origin", "https://alice:s3cret-token@github.com/lab/code.git"],
    ):
        subprocess.run(["git", *args], cwd=code, env=git_env, check=True, capture_output=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=code, capture_output=True, text=True, check=True
    ).stdout.strip()
    (code / "a.py").write_text("x = 'an uncommitted edit'\n")
    container, image_id = "4f3c2b1a" * 8, "sha256:" + "ab12" * 16
    digest = "gcr.io/lab/seg@sha256:" + "9" * 64
    fake_docker_engine.add_container(container, "gcr.io/lab/seg:v3", image_id, (digest,))
    (tmp_path / "mountinfo").write_text(
        f"560 550 8:1 /var/lib/docker/containers/{container}/hostname /etc/hostname rw - ext4 x\n"
    )
    (tmp_path / "cgroup").write_text("0::/\n")
    docker = cirrus.DockerEnv(
        mountinfo=tmp_path / "mountinfo",
        cgroup=tmp_path / "cgroup",
        environ={"DOCKER_HOST": fake_docker_engine.url},
    )
    (path,) = layers(tmp_path, "seg")
    write([path], ["x"], envs=(cirrus.PythonGithubEnv(str(code)), docker))

    document = _export(path)
    envs = {e["cirrus:kind"]: e for k, e in document["entity"].items() if k.startswith("env:")}
    git = envs["python-git"]
    assert json.loads(git["cirrus:remotes"]) == {"origin": "https://github.com/lab/code.git"}
    assert (git["cirrus:commit"], git["cirrus:branch"], git["cirrus:dirty"]) == (head, "main", True)
    image = envs["docker"]
    assert (image["cirrus:image"], image["cirrus:tag"], image["cirrus:imageId"]) == (
        "gcr.io/lab/seg",
        "v3",
        image_id,
    )
    assert json.loads(image["cirrus:repoDigests"]) == [digest]
    text = json.dumps(document)
    assert "s3cret-token" not in text and "an uncommitted edit" not in text  # no diff
    assert not any("diff" in key or "packages" in key for env in envs.values() for key in env)


def test_export_marks_a_damaged_record_and_exits_3(derived: dict[str, str]) -> None:
    import cirrus

    b = derived["b"]
    (stored,) = cirrus.history(b)
    (Path(b[len("file://") :]) / "provenance.d" / "records" / f"{stored.id}.json").unlink()
    document = _export(b, code=3)
    (activity,) = document["activity"].values()
    assert activity["cirrus:record"] == stored.id and "is missing" in activity["cirrus:damaged"]
    assert "cirrus verify" in activity["cirrus:remedy"]
    assert activity["prov:startTime"] == stored.record.started
