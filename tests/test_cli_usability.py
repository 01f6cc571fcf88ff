"""The `cirrus` command when something is off: a mistyped path, a dead endpoint, `--debug` after
the subcommand, an unwritable -o, unknown steps and malformed tokens, failed tasks, and records
whose stored text (long errors, several lines, escape codes) must not wreck the layout.

Real file:// layers written by real sessions; the console script where the process boundary
matters (tracebacks, log lines on stderr), click's CliRunner elsewhere.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import cirrus
from tests.cli_support import CHUNK, invoke, layers, make_layer, run, write

README = Path(__file__).parent.parent / "README.md"
ESC = "\x1b"


# -- 1. a path that is not a layer ----------------------------------------------------------------
NOT_A_LAYER = {
    "log": lambda p: ["log", p],
    "show": lambda p: ["show", p, "abc123"],
    "verify": lambda p: ["verify", p],
    "lineage": lambda p: ["lineage", p],
    "export": lambda p: ["export", p],
    "repair": lambda p: ["repair", p],
    "recover": lambda p: ["recover", p],
}


@pytest.mark.parametrize("command", list(NOT_A_LAYER))
@pytest.mark.parametrize("typo", ["segg", "seg/info"])  # the latter: a file, not a directory
def test_a_mistyped_path_is_a_usage_error(tmp_path: Path, command: str, typo: str) -> None:
    (real,) = layers(tmp_path, "seg")
    write([real], ["x"])
    typo = f"file://{tmp_path}/{typo}"
    target = Path(typo[len("file://") :])
    before = target.read_bytes() if target.is_file() else None
    result = invoke(*NOT_A_LAYER[command](typo), code=2)
    assert result.stdout == ""  # no "ok", no empty history, no PROV document
    (line,) = result.stderr.splitlines()
    assert line.startswith("cirrus: error: ") and typo in line
    assert "not a CloudVolume layer" in line and "check the path" in line
    assert not target.is_dir()  # nothing created there either, nor a file there changed
    assert (target.read_bytes() if target.is_file() else None) == before


def test_a_mistyped_path_through_the_console_script(tmp_path: Path) -> None:
    (real,) = layers(tmp_path, "seg")
    done = run("verify", real, f"file://{tmp_path}/nope", check=2)
    assert done.stdout == "" and "Traceback" not in done.stderr  # checked before any report
    assert len(done.stderr.splitlines()) == 1 and f"{tmp_path}/nope" in done.stderr


def test_layers_without_provenance_or_without_info_are_still_layers(tmp_path: Path) -> None:
    empty, only_provenance = layers(tmp_path, "empty", "only-provenance")
    assert "no provenance recorded here" in invoke("log", empty).stdout
    assert invoke("verify", empty).stdout.rstrip().endswith("ok")
    write([only_provenance], ["x"], "kept without info")
    (tmp_path / "only-provenance" / "info").unlink()
    assert "kept without info" in invoke("log", only_provenance).stdout
    invoke("verify", only_provenance)


def test_a_mistyped_s3_path_is_a_usage_error(s3_bucket: str) -> None:
    make_layer(f"s3://{s3_bucket}/seg")
    invoke("log", f"s3://{s3_bucket}/seg")
    result = invoke("log", f"s3://{s3_bucket}/sge", code=2)
    assert f"s3://{s3_bucket}/sge is not a CloudVolume layer" in result.stderr


# -- 2. a dead endpoint ---------------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_dead_s3_endpoint_warns_once_then_fails(tmp_path: Path) -> None:
    path = f"s3://http://127.0.0.1:{_closed_port()}/lab/seg"
    env = {
        "CIRRUS_STORAGE_DEADLINE": "2",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "HOME": str(tmp_path),  # no CloudFiles secrets of this machine
    }
    done = run("log", path, check=3, env=env)
    # cirrus's lines only: on Python 3.10 google.api_core adds a FutureWarning of its own
    ours = [line for line in done.stderr.splitlines() if line.startswith("cirrus:")]
    warning, error = ours  # not one line per attempt
    assert warning.startswith("cirrus: warning: retrying get for up to 2s")
    assert "CIRRUS_STORAGE_DEADLINE" in warning and "S3 connection failed" in warning
    assert error.startswith("cirrus: error: ") and "gave up after retrying for 2s" in error
    assert "CIRRUS_STORAGE_DEADLINE" in error
    debug = run("log", "--debug", path, check=3, env={**env, "CIRRUS_STORAGE_DEADLINE": "1"})
    assert "Traceback" in debug.stderr
    assert debug.stderr.count("cirrus: debug: retrying get (attempt ") >= 2  # each attempt


def test_retries_log_one_warning_per_call_then_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from cirrus.errors import TransientStorageError
    from cirrus.storage import Store, open_backend
    from cirrus.storage.faults import FaultyBackend
    from cirrus.storage.retry import RetryPolicy

    backend = FaultyBackend(open_backend(f"file://{tmp_path}/layer"), error_rate=1.0)
    store = Store(backend, RetryPolicy(deadline=0.5, initial=0.01, maximum=0.02))
    with caplog.at_level(logging.DEBUG, logger="cirrus.storage"):
        for _ in range(2):
            with pytest.raises(TransientStorageError):
                store.get("provenance")
    levels = [r.levelno for r in caplog.records if "retrying" in r.getMessage()]
    assert levels.count(logging.WARNING) == 2 and levels.count(logging.DEBUG) >= 4
    first = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "up to 0.5s (CIRRUS_STORAGE_DEADLINE)" in first and "injected failure" in first


def test_a_bad_storage_deadline_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (path,) = layers(tmp_path, "v")
    monkeypatch.setenv("CIRRUS_STORAGE_DEADLINE", "soon")
    result = invoke("log", path, code=2)
    assert "CIRRUS_STORAGE_DEADLINE must be a number of seconds" in result.stderr


def test_the_readme_documents_every_environment_variable_cirrus_reads() -> None:
    import re

    package = Path(cirrus.__file__).parent
    names = set()
    for source in package.rglob("*.py"):
        names.update(re.findall(r"\b(CIRRUS_[A-Z0-9_]+)\b", source.read_text()))
    assert {"CIRRUS_STORAGE_DEADLINE", "CIRRUS_DEBUG"} <= names
    readme = README.read_text()
    for name in names:
        assert f"`{name}" in readme, name
    help_text = run("--help").stdout
    assert "CIRRUS_STORAGE_DEADLINE" in help_text and "CIRRUS_DEBUG" in help_text


# -- 3. --debug after the subcommand --------------------------------------------------------------
def test_debug_works_after_the_subcommand_too() -> None:
    for argv in (["--debug", "log", "no-protocol/here"], ["log", "--debug", "no-protocol/here"]):
        done = run(*argv, check=2)  # --debug adds the traceback, not another exit status
        assert "Traceback" in done.stderr, argv
        assert "No such option" not in done.stderr
    done = run("step", "status", "--debug", "not a token", check=2)
    assert "Traceback" in done.stderr and "StepError" in done.stderr
    assert "--debug" in invoke("show", "--help").stdout


def test_the_rerun_hint_is_a_command_that_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cirrus.reading

    (path,) = layers(tmp_path, "v")

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("something unexpected")

    monkeypatch.setattr(cirrus.reading, "history", broken)
    result = invoke("log", path, code=3)
    assert "RuntimeError: something unexpected" in result.stderr
    assert "(rerun as `cirrus --debug log ...` for details)" in result.stderr


# -- 4. export -o into a directory that does not exist --------------------------------------------
def test_export_to_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    (path,) = layers(tmp_path, "v")
    write([path], ["x"])
    target = tmp_path / "no" / "such" / "x.json"
    result = invoke("export", path, "-o", str(target), code=2)
    (line,) = result.stderr.splitlines()
    assert f"cannot write the export to -o {target}" in line
    assert f"directory {target.parent} does not exist" in line
    assert "FileNotFoundError" not in line and not target.parent.exists()
    assert "is a directory" in invoke("export", path, "-o", str(tmp_path), code=2).stderr
    invoke("export", path, "-o", str(tmp_path / "x.json"))
    assert json.loads((tmp_path / "x.json").read_text())


def test_export_keeps_a_file_that_exists_unless_forced(tmp_path: Path) -> None:
    """A mistyped -o must not replace a layer's `info` (the layer would be unreadable)."""
    from cloudvolume import CloudVolume

    (path,) = layers(tmp_path, "v")
    write([path], ["x"])
    info = tmp_path / "v" / "info"
    before = info.read_bytes()
    line = invoke("export", path, "-o", str(info), code=2).stderr.strip()
    assert line == (
        f"cirrus: error: cannot write the export to -o {info}: it exists, and is kept; name a new "
        "file, or pass --force"
    )
    assert info.read_bytes() == before and CloudVolume(path).info
    kept = tmp_path / "notes.json"
    kept.write_text("mine")
    invoke("export", path, "-o", str(kept), code=2)
    assert kept.read_text() == "mine"
    kept.chmod(0o600)  # a private file stays private when replaced
    invoke("export", path, "-o", str(kept), "--force")
    assert json.loads(kept.read_text()) and kept.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_export_to_a_file_system_without_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some FUSE and SMB mounts refuse hard links: a new file is created exclusively instead."""
    import errno

    def refuse(*_args: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    (path,) = layers(tmp_path, "v")
    write([path], ["x"])
    monkeypatch.setattr(os, "link", refuse)
    target = tmp_path / "out.json"
    invoke("export", path, "-o", str(target))
    umask = os.umask(0)
    os.umask(umask)
    assert json.loads(target.read_text()) and target.stat().st_mode & 0o777 == 0o666 & ~umask
    target.write_text("mine")
    assert "it exists, and is kept" in invoke("export", path, "-o", str(target), code=2).stderr
    assert target.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_stored_text_cannot_reorder_or_drive_the_terminal(tmp_path: Path) -> None:
    """A direction override makes `evil\u202egnp.tsil` read as `evil` + `list.png`: it is
    shown as <U+202E>; a C1 control (\x9b: CSI to some terminals) is dropped."""
    (path,) = layers(tmp_path, "v")
    write([path], ["gs://lab/aff"], "why\u202etxt.gnp", "paint\x9b31m red", result="ok\u2066")
    for args in (("log", path), ("show", path, cirrus.history(path)[0].id[:12])):
        out = invoke(*args).output
        assert "why<U+202E>txt.gnp" in out and "paint31m red" in out and "ok<U+2066>" in out
        assert not any(c in out for c in "\u202e\u2066\x9b")


# -- 5, 6. steps ----------------------------------------------------------------------------------
def _step(tmp_path: Path, fail: bool) -> tuple[Any, str, str]:
    a, b = layers(tmp_path, "a", "b")
    step = cirrus.step(["x"], "many tasks", cirrus.Process("tasks", {"n": 3}), [a, b])
    data = np.ones((CHUNK,) * 3, np.uint8)
    for i, task in enumerate(("t0", "t1")):
        with cirrus.join(step.token, task=task) as t:
            t.volume(a, progress=False)[i * CHUNK : (i + 1) * CHUNK, 0:CHUNK, 0:CHUNK] = data
    if fail:
        with pytest.raises(ValueError), cirrus.join(step.token, task="t2") as t:
            t.volume(a, progress=False)[0:CHUNK, 0:CHUNK, 0:CHUNK] = data
            raise ValueError("\x1b[31mdisk full\x1b[0m\nat line 3 of paint.py")
    return step, a, b


def test_step_status_of_an_unknown_step_is_an_error_like_finish(tmp_path: Path) -> None:
    (a,) = layers(tmp_path, "a")
    token = json.dumps({"cirrus_step": 1, "id": "0" * 32, "volumes": [a]})
    status = invoke("step", "status", token, code=2).stderr
    finish = invoke("step", "finish", token, code=2).stderr
    assert f"step {'0' * 32}" in status and a in status and "not known" in status
    assert finish == status  # one message, naming the manifest both look for
    run("step", "status", token, check=2)


@pytest.mark.parametrize("missing", ["volumes", "id", "cirrus_step"])
def test_a_token_missing_a_key_says_which_and_what_a_token_is(missing: str) -> None:
    token = {"cirrus_step": 1, "id": "0" * 32, "volumes": ["file:///tmp/v"]}
    del token[missing]
    for command in ("status", "finish"):
        (line,) = invoke("step", command, json.dumps(token), code=2).stderr.splitlines()
        assert f"it has no '{missing}' key" in line
        assert "`step.token`" in line and '{"cirrus_step": 1, "id": ' in line
    assert "is not JSON" in invoke("step", "status", "not a token", code=2).stderr


def test_step_finish_reports_failed_tasks_and_exits_1(tmp_path: Path) -> None:
    step, a, b = _step(tmp_path, fail=True)
    status = invoke("step", "status", step.token).stdout
    assert f"{a}: 3 task(s) recorded, 1 failed, open" in status
    done = run("step", "finish", step.token, check=1)
    out = done.stdout
    assert out.startswith(f"step {step.id} finished: 1 record(s) failed")
    assert f"{a}: failed: TaskFailures: 1 of 3 failed, record " in out
    assert "tasks: 3 (2 committed, 1 failed)" in out
    assert "failed: t2: ValueError: disk full ..." in out and ESC not in out
    assert f"{b}: no task wrote here; nothing recorded" in out
    help_text = " ".join(invoke("step", "finish", "--help").stdout.split())
    assert "Exits 1 when a record is `failed`" in help_text
    invoke("step", "finish", step.token, code=1)  # finishing again says the same


def test_step_finish_of_committed_tasks_exits_0_with_counts(tmp_path: Path) -> None:
    step, a, _b = _step(tmp_path, fail=False)
    out = invoke("step", "finish", step.token).stdout
    assert out.startswith(f"step {step.id} finished\n")
    assert f"{a}: committed, record " in out and "tasks: 2 (2 committed, 0 failed)" in out


def test_step_status_and_finish_name_the_expected_tasks_still_missing(tmp_path: Path) -> None:
    (a,) = layers(tmp_path, "a")
    process = cirrus.Process("tasks", {"n": 3})
    step = cirrus.step(["x"], "expected", process, [a], tasks=["t0", "t1", "t9"])
    data = np.ones((CHUNK,) * 3, np.uint8)
    for i, task in enumerate(("t0", "t1")):
        with cirrus.join(step.token, task=task) as t:
            t.volume(a, progress=False)[i * CHUNK : (i + 1) * CHUNK, 0:CHUNK, 0:CHUNK] = data
    assert "expected 3 task(s), 1 missing: t9" in invoke("step", "status", step.token).stdout
    out = invoke("step", "finish", step.token, code=1).stdout
    assert "failed: Incomplete: 1 of 3 expected tasks filed nothing (t9)" in out


def test_step_finish_cuts_a_long_error_at_a_word_and_names_the_command_for_all_of_it(
    tmp_path: Path,
) -> None:
    (a,) = layers(tmp_path, "a")
    ids = [f"chunk-task-{i:03d}" for i in range(12)]
    step = cirrus.step(["x"], "expected", cirrus.Process("tasks", {"n": 12}), [a], tasks=ids)
    with cirrus.join(step.token, task=ids[0]) as t:
        t.volume(a, progress=False)[0:CHUNK, 0:CHUNK, 0:CHUNK] = np.ones((CHUNK,) * 3, np.uint8)
    out = invoke("step", "finish", step.token, code=1).stdout
    (record,) = cirrus.history(a)
    pointer = f" ... (full error: `cirrus show {a} {record.id[:12]}`), record {record.id}"
    line = next(line for line in out.splitlines() if line.startswith(f"  {a}: failed: "))
    assert line.endswith(pointer), line
    shown = line.removeprefix(f"  {a}: failed: Incomplete: ").removesuffix(pointer)
    full = invoke("show", a, record.id[:12]).stdout
    assert f"{shown} " in " ".join(full.split())  # cut between two words, not inside one


def test_step_status_says_finish_again_after_a_task_ran_since_the_finish(tmp_path: Path) -> None:
    """A queue re-delivers a task after the finish: its fragment now ends later than the record
    says. `step status` agrees with `verify` (not "finished") until the step is finished again."""
    (a,) = layers(tmp_path, "a")
    step = cirrus.step(["x"], "late", cirrus.Process("tasks", {"n": 1}), [a])
    data = np.ones((CHUNK,) * 3, np.uint8)

    def run_task() -> None:
        with cirrus.join(step.token, task="t0") as t:
            t.volume(a, progress=False)[0:CHUNK, 0:CHUNK, 0:CHUNK] = data

    run_task()
    invoke("step", "finish", step.token)
    assert (
        ": 1 task(s) recorded, 0 failed, finished\n" in invoke("step", "status", step.token).stdout
    )
    run_task()  # the re-run, after the finish
    out = invoke("step", "status", step.token).stdout
    assert "finished before tasks that ran since (a task here ended at" in out
    assert "finish it again" in out
    report = json.loads(invoke("step", "status", "--json", step.token).stdout)
    assert report["volumes"][a]["finished"] is False and report["volumes"][a]["late"]
    assert "finish it again" in invoke("verify", a, code=1).stdout
    invoke("step", "finish", step.token)
    out = invoke("step", "status", step.token).stdout
    assert ": 1 task(s) recorded, 0 failed, finished\n" in out
    assert (
        json.loads(invoke("step", "status", "--json", step.token).stdout)["volumes"][a]["late"]
        == ""
    )
    invoke("verify", a)


# -- 7. show's argument ---------------------------------------------------------------------------
def test_show_calls_its_argument_id_as_the_readme_does() -> None:
    help_text = invoke("show", "--help").stdout
    assert "show [OPTIONS] PATH ID\n" in help_text and "DIGEST" not in help_text
    assert "ID is a record id or a unique prefix" in help_text
    assert "`cirrus show PATH ID`" in README.read_text()


# -- 8. layout of stored text ---------------------------------------------------------------------
ALIGNMENT = "\x1b[31mAlignmentError\x1b[0m: Bounds(0,0,0, 65,64,64) is not aligned\n" + "\n".join(
    f"  chunk boundary {i}: \x1b[1m{i * 64}\x1b[0m" for i in range(24)
)


@pytest.fixture(scope="module")
def failed_record(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A failed session whose error is 25 lines with colour codes; notes of several lines."""
    (path,) = layers(tmp_path_factory.mktemp("layout"), "seg")
    motivation = "proofread the merge errors\n  - in the \x1b[1mnorth\x1b[0m half\n  - twice"
    session = cirrus.session(
        sources=["x"], motivation=motivation, process=cirrus.Process("paint", {})
    )
    with pytest.raises(ValueError), session as s:
        s.volume(path, progress=False)[0:CHUNK, 0:CHUNK, 0:CHUNK] = np.ones((CHUNK,) * 3, np.uint8)
        s.result("found:\n  12 mergers\n  3 splits")
        raise ValueError(ALIGNMENT)
    return path, session.records[path]


def test_log_shows_the_first_line_of_a_long_error(failed_record: tuple[str, str]) -> None:
    path, record_id = failed_record
    out = invoke("log", path, color=True).stdout  # escape codes kept, as a terminal gets them
    header = next(line for line in out.splitlines() if line.startswith("record "))
    assert header.endswith(
        "failed: ValueError: AlignmentError: Bounds(0,0,0, 65,64,64) is not aligned ... "
        "(full error: cirrus show)"
    )
    assert "chunk boundary" not in out and ESC not in out
    assert len(out.splitlines()) < 16
    full = invoke("show", path, record_id[:12], color=True).stdout
    assert "chunk boundary 23: 1472" in full and ESC not in full


def test_log_keeps_lines_of_notes_under_the_record(failed_record: tuple[str, str]) -> None:
    path, _ = failed_record
    lines = invoke("log", path).stdout.splitlines()
    start = lines.index("  motivation: proofread the merge errors")
    assert lines[start + 1 : start + 3] == [
        "                - in the north half",
        "                - twice",
    ]
    start = lines.index("  notes:      found:")
    assert lines[start + 1 : start + 3] == [" " * 16 + "12 mergers", " " * 16 + "3 splits"]
    assert all(line == "" or line.startswith(("record ", "  ", path)) for line in lines)


def test_the_terminal_table_and_python_views_strip_escape_codes(
    failed_record: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import cirrus.cli.volumes

    path, _ = failed_record
    monkeypatch.setattr(cirrus.cli.volumes, "is_terminal", lambda: True)
    monkeypatch.setenv("COLUMNS", "300")  # rich's width: no cell folded
    table = invoke("log", path, color=True).stdout
    assert "AlignmentError" in table and ESC not in table and "chunk boundary" not in table
    found = cirrus.history(path)
    assert ESC not in str(found) and ESC not in found._repr_html_()
    assert "chunk boundary 23" in found[0].record.error["message"]  # stored text unchanged


def test_a_lost_step_token_is_printed_again_from_a_volume(tmp_path: Path) -> None:
    a, b = layers(tmp_path, "a", "b")
    step = cirrus.step(["x"], "token lost", cirrus.Process("tasks", {"n": 1}), [a, b])
    cirrus.step(["x"], "another", cirrus.Process("tasks", {"n": 2}), [a])
    printed = invoke("step", "token", b, step.id[:10]).stdout.strip()
    assert json.loads(printed) == json.loads(step.token)
    with cirrus.join(printed, task="t0") as t:  # a worker can join with it
        t.volume(b, progress=False)[0:CHUNK, 0:CHUNK, 0:CHUNK] = np.ones((CHUNK,) * 3, np.uint8)
    assert "finished" in invoke("step", "finish", printed).stdout
    out = invoke("step", "token", a, "zz", code=2).stderr
    assert "'zz' is not one of the steps opened on" in out and step.id[:12] in out
