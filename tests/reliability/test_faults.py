"""Transient faults on every provenance call: nothing lost, nothing doubled, or a clear error.

Every backend opened in a test is wrapped in a seeded FaultyBackend (30% of calls fail before
they reach storage, 30% of writes are applied but answer an error, some calls stall), on file://,
moto (S3) and fake-gcs-server (GCS). Several multi-volume sessions in a row must each commit
exactly once per volume; with a deadline too short to ride the faults out, a session must fail
with a cirrus error and leave a state that `cirrus.recover` completes.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

import cirrus
from cirrus.errors import CirrusError
from cirrus.ledger import Ledger
from cirrus.storage import wrap_backends
from cirrus.storage.paths import normalise_cloudpath
from tests.reliability import support
from tests.reliability.support import Faults

VOLUMES = 3
SESSIONS = 4


@pytest.fixture(params=["file", "s3", "gcs"])
def root(request: pytest.FixtureRequest, tmp_path) -> str:
    """A cloudpath prefix on each backend; layers go under it."""
    if request.param == "file":
        return f"file://{tmp_path}"
    if request.param == "s3":
        return f"s3://{request.getfixturevalue('s3_bucket')}"
    return f"gs://{request.getfixturevalue('gcs_bucket')}"


def layers(root: str, n: int = VOLUMES) -> list[str]:
    paths = [normalise_cloudpath(f"{root}/v{i}") for i in range(n)]
    for path in paths:
        support.make_layer(path)
    return paths


def check_exactly_once(paths: list[str], sessions: list) -> None:
    """Each volume's history is the sessions, in order, once each; the summary not doubled."""
    ids = [s.id for s in sessions]
    for path in paths:
        history = cirrus.history(path)
        assert [h.record.session for h in history] == ids, path
        assert sorted(Ledger.open(path).record_ids()) == sorted(h.id for h in history)
        for stored, s in zip(history, sessions, strict=True):
            assert stored.id == s.records[path]
            assert stored.record.status == "committed"
            assert sorted(stored.record.siblings) == sorted(p for p in paths if p != path)
        summary = Ledger.open(path).summary()
        expected_sources = ["gs://lab/aff"] + [f"gs://lab/input-{i}" for i in range(len(ids))]
        assert summary["sources"] == expected_sources
        digests = [entry["cirrus_process"] for entry in summary["processing"]]
        assert len(digests) == len(set(digests)) == min(2, len(ids))
        lines = Counter(summary["description"].split(" \n "))
        assert all(n == 1 for n in lines.values()), lines
        texts = sorted(line.split(";", 2)[2] for line in lines)
        assert texts == sorted(
            [f"motivation {i}" for i in range(len(ids))] + [f"result {i}" for i in range(len(ids))]
        )
        pointers = [p["id"] for p in summary["cirrus"]["records"]]
        assert pointers == [h.id for h in history]


def test_sessions_commit_exactly_once_under_30_percent_faults(root, monkeypatch):
    monkeypatch.setenv("CIRRUS_STORAGE_DEADLINE", "30")
    paths = layers(root)
    faults = Faults(error_rate=0.3, lost_response_rate=0.3, spike_rate=0.05, spike_seconds=0.05)
    sessions = []
    with wrap_backends(faults):
        for index in range(SESSIONS):
            sessions.append(support.run_session(paths, index))
            assert sessions[-1].state == "committed"
    assert faults.total_injected >= 10, faults.injected  # the faults really happened
    assert any("lost response" in name for name in faults.injected)
    check_exactly_once(paths, sessions)
    # and the data went where it was written
    from cloudvolume import CloudVolume

    for j, path in enumerate(paths):
        volume = CloudVolume(path, progress=False, fill_missing=True)
        for index in range(SESSIONS):
            x, y, z = support.origin(index)
            assert int(volume[x, y, z][0, 0, 0, 0]) == (index * 7 + j) % 251 + 1


def test_a_deadline_too_short_fails_clearly_and_recover_completes(root, monkeypatch):
    """30% failures and a 0.1 s deadline per call, while sessions commit: some give up. Each
    gives up with a cirrus error, quickly; afterwards `cirrus.recover` publishes every record
    that was staged or journaled, and no session appears twice anywhere."""
    deadline = 0.1
    monkeypatch.setenv("CIRRUS_STORAGE_DEADLINE", str(deadline))
    paths = layers(root)
    faults = Faults(error_rate=0.3, lost_response_rate=0.2, seed=3)
    outcomes: dict[int, str] = {}
    sessions, unpublished = [], []
    for index in range(8):
        s = cirrus.session(
            support.session_sources(index), f"motivation {index}", support.session_process(index)
        )
        for j, path in enumerate(paths):
            support.paint(s, path, index, value=j + 1)
        started = time.monotonic()
        try:
            with wrap_backends(faults):
                s.commit()
        except CirrusError as error:
            elapsed = time.monotonic() - started
            # a commit is a few dozen calls, each giving up after `deadline`
            assert elapsed < 60 * deadline + 10, elapsed
            assert str(error).startswith(tuple(paths)) or "not all are published" in str(error)
            outcomes[index] = f"{s.state}: {type(error).__name__}"
            if s.state == "unpublished":  # journaled: committed, not published everywhere
                unpublished.append(s)
            continue
        sessions.append(s)
        outcomes[index] = s.state
    states = Counter(outcomes.values())
    assert states["committed"] >= 1 and len(sessions) < len(outcomes), outcomes
    cirrus.recover(paths[0])  # without faults: publish everything staged, follow siblings
    assert cirrus.recover(paths[2]) == {}
    for path in paths:
        history = cirrus.history(path)
        per_session = Counter(h.record.session for h in history)
        assert all(n == 1 for n in per_session.values()), per_session  # nothing doubled
        # every committed session is on every volume; every staged record is published
        assert {s.id for s in sessions} <= set(per_session)
        # a session that failed after its journal is now complete everywhere
        assert {s.id for s in unpublished} <= set(per_session)
        assert sorted(Ledger.open(path).record_ids()) == sorted(h.id for h in history)
        summary = Ledger.open(path).summary()
        assert len(summary["sources"]) == len(set(summary["sources"]))
        lines = Counter(summary["description"].split(" \n "))
        assert all(n == 1 for n in lines.values()), lines


@pytest.mark.parametrize("root", ["file", "s3"], indirect=True)
def test_a_step_under_faults_records_every_task_once(root, monkeypatch):
    monkeypatch.setenv("CIRRUS_STORAGE_DEADLINE", "30")
    paths = layers(root, 2)
    faults = Faults(error_rate=0.3, lost_response_rate=0.3, seed=5)
    tasks = [f"task-{i}" for i in range(6)]
    with wrap_backends(faults):
        step = cirrus.step(
            ["gs://lab/aff"], "a step under faults", support.session_process(0), paths
        )
        for i, task in enumerate(tasks):
            with cirrus.join(step.token, task=task) as t:
                for path in paths:
                    support.paint(t, path, i, value=i + 1)
                t.note(f"note of {task}")
        # a re-run task is recognised, not counted twice
        with cirrus.join(step.token, task=tasks[0]) as t:
            support.paint(t, paths[0], 0, value=1)
        first = step.finish()
        assert step.finish() == first  # finishing again stores nothing new
    assert faults.total_injected >= 5
    for path in paths:
        (stored,) = cirrus.history(path)
        assert stored.id == first[path]
        assert stored.record.step == step.id
        assert stored.record.tasks["count"] == len(tasks)
        assert stored.record.tasks["committed"] == len(tasks)
        texts = [n["text"] for n in stored.record.notes]
        assert texts == ["a step under faults"] + [f"note of {task}" for task in tasks]
        section = Ledger.open(path).summary()["cirrus"]
        assert "open_steps" not in section
        assert len(section["records"]) == 1
