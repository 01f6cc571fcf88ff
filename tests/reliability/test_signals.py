"""Signals inside a session. SIGTERM (preemption, eviction, a time limit): the writes are
recorded. SIGKILL (the OOM killer, a lost machine): the volume still says who was writing.

Python's default SIGTERM action ends the process with no `__exit__`, leaving data without
provenance. These tests send real signals: to a child process (exit status, what storage holds
afterwards), and to this process from inside a storage call, to hit the commit at an exact point.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

import cirrus
from cirrus.errors import InvalidInput, Terminated
from cirrus.ledger import Ledger
from cirrus.stepfiles import StepFiles
from cirrus.storage.paths import normalise_cloudpath
from cirrus.writeset import WriteTracker
from tests.cli_support import invoke
from tests.session_support import chunk_of, hooked, make_layer, plain, process

BODY_SCRIPT = """
import sys, time
import numpy as np
import cirrus

paths = sys.argv[1:]
with cirrus.session(["gs://lab/aff"], "preempted", cirrus.Process("seg", {"n": 1})) as s:
    for i, path in enumerate(paths):
        s.volume(path, progress=False)[0:64, 0:64, 0:64] = np.full((64, 64, 64), i + 1, np.uint8)
    print("WRITTEN", flush=True)
    time.sleep(60)
print("NOT REACHED", flush=True)
"""


def layers_in(tmp_path, n: int) -> list[str]:
    paths = [normalise_cloudpath(f"file://{tmp_path}/v{i}") for i in range(n)]
    for path in paths:
        make_layer(path)
    return paths


def signal_after_writing(paths: list[str], signum: int) -> tuple[subprocess.Popen, str, str]:
    """Run BODY_SCRIPT over `paths`; once it has written, send it `signum`; wait for it."""
    child = subprocess.Popen(
        [sys.executable, "-c", BODY_SCRIPT, *paths],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "WRITTEN"
        child.send_signal(signum)
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    return child, out, err


def only_record(path: str) -> cirrus.Record:
    (stored,) = cirrus.history(path)
    return stored.record


def test_a_terminated_child_records_its_writes_as_failed_and_exits_143(tmp_path):
    paths = layers_in(tmp_path, 2)
    child, out, err = signal_after_writing(paths, signal.SIGTERM)
    assert child.returncode == 143, err
    assert "NOT REACHED" not in out
    for i, path in enumerate(paths):
        assert (plain(path)[0:64, 0:64, 0:64] == i + 1).all()
        record = only_record(path)
        assert record.status == "failed"
        assert record.error["type"] == "Terminated"
        assert "SIGTERM" in record.error["message"]
        assert record.writes["mips"]["0"]["chunks"] == 1  # what it wrote before the signal
        assert sorted(record.siblings) == sorted(set(paths) - {path})


def test_a_killed_child_leaves_each_volume_saying_who_was_writing(tmp_path):
    paths = layers_in(tmp_path, 2)
    child, _, _ = signal_after_writing(paths, signal.SIGKILL)  # no handler, no __exit__
    assert child.returncode == -signal.SIGKILL
    sessions = set()
    for i, path in enumerate(paths):
        assert (plain(path)[0:64, 0:64, 0:64] == i + 1).all()
        history = cirrus.history(path)
        assert list(history) == []  # nothing was committed...
        ((session, info),) = history.open_sessions.items()  # ...but the writer is named
        sessions.add(session)
        assert (info["description"], info["parameters"]) == ("seg", {"n": 1})
        assert (info["sources"], info["motivation"]) == (["gs://lab/aff"], "preempted")
        assert (info["pid"], info["host"]) == (child.pid, socket.gethostname())
        assert f"OPEN SESSION {session[:12]}: seg" in invoke("log", path).output
        remark = invoke("verify", path).output  # a remark, exit 0
        assert "and not committed" in remark
        assert f"cirrus recover {path} --abandon {session[:12]}" in remark
    assert len(sessions) == 1

    # later sessions commit as usual; the dead one stays listed until someone deals with it
    with cirrus.session(["src"], "after the crash", process()) as s:
        s.volume(paths[0])[64:128, 0:64, 0:64] = chunk_of(2)
    history = cirrus.history(paths[0])
    assert [stored.record.session for stored in history] == [s.id]
    assert set(history.open_sessions) == sessions

    # once known dead, the listing becomes an interrupted record made from it alone
    (dead,) = sessions
    done = invoke("recover", *paths, "--abandon", dead[:8]).output  # every volume it wrote
    assert [f"{path}: session {dead} recorded as interrupted" in done for path in paths] == [
        True,
        True,
    ]
    refused = invoke("recover", *paths, "--abandon", dead[:8], code=2).output
    assert all(
        f"cirrus: error: {path}: session {dead} is not listed as writing on {path}: it ended here "
        "already, failed" in refused
        for path in paths
    )
    for path in paths:
        history = cirrus.history(path)
        assert history.open_sessions == {}
        (stored,) = [h for h in history if h.record.session == dead]
        record = stored.record
        assert (record.status, record.error["type"]) == ("failed", "Interrupted")
        assert record.writes == WriteTracker().to_json()  # never tallied: unknown
        assert record.process["description"] == "seg" and record.sources == ("gs://lab/aff",)
        assert [n["text"] for n in record.notes] == ["preempted"]
        assert (record.user, record.host) == (info["user"], info["host"])
        assert "ok" in invoke("verify", path).output  # its process and environments check out
        invoke("recover", path, "--abandon", dead[:8], code=2)  # not listed any more
        assert cirrus.history(path) == history  # nothing doubled


def test_abandon_dead_closes_the_sessions_of_killed_processes_here_and_no_live_one(tmp_path):
    """A notebook kernel killed by the OOM killer: its listings are found by pid, not by id."""
    paths = layers_in(tmp_path, 2)
    with cirrus.session(["src"], "alive", process()) as alive:
        alive.volume(paths[0])[64:128, 0:64, 0:64] = chunk_of(3)
        child, _, _ = signal_after_writing(paths, signal.SIGKILL)
        (dead,) = set(cirrus.history(paths[1]).open_sessions)
        assert cirrus.abandon_dead(paths[1]).keys() == {dead}
        out = invoke("recover", paths[0], "--abandon-dead").output
        assert f"session {dead} recorded as interrupted" in out
        assert "1 still listed as writing" in out  # this process's session: alive
        assert set(cirrus.history(paths[0]).open_sessions) == {alive.id}
        assert invoke("recover", paths[0], "--abandon-dead").output.startswith(
            f"{paths[0]}: 0 dead session(s)"
        )
        invoke("recover", paths[0], "--abandon", dead, "--abandon-dead", code=2)
    for path in paths:
        history = cirrus.history(path)
        assert history.open_sessions == {}
        assert {h.record.session: h.record.error and h.record.error["type"] for h in history} == {
            dead: "Interrupted",
            **({alive.id: None} if path == paths[0] else {}),
        }


def test_a_session_still_running_here_cannot_be_abandoned(tmp_path):
    (path,) = layers_in(tmp_path, 1)
    with cirrus.session(["src"], "alive", process()) as s:
        s.volume(path)[0:64, 0:64, 0:64] = chunk_of(1)
        with pytest.raises(InvalidInput, match=f"still running here as pid {os.getpid()}"):
            cirrus.abandon(path, s.id)
        assert "still running here" in invoke("recover", path, "--abandon", s.id, code=2).output
    assert only_record(path).status == "committed"
    assert cirrus.history(path).open_sessions == {}


def signalling(times: int):
    """Send this process SIGTERM `times` times once the first record is staged."""
    sent: list[int] = []

    def signal_once(_cloudpath: str, key: str) -> None:
        if key.startswith("provenance.d/records/") and not sent:
            sent.append(times)
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGTERM)

    return hooked(after=signal_once)


def test_sigterm_while_committing_waits_for_the_commit_then_raises(tmp_path):
    paths = layers_in(tmp_path, 3)
    session = cirrus.session(["src"], "commit under SIGTERM", process())
    with signalling(1), pytest.raises(Terminated) as raised, session as s:
        for path in paths:
            s.volume(path)[0:64, 0:64, 0:64] = chunk_of(3)
    assert raised.value.code == 143
    assert s.state == "committed"
    for path in paths:  # the whole commit went through: every volume published
        record = only_record(path)
        assert record.status == "committed"
        assert s.records[path] == cirrus.history(path)[0].id
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_second_sigterm_stops_the_commit_and_a_retry_publishes_what_was_staged(tmp_path):
    # One volume commits in this (the main) thread, so each SIGTERM is handled as it is sent;
    # signals sent from other threads before the main thread runs its handler count once.
    (path,) = layers_in(tmp_path, 1)
    session = cirrus.session(["src"], "killed twice", process())
    with signalling(2), pytest.raises(Terminated), session as s:
        s.volume(path)[0:64, 0:64, 0:64] = chunk_of(4)
    assert s.state == "open"  # stopped between stage and publish: commit() could run again
    assert len(Ledger.open(path).record_ids()) == 1 and cirrus.history(path) == []
    staged = Ledger.open(path).record_ids()
    assert s.commit() == {path: staged[0]}  # the same record, now published
    assert only_record(path).status == "committed"  # the data is not left unexplained
    assert cirrus.recover(path) == {}
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_sigterm_in_the_body_of_this_process_records_a_failure(tmp_path):
    (path,) = layers_in(tmp_path, 1)
    with pytest.raises(Terminated), cirrus.session(["src"], "body", process()) as s:
        s.volume(path)[0:64, 0:64, 0:64] = chunk_of(5)
        os.kill(os.getpid(), signal.SIGTERM)
    record = only_record(path)
    assert (record.status, record.error["type"]) == ("failed", "Terminated")
    assert s.state == "failed"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_handler_the_program_set_is_left_alone(tmp_path):
    (path,) = layers_in(tmp_path, 1)
    seen = []

    def own(signum, _frame):
        seen.append(signum)

    previous = signal.signal(signal.SIGTERM, own)
    try:
        with cirrus.session(["src"], "own handler", process()) as s:
            assert signal.getsignal(signal.SIGTERM) is own
            s.volume(path)[0:64, 0:64, 0:64] = chunk_of(6)
            os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert only_record(path).status == "committed"


def test_nested_sessions_and_other_threads_leave_the_default_in_place_afterwards(tmp_path):
    outer_path, inner_path, thread_path = layers_in(tmp_path, 3)
    handlers = []

    def in_a_thread():
        with cirrus.session(["src"], "thread", process()) as s:
            handlers.append(signal.getsignal(signal.SIGTERM))
            s.volume(thread_path)[0:64, 0:64, 0:64] = chunk_of(7)

    with cirrus.session(["src"], "outer", process()) as outer:
        with cirrus.session(["src"], "inner", process()) as inner:
            inner.volume(inner_path)[0:64, 0:64, 0:64] = chunk_of(8)
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # the outer is still open
        outer.volume(outer_path)[0:64, 0:64, 0:64] = chunk_of(9)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert handlers == [signal.SIG_DFL]  # only the main thread can take a signal over
    for path in (outer_path, inner_path, thread_path):
        assert only_record(path).status == "committed"


def test_a_terminated_task_files_a_failed_fragment_and_a_rerun_replaces_it(tmp_path):
    (path,) = layers_in(tmp_path, 1)
    step = cirrus.step(["src"], "tasks under SIGTERM", process(), [path])
    with pytest.raises(Terminated), cirrus.join(step.token, task="t0") as task:
        task.volume(path)[0:64, 0:64, 0:64] = chunk_of(1)
        os.kill(os.getpid(), signal.SIGTERM)
    (fragment,) = StepFiles.open(path).fragments(step.id)
    assert (fragment["status"], fragment["error"]["type"]) == ("failed", "Terminated")
    with cirrus.join(step.token, task="t0") as task:  # the queue runs the task again
        task.volume(path)[0:64, 0:64, 0:64] = chunk_of(1)
    (fragment,) = StepFiles.open(path).fragments(step.id)
    assert fragment["status"] == "committed"
    step.finish()
    assert only_record(path).status == "committed"


def test_a_handler_installed_inside_the_body_outlives_the_session(tmp_path):
    (path,) = layers_in(tmp_path, 1)

    def own(_signum, _frame):
        pass

    try:
        with cirrus.session(["src"], "handler set inside", process()) as s:
            s.volume(path)[0:64, 0:64, 0:64] = chunk_of(2)
            signal.signal(signal.SIGTERM, own)
        assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_a_child_forked_inside_a_session_gets_the_default_action(tmp_path):
    (path,) = layers_in(tmp_path, 1)
    with cirrus.session(["src"], "fork", process()) as s:
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        pid = os.fork()
        if pid == 0:  # the child has no session of its own: SIGTERM must end it as usual
            os._exit(0 if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL else 1)
        _, status = os.waitpid(pid, 0)
        s.volume(path)[0:64, 0:64, 0:64] = chunk_of(3)
    assert os.waitstatus_to_exitcode(status) == 0
    assert only_record(path).status == "committed"
