"""The `cirrus` command end to end, on file:// volumes written by real sessions.

Each command runs at least once through the installed console script (a subprocess); the
finer cases use click's CliRunner in process, which runs the same code faster.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_support import StaticEnv, invoke, layers, run, write


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A -> B (+ D, same session) -> C; A written twice; B's session has a result note."""
    tmp = tmp_path_factory.mktemp("chain")
    a, b, c, d = layers(tmp, "a", "b", "c", "d")
    write([a], ["manual tracing"], "first tracing", "trace", chunks=2)
    write([a], ["manual tracing"], "second pass", "retrace")
    ids = write([b, d], [a], "segment it", "watershed", result="42 segments", envs=(StaticEnv(),))
    write([c], [b], "agglomerate", "agglomerate")
    return {"a": a, "b": b, "c": c, "d": d, "b_record": ids[b]}


def test_help_is_fast_and_documents_exit_codes() -> None:
    done = run("--help")
    assert "Exit status" in done.stdout and "3  storage or provenance error" in done.stdout
    for command in ("log", "show", "verify", "lineage", "recover", "repair", "export", "demo"):
        assert command in done.stdout
    assert "Exit status" in run("verify", "--help").stdout
    probe = (
        "import sys, cirrus.cli; heavy = [m for m in ('cloudvolume', 'rich', 'prov') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_python_m_cirrus_is_the_command_with_its_exit_codes(tmp_path) -> None:
    """Where the console script is not on PATH (a bare venv, a notebook's `!python -m`)."""
    module = [sys.executable, "-m", "cirrus"]
    done = subprocess.run([*module, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Usage: cirrus" in done.stdout
    done = subprocess.run(
        [*module, "log", f"file://{tmp_path}/nothing"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "not a CloudVolume layer" in done.stderr, done.stderr


def test_log_newest_first_with_everything(chain: dict[str, str]) -> None:
    out = run("log", chain["a"]).stdout
    assert out.index("retrace") < out.index("trace [")  # newest first
    assert "second pass" in out and "first tracing" in out
    assert "manual tracing" in out
    assert "mip 0: [0,0,0]-[128,64,64], 2 chunks, 512.0 KiB" in out
    assert "committed" in out and "@" in out  # user@host
    b = invoke("log", chain["b"]).output
    assert "watershed" in b and "42 segments" in b and chain["a"] in b


def test_log_json_and_limit(chain: dict[str, str]) -> None:
    data = json.loads(invoke("log", chain["a"], "--json").output)
    assert [r["process"]["description"] for r in data["records"]] == ["retrace", "trace"]
    limited = json.loads(invoke("log", chain["a"], "--json", "--limit", "1").output)
    assert [r["process"]["description"] for r in limited["records"]] == ["retrace"]
    text = invoke("log", chain["a"], "-n", "1").output
    assert "retrace" in text and "first tracing" not in text
    assert "2 record(s), newest 1 shown" in text
    assert (data["total"], limited["total"]) == (2, 2)


def test_log_limit_reads_only_the_newest_records(chain: dict[str, str]) -> None:
    import numpy as np

    import cirrus
    from cirrus.storage import wrap_backends
    from tests.session_support import KeyCounter, KeyCountingBackend

    keys = KeyCounter()
    with wrap_backends(lambda backend: KeyCountingBackend(backend, keys)):
        newest = cirrus.history(chain["a"], newest=1)
        assert keys.count(method="get", kind="records") == 1
        assert [r.record.process["description"] for r in newest] == ["retrace"]
        assert newest.total == 2 and len(cirrus.history(chain["a"], newest=0)) == 0
        assert "2 record(s), newest 1 shown" in newest._repr_html_()
        assert "2 record(s), newest 1 shown" in str(newest)
    assert cirrus.history(chain["a"], newest=5) == cirrus.history(chain["a"])
    assert [
        r.record.process["description"] for r in cirrus.history(chain["a"], newest=np.int64(1))
    ] == ["retrace"]
    for wrong in (-1, True, 1.5, "2"):
        with pytest.raises(cirrus.errors.InvalidInput, match="whole number"):
            cirrus.history(chain["a"], newest=wrong)


def test_show_by_prefix_with_environment(chain: dict[str, str]) -> None:
    record = chain["b_record"]
    out = run("show", chain["b"], record[:8]).stdout
    assert record in out and "watershed" in out and '"threshold": 0.3' in out
    assert "(static)" in out and "name: static" in out
    assert "42 segments" in out and chain["d"] in out  # sibling volume
    data = json.loads(invoke("show", chain["b"], record[:10], "--json").output)
    assert data["record"]["id"] == record
    assert list(data["envs"].values()) == [{"kind": "static", "name": "static"}]


def test_show_unknown_or_ambiguous_prefix_is_a_usage_error(chain: dict[str, str]) -> None:
    done = run("show", chain["a"], "ffffffffffff", check=2)
    assert done.stderr.startswith("cirrus: error:") and len(done.stderr.splitlines()) == 1
    assert "Traceback" not in done.stderr
    invoke("show", chain["a"], "", code=2)
    invoke("show", chain["a"], "xyz", code=2)


def test_show_git_diff_plain_when_not_a_terminal(tmp_path: Path) -> None:
    import cirrus

    repo = tmp_path / "code"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    (repo / "step.py").write_text("threshold = 0.3\n")
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    (repo / "step.py").write_text("threshold = 0.5\n")
    (path,) = layers(tmp_path, "v")
    ids = write([path], ["x"], envs=(cirrus.PythonGithubEnv(repo),))
    out = run("show", path, ids[path][:12]).stdout
    assert "-threshold = 0.3" in out and "+threshold = 0.5" in out
    assert "(python-git)" in out and "dirty: True" in out
    assert "\x1b[" not in out  # no colour codes when piped


def test_verify_clean_volumes(chain: dict[str, str]) -> None:
    done = run("verify", chain["a"], chain["b"], chain["c"], chain["d"])
    assert done.stdout.count("  ok") == 4
    report = json.loads(invoke("verify", chain["b"], "--json").output)
    assert report[0]["ok"] and report[0]["records"] == 1 and report[0]["envs"] == 1


def _volume_dir(path: str) -> Path:
    return Path(path[len("file://") :])


def test_verify_detects_a_tampered_record(tmp_path: Path) -> None:
    (path,) = layers(tmp_path, "v")
    record_id = write([path], ["x"])[path]
    record = _volume_dir(path) / "provenance.d" / "records" / f"{record_id}.json"
    record.write_bytes(record.read_bytes().replace(b'"committed"', b'"c0mmitted"'))
    done = run("verify", path, check=1)
    assert (
        f"records/{record_id}.json" in done.stdout and "changed after it was written" in done.stdout
    )


def test_verify_detects_a_tampered_env_file(tmp_path: Path) -> None:
    (path,) = layers(tmp_path, "v")
    write([path], ["x"], envs=(StaticEnv("original"),))
    (env,) = (_volume_dir(path) / "provenance.d" / "envs").iterdir()
    env.write_bytes(env.read_bytes().replace(b"original", b"modified"))
    out = invoke("verify", path, code=1).output
    assert f"envs/{env.name}" in out and "changed after it was written" in out


def test_verify_detects_a_summary_edited_by_hand(tmp_path: Path) -> None:
    (path,) = layers(tmp_path, "v")
    write([path], ["x"], chunks=1)
    invoke("verify", path)
    summary = _volume_dir(path) / "provenance"
    original = summary.read_text()
    data = json.loads(original)
    data["processing"][0]["parameters"]["threshold"] = 0.9
    data["cirrus"]["records"][0]["status"] = "failed"
    summary.write_text(json.dumps(data))
    out = invoke("verify", path, code=1).output
    assert "parameters" in out and "0.9" in out
    assert "status='failed' in the summary but 'committed' in the record" in out
    data = json.loads(original)
    data["cirrus"]["records"][0]["id"] = "0" * 64
    summary.write_text(json.dumps(data))
    out = invoke("verify", path, code=1).output
    assert "which is not stored" in out and "orphan" in out


def test_orphan_found_by_verify_and_published_by_recover(tmp_path: Path) -> None:
    import attrs

    from cirrus.ledger import Ledger

    a, b = layers(tmp_path, "a", "b")
    ids = write([a, b], ["x"], "crash later")
    # Simulate a commit that staged everything but crashed before publishing: a copy of the
    # session's records under new ids, not pointed to by either summary.
    for layer in (a, b):
        ledger = Ledger.open(layer)
        record = ledger.read_record(ids[layer]).record
        ledger.stage_record(attrs.evolve(record, session="f" * 32))
    out = invoke("verify", a, code=1).output
    assert "orphan" in out and "cirrus recover" in out
    done = run("recover", a)
    assert f"{a}: published 1 record(s)" in done.stdout
    assert f"{b}: published 1 record(s)" in done.stdout  # the sibling too
    invoke("verify", a, b)
    assert "nothing to recover" in invoke("recover", a).output


def test_recover_with_nothing_staged_says_how_to_close_a_session_still_listed(
    tmp_path: Path,
) -> None:
    """A session killed before it staged a record leaves only its listing there."""
    import numpy as np

    import cirrus

    (a,) = layers(tmp_path, "a")
    s = cirrus.session(["src"], "killed early", cirrus.Process("p", {}))
    s.volume(a)[0:64, 0:64, 0:64] = np.ones((64, 64, 64), np.uint8)
    s._finalizer.detach()  # as after a SIGKILL: no warning, no commit
    out = invoke("recover", a).output
    assert "nothing to recover" in out
    assert f"1 session(s) still listed as writing ({s.id})" in out and "--abandon-dead" in out


def test_recover_tries_every_path_and_exits_with_the_worst_error(tmp_path: Path) -> None:
    a, b = layers(tmp_path, "a", "b")
    write([a], ["x"])
    write([b], ["x"])
    (_volume_dir(b) / "provenance").write_text("{not json")
    result = invoke("recover", a, b, code=3)  # a malformed summary: 3, as for `recover b`
    assert f"{a}: nothing to recover" in result.stdout
    assert f"cirrus: error: {b}: " in result.stderr and "cirrus repair" in result.stderr
    invoke("recover", b, code=3)


def test_repair_a_malformed_summary(tmp_path: Path) -> None:
    (path,) = layers(tmp_path, "v")
    write([path], ["x"], "kept through repair")
    (_volume_dir(path) / "provenance").write_text("{not json")
    done = run("log", path, check=3)
    assert "cirrus repair" in done.stderr and len(done.stderr.splitlines()) == 1
    out = invoke("verify", path, code=1).output
    assert "not valid JSON" in out
    done = run("repair", path)
    assert "provenance.d/corrupt/" in done.stdout and "1 record(s)" in done.stdout
    assert "kept through repair" in invoke("log", path).output
    invoke("verify", path)
    assert "nothing to repair" in invoke("repair", path).output


def test_repair_carries_over_what_other_tools_wrote_and_names_what_did_not_fit(
    tmp_path: Path,
) -> None:
    """A summary broken by one field keeps the rest: igneous's processing entries, the
    description, owners and sources, and keys no reader knows; only the misfits are dropped."""
    (path,) = layers(tmp_path, "v")
    write([path], ["gs://lab/aff"], "a cirrus session before the damage")
    summary = json.loads((_volume_dir(path) / "provenance").read_text())
    igneous = {"method": {"task": "DownsampleTask", "mip": 0}, "by": "igneous", "date": "2021"}
    broken = {
        **summary,
        "description": summary["description"] + " \n aligned by hand",
        "sources": "gs://lab/raw",  # a string where CloudVolume reads a list
        "owners": ["ann@lab.org", 7],
        "processing": [*summary["processing"], igneous, "not an entry"],
        "lab_note": {"checked": True},
    }
    (_volume_dir(path) / "provenance").write_text(json.dumps(broken))
    run("log", path, check=3)
    out = invoke("repair", path).output
    assert "rebuilt the summary from 1 record(s) and what other tools wrote in it" in out
    assert "not carried over, as it does not fit CloudVolume's shape: 1 of owners (str " in out
    assert "1 of processing (dict expected)" in out
    repaired = json.loads((_volume_dir(path) / "provenance").read_text())
    assert repaired["sources"] == ["gs://lab/raw", "gs://lab/aff"]
    assert repaired["owners"] == ["ann@lab.org"] and repaired["lab_note"] == {"checked": True}
    assert igneous in repaired["processing"] and len(repaired["processing"]) == 2
    assert repaired["description"] == broken["description"]  # the session's notes not doubled
    assert "DownsampleTask" in invoke("log", path).output
    invoke("verify", path)


def test_lineage_follows_three_levels(chain: dict[str, str]) -> None:
    out = run("lineage", chain["c"]).stdout
    lines = out.splitlines()
    assert lines[0].startswith(chain["c"])
    depth = {name: next(i for i, line in enumerate(lines) if chain[name] in line) for name in "abc"}
    assert depth["c"] < depth["b"] < depth["a"]
    assert "<- agglomerate" in out and "<- watershed" in out
    assert '"manual tracing"  (free text)' in out
    indent = [len(re.match(r"^[\s│├└─]*", lines[depth[n]]).group()) for n in "cba"]
    assert indent[0] < indent[1] < indent[2]
    dot = invoke("lineage", chain["c"], "--format", "dot").output
    assert f'"{chain["b"]}" -> "{chain["c"]}" [label="agglomerate"]' in dot
    assert f'"{chain["a"]}" -> "{chain["b"]}" [label="watershed"]' in dot
    mermaid = invoke("lineage", chain["c"], "--format", "mermaid").output
    assert mermaid.startswith("flowchart LR") and mermaid.count("-->") == 3
    shallow = invoke("lineage", chain["c"], "--depth", "1").output
    assert "deeper than --depth 1" in shallow and "manual tracing" not in shallow
    tree = json.loads(invoke("lineage", chain["c"], "--format", "json").output)
    assert tree["sources"][0]["name"] == chain["b"]


def test_lineage_keeps_each_volume_on_one_line_whatever_its_description(tmp_path: Path) -> None:
    """A description with a line break or a control character must not break the tree."""
    a, b = layers(tmp_path, "a", "b")
    write([a], ["manual tracing"], "trace", "trace")
    write([b], [a], "segment", "watershed\nat 8x8x40\x08\x1b[31m red")
    lines = invoke("lineage", b).output.splitlines()
    assert len(lines) == 3, lines  # b, a, and the free text a came from
    assert lines[1].endswith("<- watershed at 8x8x40 red")
    assert not any(c in "".join(lines) for c in "\x08\x1b")


def test_lineage_shows_cycles_and_unreadable_sources(tmp_path: Path) -> None:
    x, y, bad, bare = layers(tmp_path, "x", "y", "bad", "bare")
    write([bad], ["anything"])
    (_volume_dir(bad) / "provenance").write_text("[]")
    typo = f"file://{tmp_path}/imgae"
    write([x], [y, bad, "ftp-ish://not/a/layer", typo, bare])
    write([y], [x])
    result = invoke("lineage", x, code=3)  # an ancestor unreadable: all shown, then exit 3
    out = result.stdout
    assert "cycle: already an ancestor" in out
    assert (
        "[unreadable: " in out
        and f"is a JSON list, not an object; run `cirrus repair {bad}`]" in out
    )
    assert f"1 source(s) could not be read: {bad}" in result.stderr
    assert "ftp-ish://not/a/layer  [not followed: " in out
    assert f"{typo}  (0 record(s), no layer here (neither info nor provenance): check" in out
    assert f"{bare}  (0 record(s), no provenance recorded)" in out  # a layer, no history yet


def test_export_through_the_command(chain: dict[str, str], tmp_path: Path) -> None:
    import prov

    target = tmp_path / "b.jsonld"
    run("export", chain["b"], "--format", "prov-jsonld", "-o", str(target))
    document = prov.read(str(target), format="jsonld")
    assert any(chain["a"] in str(r.label) for r in document.get_records() if r.is_element())
    out = invoke("export", chain["b"]).output
    assert prov.read(out, format="json").get_records()


def test_step_status_and_finish(tmp_path: Path) -> None:
    import numpy as np

    import cirrus

    a, b = layers(tmp_path, "a", "b")
    step = cirrus.step(["x"], "many tasks", cirrus.Process("tasks", {"n": 2}), [a, b])
    assert "OPEN STEP" in invoke("log", a).output
    for task in ("t0", "t1"):
        with cirrus.join(step.token, task=task) as t:
            t.volume(a, progress=False)[0:64, 0:64, 0:64] = np.ones((64, 64, 64), np.uint8)
    token_file = tmp_path / "token.json"
    token_file.write_text(step.token)
    out = run("step", "status", f"@{token_file}").stdout
    assert f"{a}: 2 task(s) recorded, 0 failed, open" in out
    assert f"{b}: 0 task(s) recorded, 0 failed, open" in out
    done = run("step", "finish", step.token)
    assert f"step {step.id} finished" in done.stdout and "no task wrote here" in done.stdout
    log = invoke("log", a).output
    assert "OPEN STEP" not in log and "tasks: 2 (2 committed, 0 failed)" in log
    status = json.loads(invoke("step", "status", "-", "--json", input=step.token).output)
    assert status["volumes"][a]["finished"] and not status["volumes"][b]["open"]
    invoke("step", "status", '{"not": "a token"}', code=2)


def test_errors_are_one_line_unless_debug(tmp_path: Path) -> None:
    done = run("log", "no-protocol/here", check=2)
    assert done.stderr.startswith("cirrus: error:") and "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1
    done = run("--debug", "log", "no-protocol/here", check=2)  # the same exit status
    assert "Traceback" in done.stderr
    invoke("lineage", "file:///x", "--depth", "-1", code=2)  # click usage error
    (path,) = layers(tmp_path, "v")
    write([path], ["x"])
    for record in (_volume_dir(path) / "provenance.d" / "records").iterdir():
        record.unlink()
    done = run("log", path, check=3)
    assert "is missing" in done.stderr and len(done.stderr.splitlines()) == 1


def test_demo(tmp_path: Path) -> None:
    done = run("demo", str(tmp_path / "demo"), cwd=str(Path(__file__).parent.parent))
    out = done.stdout
    assert "$ cirrus log file://" in out and "threshold and label" in out
    assert "bootstrap a segmentation for proofreading" in out and "voxels above" in out
    paths = [f"file://{tmp_path / 'demo' / n}" for n in ("image", "segmentation", "boundaries")]
    invoke("verify", *paths)
    record = json.loads(invoke("log", paths[1], "--json").output)["records"][0]
    assert record["process"]["envs"] and record["siblings"] == [paths[2]]
    lineage = invoke("lineage", paths[1]).output
    assert paths[0] in lineage and "synthetic noise" in lineage
    # run again on that directory: the volumes exist, so it refuses before writing anything
    before = {p: (tmp_path / "demo" / p).read_bytes() for p in ("image/info", "image/provenance")}
    again = invoke("demo", str(tmp_path / "demo"), code=2).stderr
    assert f"{tmp_path / 'demo' / 'image'}, " in again and "name a new or empty directory" in again
    assert {p: (tmp_path / "demo" / p).read_bytes() for p in before} == before


def test_demo_outside_a_git_repository_records_that(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cirrus.demo import run as demo

    monkeypatch.chdir(tmp_path)
    paths = demo(str(tmp_path / "demo"))
    record = json.loads(invoke("log", paths["segmentation"], "--json").output)["records"][0]
    assert record["process"]["envs"] == []
    assert any("not a git repository" in n["text"] for n in record["notes"])


def test_log_on_moto_s3(s3_bucket: str) -> None:
    path = f"s3://{s3_bucket}/layer"
    from tests.cli_support import make_layer

    make_layer(path)
    write([path], ["s3 source"], "on s3", "s3 step")
    out = run("log", path).stdout
    assert "s3 step" in out and "on s3" in out
    invoke("verify", path)


def test_history_refuses_a_mistyped_path_as_the_command_does(tmp_path: Path) -> None:
    import cirrus

    (real,) = layers(tmp_path, "seg")
    write([real], ["x"])
    typo = f"file://{tmp_path}/segg"
    with pytest.raises(cirrus.errors.InvalidInput, match="not a CloudVolume layer") as raised:
        cirrus.history(typo)
    assert invoke("log", typo, code=2).stderr == f"cirrus: error: {raised.value}\n"  # one message
    assert not Path(typo[len("file://") :]).exists()
    (empty,) = layers(tmp_path, "empty")  # an `info` and no provenance: a layer, empty history
    assert len(cirrus.history(empty)) == 0 and len(cirrus.history(real)) == 1


def test_provenance_other_tools_wrote_is_shown_and_followed(tmp_path: Path) -> None:
    """A layer made before cirrus: plain CloudVolume wrote its summary (sources, a processing
    entry as igneous appends them, a provenance-toolbox note). `cirrus log` shows it instead of
    "no provenance recorded", and the lineage of a layer cirrus made from it follows its
    sources further back."""
    from cloudvolume import CloudVolume

    raw, old, seg = layers(tmp_path, "raw", "old", "seg")
    volume = CloudVolume(old, progress=False)
    volume.provenance.description = "2020-01-02T03:04:05;MOTIVATION;bootstrap the aligned stack"
    volume.provenance.owners = ["lab@example.org"]
    volume.provenance.sources = [raw, "em acquisition 2019"]
    volume.provenance.processing.append(
        {"method": {"task": "DownsampleTask", "mip": 0}, "by": "will@host", "date": "2020-01-03"}
    )
    volume.commit_provenance()
    write([seg], [old], description="watershed")

    out = invoke("log", old).output
    assert "no provenance recorded" not in out
    assert "written by other tools" in out
    assert "DownsampleTask (2020-01-03, will@host)" in out
    assert raw in out and "em acquisition 2019" in out
    assert "bootstrap the aligned stack" in out and "lab@example.org" in out
    data = json.loads(invoke("log", old, "--json").output)
    assert data["other_tools"]["processing"][0]["method"]["task"] == "DownsampleTask"

    lineage = invoke("lineage", seg).output
    lines = lineage.splitlines()
    depth = {p: next(i for i, line in enumerate(lines) if p in line) for p in (seg, old, raw)}
    assert depth[seg] < depth[old] < depth[raw]
    assert "other tools recorded: DownsampleTask" in lineage
    assert '"em acquisition 2019"  (free text)' in lineage
    assert "listed in the summary by another tool" in lineage
    invoke("verify", old)  # another tool's summary is no problem

    # on a layer cirrus writes as well, the other tools' processing entries stay shown
    write([old], [raw], description="relabel")
    out = invoke("log", old).output
    assert "DownsampleTask" in out and "relabel" in out
