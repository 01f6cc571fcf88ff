"""Every bad input in docs/bad-input.md: the error class, a message that names the problem, and
every stored provenance object byte-for-byte untouched.

Each row of BAD_INPUTS is one row of the docs table (the test checks the doc lists them all).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cirrus
from cirrus.errors import (
    CorruptProvenance,
    IntegrityError,
    InvalidInput,
    ParameterError,
    PermanentStorageError,
    StepError,
)
from cirrus.ledger import Ledger
from cirrus.stepfiles import StepFiles
from cirrus.storage.paths import normalise_cloudpath
from tests.reliability import support
from tests.session_support import put_raw

DOC = Path(__file__).resolve().parents[2] / "docs" / "bad-input.md"
GOOD = support.session_process(0)


def deep(levels: int) -> dict:
    root = node = {}
    for _ in range(levels):
        node["a"] = {}
        node = node["a"]
    return root


def cyclic() -> dict:
    value: dict = {}
    value["self"] = value
    return value


def session(sources=("gs://lab/aff",), motivation="why", process=GOOD):
    return cirrus.session(
        list(sources) if isinstance(sources, tuple) else sources, motivation, process
    )


def write(path: str, **kwargs) -> None:
    with session(**kwargs) as s:
        support.paint(s, path, 5, 9)


def write_with_note(path: str, note) -> None:
    with session() as s:
        s.note(note)
        support.paint(s, path, 5, 9)


def open_volume(path: str, target: str) -> None:
    with session() as s:
        s.volume(target.replace("LAYER", path))[0:16, 0:16, 0:16] = np.ones((16,) * 3, np.uint8)


def open_volume_with(path: str, **cloudvolume_kwargs: object) -> None:
    """An s3:// layer with the given CloudVolume keywords: refused before any request."""
    with session() as s:
        s.volume("s3://cirrus-bad-input/layer", **cloudvolume_kwargs)


def break_summary(path: str, data: bytes | None) -> None:
    """A foreign tool leaves a bad `provenance` on a second layer; a session opens it."""
    other = path[: -len("/v")] + "/other"
    if data is None:  # truncated: the first half of a good summary
        good = Ledger.open(path).store.get("provenance").data
        data = good[: len(good) // 2]
    put_raw(other, "provenance", data)
    with session() as s:
        s.volume(other)


def step_over_broken(path: str) -> None:
    """A step over two volumes, the second with a bad `provenance`: the first gets nothing."""
    other = path[: -len("/v")] + "/other"
    put_raw(other, "provenance", b"{not json")
    cirrus.step(["gs://lab/aff"], "why", GOOD, volumes=[path, other])


def show(path: str, digest: str) -> None:
    from cirrus.cli import cli

    result = CliRunner().invoke(cli, ["show", path, digest])
    assert result.exit_code == 2, result.output
    raise InvalidInput(result.output)  # the one-line error the user sees


TOKEN = {"cirrus_step": 1, "id": "a" * 32, "volumes": ["LAYER"]}


def open_step_on(path: str) -> None:
    """A step on `v` and `other`, opened before the snapshot for the rows in OPENS_A_STEP."""
    other = path[: -len("/v")] + "/other"
    cirrus.step(["gs://lab/aff"], "why", GOOD, volumes=[path, other])


def edited_token(path: str, add: tuple[str, ...] = (), drop_other: bool = False) -> dict:
    """The token of the step `open_step_on` opened, with volumes added or `other` left out."""
    files = StepFiles.open(path)
    (step_id,) = files.step_ids()
    volumes = files.manifest(step_id)["volumes"]
    volumes = [v for v in volumes if not (drop_other and v.endswith("/other"))] + list(add)
    return {**TOKEN, "id": step_id, "volumes": volumes}


# id: (what is tried, expected class, message fragment)
BAD_INPUTS = {
    "sources-a-string": (
        lambda p: write(p, sources="gs://lab/aff"),
        InvalidInput,
        "sources must be a list of strings",
    ),
    "sources-none": (
        lambda p: write(p, sources=None),
        InvalidInput,
        "sources must be a list of strings",
    ),
    "sources-empty": (lambda p: write(p, sources=[]), InvalidInput, "sources is empty"),
    "sources-not-strings": (
        lambda p: write(p, sources=["a", 3]),
        InvalidInput,
        "sources[1] must be a non-empty string",
    ),
    "sources-empty-string": (
        lambda p: write(p, sources=[" "]),
        InvalidInput,
        "sources[0] must be a non-empty string",
    ),
    "sources-bad-unicode": (
        lambda p: write(p, sources=["\udcff.tif"]),
        InvalidInput,
        "sources[0] is not valid Unicode",
    ),
    "motivation-none": (
        lambda p: write(p, motivation=None),
        InvalidInput,
        "motivation must be a non-empty string",
    ),
    "motivation-empty": (
        lambda p: write(p, motivation=""),
        InvalidInput,
        "motivation must be a non-empty string",
    ),
    "motivation-not-string": (
        lambda p: write(p, motivation=42),
        InvalidInput,
        "motivation must be a non-empty string",
    ),
    "motivation-bad-unicode": (
        lambda p: write(p, motivation="x\udcff"),
        InvalidInput,
        "motivation is not valid Unicode",
    ),
    "process-a-string": (
        lambda p: write(p, process="watershed"),
        InvalidInput,
        "process must be a cirrus.Process",
    ),
    "process-a-dict": (
        lambda p: write(p, process={"threshold": 1}),
        InvalidInput,
        "process must be a cirrus.Process",
    ),
    "process-empty-description": (
        lambda p: cirrus.Process(""),
        InvalidInput,
        "Process description must be a non-empty string",
    ),
    "process-env-not-an-env": (
        lambda p: cirrus.Process("p", {}, "."),
        InvalidInput,
        "code environment '.' is not one",
    ),
    "process-env-a-class": (
        lambda p: cirrus.Process("p", {}, cirrus.PythonGithubEnv),
        InvalidInput,
        "is not one; pass one made by calling cirrus.PythonGithubEnv(path)",
    ),
    "abort-reason-not-text": (
        lambda p: session().abort(123),
        InvalidInput,
        "abort(reason): give the reason as non-empty text, got 123",
    ),
    "parameters-a-list": (
        lambda p: cirrus.Process("p", [1, 2]),
        ParameterError,
        "process parameter parameters: a list is not supported",
    ),
    "parameters-set": (
        lambda p: cirrus.Process("p", {"ids": {1, 2}}),
        ParameterError,
        "parameters.ids: value of type set is not JSON; use a sorted list",
    ),
    "parameters-nan": (
        lambda p: cirrus.Process("p", {"t": math.nan}),
        ParameterError,
        "parameters.t: nan is not finite",
    ),
    "parameters-infinity": (
        lambda p: cirrus.Process("p", {"t": [math.inf]}),
        ParameterError,
        "parameters.t[0]: inf is not finite",
    ),
    "parameters-10000-levels": (
        lambda p: cirrus.Process("p", deep(10_000)),
        ParameterError,
        "nested more than 100 levels deep",
    ),
    "parameters-cycle": (
        lambda p: cirrus.Process("p", cyclic()),
        ParameterError,
        "nested more than 100 levels deep",
    ),
    "parameters-int-key": (
        lambda p: cirrus.Process("p", {"m": {1: "a"}}),
        ParameterError,
        "parameters.m[1]: key of type int",
    ),
    "parameters-bytes": (
        lambda p: cirrus.Process("p", {"b": b"\x00"}),
        ParameterError,
        "parameters.b: value of type bytes is not JSON",
    ),
    "parameters-numpy-array": (
        lambda p: cirrus.Process("p", {"a": np.zeros(2)}),
        ParameterError,
        "value of type ndarray is not JSON; use .tolist()",
    ),
    "parameters-bad-unicode": (
        lambda p: cirrus.Process("p", {"f": "\udcff"}),
        ParameterError,
        "parameters.f: string is not valid Unicode",
    ),
    "parameters-secret-key": (
        lambda p: cirrus.Process("p", {"aws_secret": "x"}),
        ParameterError,
        "parameters.aws_secret: looks like a secret",
    ),
    "note-empty": (
        lambda p: write_with_note(p, ""),
        InvalidInput,
        "a generic note must be a non-empty string",
    ),
    "note-not-string": (
        lambda p: write_with_note(p, {"a": 1}),
        InvalidInput,
        "a generic note must be a non-empty string",
    ),
    "note-bad-unicode": (
        lambda p: write_with_note(p, "\udcff"),
        InvalidInput,
        "a generic note is not valid Unicode",
    ),
    "volume-no-protocol": (
        lambda p: open_volume(p, "/data/layer"),
        InvalidInput,
        "has no protocol",
    ),
    "volume-secrets-not-json": (
        lambda p: open_volume_with(p, secrets="not json"),
        InvalidInput,
        "secrets must be a dict of credentials or its JSON text",
    ),
    "volume-unsupported-protocol": (
        lambda p: open_volume(p, "https://example.org/x"),
        InvalidInput,
        "protocol https:// is not supported",
    ),
    "volume-graphene": (
        lambda p: open_volume(p, "graphene://https://example.org/x"),
        InvalidInput,
        "is a graphene layer",
    ),
    "volume-no-info": (
        lambda p: open_volume(p, "LAYER-missing"),
        InvalidInput,
        "v-missing is not a CloudVolume layer: it has neither an `info` nor a `provenance`",
    ),
    "step-volume-no-info": (
        lambda p: cirrus.step(["gs://lab/aff"], "why", GOOD, volumes=[p, f"{p}-typo"]),
        InvalidInput,
        "no info file, so it is not a CloudVolume layer",
    ),
    "provenance-step-second-volume": (
        lambda p: step_over_broken(p),
        CorruptProvenance,
        "provenance is not valid JSON",
    ),
    "provenance-not-json": (
        lambda p: break_summary(p, b"{not json"),
        CorruptProvenance,
        "provenance is not valid JSON",
    ),
    "provenance-truncated": (
        lambda p: break_summary(p, None),
        CorruptProvenance,
        "provenance is not valid JSON",
    ),
    "provenance-wrong-shape": (
        lambda p: break_summary(p, b'{"sources": "gs://x"}'),
        CorruptProvenance,
        "has 'sources' of type str, expected list",
    ),
    "provenance-too-deep": (
        lambda p: break_summary(p, b"[" * 100_000 + b"]" * 100_000),
        CorruptProvenance,
        "nested too deeply",
    ),
    "record-id-traversal": (
        lambda p: Ledger.open(p).read_record("../../x"),
        InvalidInput,
        "record id must be 64 lowercase hex characters",
    ),
    "env-id-traversal": (
        lambda p: Ledger.open(p).read_env("../envs/x"),
        InvalidInput,
        "environment id must be 64 lowercase hex",
    ),
    "step-id-traversal": (
        lambda p: StepFiles.open(p).fragments("../records"),
        InvalidInput,
        "step id must be 32 lowercase hex",
    ),
    "token-id-traversal": (
        lambda p: cirrus.join({**TOKEN, "id": "../x", "volumes": [p]}),
        StepError,
        "not a cirrus step token (step id must be",
    ),
    "token-volume-no-protocol": (
        lambda p: cirrus.join({**TOKEN, "volumes": ["../../etc"]}),
        StepError,
        "'../../etc' has no protocol",
    ),
    "token-volumes-a-string": (
        lambda p: cirrus.join({**TOKEN, "volumes": p}),
        StepError,
        "volumes must be a non-empty list",
    ),
    "token-not-json": (lambda p: cirrus.join("../x"), StepError, "not a cirrus step token"),
    "token-step-never-opened": (
        lambda p: cirrus.join({**TOKEN, "volumes": [p]}, task="t1").volume(p),
        StepError,
        "was never opened on",
    ),
    "finish-token-volume-added": (
        lambda p: cirrus.finish(edited_token(p, add=(f"{p}-typo",))),
        StepError,
        "v-typo, which the step was not opened on",
    ),
    "status-token-volume-left-out": (
        lambda p: cirrus.step_status(edited_token(p, drop_other=True)),
        StepError,
        "/other. Pass the token unchanged",
    ),
    "join-token-volume-left-out": (
        lambda p: cirrus.join(edited_token(p, drop_other=True), task="t1").volume(p),
        StepError,
        "does not list the volumes the step was opened on",
    ),
    "task-id-slash": (
        lambda p: cirrus.join({**TOKEN, "volumes": [p]}, task="a/b"),
        InvalidInput,
        "task id 'a/b' is not usable",
    ),
    "task-id-dotdot": (
        lambda p: cirrus.join({**TOKEN, "volumes": [p]}, task=".."),
        InvalidInput,
        "task id '..' is not usable",
    ),
    "task-id-traversal": (
        lambda p: cirrus.join({**TOKEN, "volumes": [p]}, task="x/../../y"),
        InvalidInput,
        "task id 'x/../../y' is not usable",
    ),
    "cli-show-traversal": (
        lambda p: show(p, "../.."),
        InvalidInput,
        "cirrus: error: '../..' is not a record id",
    ),
    "abandon-not-listed": (
        lambda p: cirrus.abandon(p, "0123abcd"),
        InvalidInput,
        "'0123abcd' is not one of the sessions",
    ),
    "abandon-empty-id": (
        lambda p: cirrus.abandon(p, ""),
        InvalidInput,
        "'' is not one of the sessions",
    ),
}

# rows whose step is opened (on `v` and `other`) before the snapshot: only their refusal counts
OPENS_A_STEP = {
    "finish-token-volume-added",
    "status-token-volume-left-out",
    "join-token-volume-left-out",
}


@pytest.fixture
def layer(tmp_path) -> str:
    """A layer with one committed session, plus an empty second layer beside it."""
    path = normalise_cloudpath(f"file://{tmp_path}/v")
    support.make_layer(path)
    support.make_layer(f"file://{tmp_path}/other")
    support.run_session([path], 0)
    return path


def everything(tmp_path) -> dict:
    """Every provenance object under tmp_path (both layers, and any other)."""
    layers = sorted(
        normalise_cloudpath(f"file://{info.parent}") for info in Path(tmp_path).rglob("info")
    )
    return support.snapshot(layers)


def name_of(kind) -> str:
    return kind if isinstance(kind, str) else f"{kind.__module__}.{kind.__name__}"


@pytest.mark.parametrize("row", list(BAD_INPUTS))
def test_bad_input_is_refused_clearly_and_changes_nothing(layer, tmp_path, row):
    action, kind, fragment = BAD_INPUTS[row]
    if row in OPENS_A_STEP:
        open_step_on(layer)
    before = everything(tmp_path)
    with pytest.raises(Exception) as raised:
        action(layer)
    error = raised.value
    assert name_of(type(error)) == name_of(kind), repr(error)
    assert fragment in str(error), str(error)
    if row == "cli-show-traversal":
        assert len(str(error).strip().splitlines()) == 1  # one line, no traceback
    after = everything(tmp_path)
    if row.startswith("provenance-"):  # the broken summary was put there by the test itself
        other = layer[: -len("/v")] + "/other"
        del after[other]["provenance"]
        before[other].pop("provenance", None)
    assert after == before


def test_the_doc_lists_every_row():
    text = DOC.read_text()
    for row, (_, kind, _fragment) in BAD_INPUTS.items():
        assert f"`{row}`" in text, row
        assert name_of(kind).rsplit(".", 1)[-1] in text, row


# -- stored data that does not match its digest ---------------------------------------------------


def tamper(path: str) -> str:
    ledger = Ledger.open(path)
    (record_id,) = ledger.record_ids()
    key = f"provenance.d/records/{record_id}.json"
    data = json.loads(ledger.store.get(key).data)
    data["sources"] = ["gs://lab/forged"]
    put_raw(path, key, json.dumps(data).encode())
    return record_id


def test_a_tampered_record_raises_integrity_error_and_verify_reports_it(layer, tmp_path):
    from cirrus.verify import verify

    record_id = tamper(layer)
    before = everything(tmp_path)
    history = cirrus.history(layer)  # every intact record, the damaged one listed apart
    assert [damaged.id for damaged in history.damaged] == [record_id]
    with pytest.raises(IntegrityError, match="was changed after it was written") as raised:
        history.raise_if_damaged()
    assert "restore it from a backup or an earlier object version" in str(raised.value)
    assert f"`cirrus verify {layer}` lists every damaged object" in str(raised.value)
    with pytest.raises(IntegrityError, match=record_id):
        Ledger.open(layer).read_record(record_id)
    report = verify(layer)
    assert not report.ok and any(record_id in problem for problem in report.problems)
    assert everything(tmp_path) == before  # reading changed nothing
    # a later commit neither repairs nor hides it: the tampered object stays as evidence
    support.run_session([layer], 1)
    key = f"provenance.d/records/{record_id}.json"
    assert everything(tmp_path)[layer][key] == before[layer][key]
    assert not verify(layer).ok


def test_a_missing_record_raises_integrity_error(layer, tmp_path):
    (record_id,) = Ledger.open(layer).record_ids()
    os.remove(f"{layer.removeprefix('file://')}/provenance.d/records/{record_id}.json")
    before = everything(tmp_path)
    with pytest.raises(IntegrityError, match="is missing"):
        cirrus.history(layer).raise_if_damaged()
    assert everything(tmp_path) == before


# -- what is accepted: unicode and very long notes are stored exactly ------------------------------


def test_unicode_and_a_1_mb_note_are_stored_exactly(layer):
    texts = ["数据; from 🧠\n line two \u200b", "é" * 500_000]  # the second is 1 MB of UTF-8
    with session(motivation="ünïcödé 動機") as s:
        for text in texts:
            s.note(text)
        support.paint(s, layer, 3, 3)
    last = cirrus.history(layer)[-1]
    assert [n["text"] for n in last.record.notes] == ["ünïcödé 動機", *texts]
    assert len(texts[1].encode()) == 1_000_000


# -- storage that refuses: missing bucket, no permission, read-only ----------------------------


@pytest.mark.parametrize("protocol", ["s3", "gs"])
def test_a_missing_bucket_is_a_permanent_error_at_once(protocol, request):
    request.getfixturevalue("moto_endpoint" if protocol == "s3" else "gcs_endpoint")
    path = f"{protocol}://cirrus-no-such-bucket-{os.getpid()}/layer"
    if protocol == "gs":  # fake-gcs-server answers a GET there as a missing object, not a 404
        with pytest.raises(InvalidInput, match="cirrus-no-such-bucket.* not a CloudVolume layer"):
            cirrus.add_note(path, "a note")
        return
    with pytest.raises(PermanentStorageError) as raised:
        cirrus.add_note(path, "a note")
    assert "cirrus-no-such-bucket" in str(raised.value) and "does not exist" in str(raised.value)


def test_bad_credentials_on_s3_are_a_permanent_403(s3_bucket, moto_endpoint, monkeypatch):
    from tests.servers.moto_server import authentication

    path = f"s3://{s3_bucket}/layer"
    support.make_layer(path)
    support.run_session([path], 0)
    before = support.snapshot([path])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with authentication(moto_endpoint), pytest.raises(PermanentStorageError) as raised:
        cirrus.add_note(path, "no permission")
    assert "S3 denied access" in str(raised.value)
    assert "credentials" in str(raised.value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert support.snapshot([path]) == before


READ_ONLY_CHILD = """
import sys
import cirrus
from tests.reliability import support
path = sys.argv[1]
for attempt in ("write", "note"):
    try:
        if attempt == "write":
            with cirrus.session(["a"], "m", support.session_process(0)) as s:
                support.paint(s, path, 0, 1)
        else:
            cirrus.add_note(path, "x")
    except Exception as e:
        print("RAISED", attempt, f"{type(e).__module__}.{type(e).__name__}", str(e).splitlines()[0])
"""


def test_a_read_only_volume(tmp_path):
    """The layer's files are read-only. As root, the child drops CAP_DAC_OVERRIDE so the
    permission bits apply to it."""
    path = normalise_cloudpath(f"file://{tmp_path}/ro")
    support.make_layer(path)
    support.run_session([path], 0)
    before = support.snapshot([path])
    folder = tmp_path / "ro"
    modes = []
    for item in [folder, *folder.rglob("*")]:
        modes.append((item, item.stat().st_mode))
        item.chmod(0o555 if item.is_dir() else 0o444)
    command = [sys.executable, "-c", READ_ONLY_CHILD, path]
    if os.geteuid() == 0:
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]
    try:
        done = subprocess.run(
            command, cwd=DOC.parents[1], capture_output=True, text=True, timeout=60
        )
    finally:
        for item, mode in reversed(modes):
            item.chmod(mode)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RAISED")]
    assert len(lines) == 2, done.stdout + done.stderr
    # refused before any data is written: listing the session as writing there is the first
    # write, and it says where and why (so no failed record is attempted either)
    assert lines[0].startswith("RAISED write cirrus.errors.PermanentStorageError"), lines[0]
    assert "ro/provenance" in lines[0] and "Permission denied" in lines[0]
    assert "could not record the failure" not in done.stderr
    assert lines[1].startswith("RAISED note cirrus.errors.PermanentStorageError"), lines[1]
    assert "Permission denied" in lines[1]
    assert support.snapshot([path]) == before
