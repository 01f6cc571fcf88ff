"""Independent sessions on one volume under contention: 32 processes commit at once, none lost."""

from __future__ import annotations

from typing import Any

import pytest

import cirrus
from cirrus.storage.paths import normalise_cloudpath
from tests import step_support as ss
from tests.processes import run_together
from tests.session_support import summary_json

WRITERS = 32
SIZE = (8 * ss.CHUNK, 4 * ss.CHUNK, ss.CHUNK)  # one chunk per writer


def commit_together(layer: str, env: dict[str, str], timeout: float = 120) -> list[tuple]:
    """Start WRITERS processes, each with its own session; they commit past one barrier."""
    done, procs = run_together(ss.context(), ss.independent_session, layer, WRITERS, env, timeout)
    assert len(done) == WRITERS, f"only {len(done)} of {WRITERS} writers reported"
    assert [proc.exitcode for proc in procs] == [0] * WRITERS
    return done


def check_nothing_lost(layer: str, done: list[tuple], summary: dict[str, Any]) -> None:
    ids = {record_id for _, record_id, _ in done}
    assert len(ids) == WRITERS
    history = cirrus.history(layer)
    assert len(history) == WRITERS
    assert {h.id for h in history} == ids
    assert {h.record.process["parameters"]["worker"] for h in history} == set(range(WRITERS))
    section = summary["cirrus"]
    assert {entry["id"] for entry in section["records"]} == ids
    workers = {entry["parameters"]["worker"] for entry in summary["processing"]}
    assert workers == set(range(WRITERS))  # every process, once
    for i in range(WRITERS):
        assert f";MOTIVATION;writer {i}" in summary["description"]
    assert summary["sources"] == ["noise"]


def test_32_independent_sessions_on_one_file_volume(tmp_path) -> None:
    layer = f"file://{tmp_path}/layer"
    ss.make_layer(layer, size=SIZE)
    done = commit_together(layer, {})
    check_nothing_lost(layer, done, summary_json(layer))


@pytest.mark.rgw
def test_32_independent_sessions_on_one_rgw_volume(
    rgw_endpoint, rgw_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cloudfiles.interfaces import reset_connection_pools

    env = rgw_endpoint.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_connection_pools()
    layer = f"s3://{rgw_bucket}/layer"
    ss.make_layer(layer, size=SIZE)
    assert normalise_cloudpath(layer) == layer
    done = commit_together(layer, env)
    check_nothing_lost(layer, done, summary_json(layer))
    # the chunks are on RGW too: every writer's value is where it painted
    from cloudvolume import CloudVolume

    data = CloudVolume(layer, progress=False)[:, :, :]
    for index in range(WRITERS):
        x, y, z = ss.origins((8, 4, 1))[index]
        assert int(data[x, y, z, 0]) == index + 1
    reset_connection_pools()
