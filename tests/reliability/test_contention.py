"""64 processes, each with its own session, commit to one volume on Ceph RGW at the same moment:
zero lost records (compare-and-swap with jittered retry on a real, atomic S3 server)."""

from __future__ import annotations

import time

import pytest

import cirrus
from cirrus.ledger import Ledger
from tests.reliability import support

WRITERS = 64
pytestmark = [pytest.mark.slow, pytest.mark.rgw]


def test_64_independent_sessions_on_one_rgw_volume_lose_nothing(
    rgw_endpoint, rgw_bucket, monkeypatch
):
    from cloudfiles.interfaces import reset_connection_pools

    env = rgw_endpoint.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_connection_pools()
    layer = f"s3://{rgw_bucket}/layer"
    support.make_layer(layer, support.CONTENTION_SIZE)
    started = time.perf_counter()
    done = support.commit_together(layer, WRITERS, env)
    wall = time.perf_counter() - started
    failed = [item for item in done if item[1] is None]
    assert not failed, failed
    assert len(done) == WRITERS
    ids = {record_id for _, record_id, _ in done}
    history = cirrus.history(layer)
    assert len(history) == WRITERS and {h.id for h in history} == ids  # zero lost, none doubled
    assert sorted(Ledger.open(layer).record_ids()) == sorted(ids)
    summary = Ledger.open(layer).summary()
    workers = sorted(e["parameters"]["worker"] for e in summary["processing"])
    assert workers == list(range(WRITERS))
    for i in range(WRITERS):
        assert f";MOTIVATION;writer {i}" in summary["description"]
    assert summary["sources"] == ["noise"]
    latencies = sorted(seconds for _, _, seconds in done)
    print(
        f"\n64 writers on RGW: wall {wall:.1f} s, commit p50 {latencies[WRITERS // 2]:.2f} s, "
        f"max {latencies[-1]:.2f} s"
    )
    reset_connection_pools()
