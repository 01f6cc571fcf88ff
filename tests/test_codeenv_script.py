"""The script a process runs, in its PythonGithubEnv: a commit says which code ran only for the
files git holds, so a script git does not hold (untracked, ignored, outside the repository) is
kept as text. Each test runs a real script in a real process against a real repository."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import cirrus
from tests.cli_support import invoke
from tests.session_support import make_layer
from tests.test_codeenv import GIT_ENV, committed_repo, git

CAPTURE = """\
import json, sys
import cirrus
keep = sys.argv[3] == "keep"
document = cirrus.PythonGithubEnv(sys.argv[1], diff_limit=int(sys.argv[2]), script_text=keep)
document = document.to_json()
print(json.dumps(document))
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return committed_repo(tmp_path)


def run(
    script: Path | None, repo: Path, *args: str, diff_limit: int = 1_000_000, keep: bool = True
) -> dict:
    """The environment document a real process captures running `script` (or `args`), with
    `script_text=keep`."""
    command = [
        *(sys.executable, *([str(script)] if script else args)),
        *(str(repo), str(diff_limit), "keep" if keep else "digest"),
    ]
    done = subprocess.run(
        command, cwd=repo, env=GIT_ENV, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_untracked_script_is_kept_whole_with_its_digest(repo: Path) -> None:
    script = repo / "segment.py"
    script.write_text(CAPTURE)
    document = run(script, repo)
    assert document["script"] == {
        "path": "segment.py",
        "git": "untracked",
        "bytes": len(CAPTURE),
        "sha256": sha256(script),
        "text": CAPTURE,
        "text_truncated": False,
    }
    assert "segment.py" in document["untracked"] and document["dirty"] is False


def test_by_default_a_script_git_does_not_hold_is_kept_by_digest_not_text(repo: Path) -> None:
    """A script kept out of git may hold keys, and a stored record cannot be edited."""
    script = repo / "segment.py"
    script.write_text(CAPTURE + 'KEY = "wJalrXUtnFEMI"\n')
    held = run(script, repo, keep=False)["script"]
    assert held == {
        "path": "segment.py",
        "git": "untracked",
        "bytes": script.stat().st_size,
        "sha256": sha256(script),
    }


def test_a_committed_script_is_named_by_the_commit_not_copied(repo: Path) -> None:
    script = repo / "segment.py"
    script.write_text(CAPTURE)
    git(repo, "add", "segment.py")
    git(repo, "commit", "-q", "-m", "script")
    assert run(script, repo)["script"] == {
        "path": "segment.py",
        "git": "tracked",
        "bytes": len(CAPTURE),
        "sha256": sha256(script),
    }


@pytest.mark.parametrize("staged", [False, True])
def test_a_script_changed_since_the_commit_is_in_the_diff_not_copied(
    repo: Path, staged: bool
) -> None:
    script = repo / "segment.py"
    script.write_text(CAPTURE)
    git(repo, "add", "segment.py")
    git(repo, "commit", "-q", "-m", "script")
    script.write_text(CAPTURE + "# threshold 0.3\n")
    if staged:
        git(repo, "add", "segment.py")
    document = run(script, repo)
    assert document["script"]["git"] == "modified" and "text" not in document["script"]
    assert document["script"]["sha256"] == sha256(script)
    assert "+# threshold 0.3" in document["diff"]["staged" if staged else "unstaged"]


def test_an_ignored_script_which_untracked_does_not_list_is_kept(repo: Path) -> None:
    (repo / ".gitignore").write_text("scratch/\n")
    (repo / "scratch").mkdir()
    script = repo / "scratch" / "try it.py"
    script.write_text(CAPTURE)
    document = run(script, repo)
    assert document["script"]["path"] == "scratch/try it.py"
    assert document["script"]["git"] == "ignored" and document["script"]["text"] == CAPTURE
    assert document["untracked"] == [".gitignore"]


def test_a_script_outside_the_repository_is_kept_by_its_absolute_path(
    repo: Path, tmp_path: Path
) -> None:
    script = tmp_path / "elsewhere" / "run.py"
    script.parent.mkdir()
    script.write_text(CAPTURE)
    held = run(script, repo)["script"]
    assert held["path"] == str(script.resolve()) and held["git"] == "outside the repository"
    assert held["text"] == CAPTURE


def test_a_script_where_there_is_no_repository_is_kept_beside_the_failure(
    tmp_path: Path,
) -> None:
    script = tmp_path / "run.py"
    script.write_text(CAPTURE)
    document = run(script, tmp_path)
    assert "not inside a git repository" in document["capture_error"]
    assert document["script"]["git"] == "no repository"
    assert document["script"]["text"] == CAPTURE


def test_a_module_run_with_dash_m_is_its_file(repo: Path) -> None:
    (repo / "pipeline").mkdir()
    (repo / "pipeline" / "__init__.py").write_text("")
    (repo / "pipeline" / "mesh.py").write_text(CAPTURE)
    held = run(None, repo, "-m", "pipeline.mesh")["script"]
    assert (held["path"], held["git"], held["text"]) == ("pipeline/mesh.py", "untracked", CAPTURE)


def test_code_given_with_dash_c_has_no_script(repo: Path) -> None:
    document = run(None, repo, "-c", CAPTURE)
    assert "script" not in document and document["commit"]


def test_a_long_script_is_cut_at_a_whole_line_with_the_digest_of_all(repo: Path) -> None:
    script = repo / "long.py"
    script.write_text(CAPTURE + "".join(f"# line {i:04}\n" for i in range(1000)))
    held = run(script, repo, diff_limit=len(CAPTURE) + 100)["script"]
    assert held["text_truncated"] is True and held["text"].endswith("\n")
    assert held["text"].startswith(CAPTURE) and len(held["text"]) <= len(CAPTURE) + 100
    assert (held["bytes"], held["sha256"]) == (script.stat().st_size, sha256(script))


def test_credentials_in_a_kept_script_are_redacted(repo: Path) -> None:
    script = repo / "fetch.py"
    script.write_text(CAPTURE + '# SOURCE = "https://alice:hunter2@data.example.org/raw"\n')
    held = run(script, repo)["script"]
    assert "hunter2" not in json.dumps(held)
    assert "https://data.example.org/raw" in held["text"]
    assert held["sha256"] == sha256(script)  # the digest is of the file as it ran


RECORDED = """\
import sys
import numpy as np
import cirrus
process = cirrus.Process("paint", {"value": 7}, cirrus.PythonGithubEnv(".", script_text=True))
with cirrus.session(["gs://lab/aff"], "try a threshold", process) as s:
    s.volume(sys.argv[1])[0:64, 0:64, 0:64] = np.full((64, 64, 64), 7, np.uint8)
"""


def test_cirrus_show_says_how_git_held_the_script_and_prints_its_text(
    repo: Path, tmp_path: Path
) -> None:
    layer = f"file://{tmp_path}/layer"
    make_layer(layer)
    (repo / "paint.py").write_text(RECORDED)
    subprocess.run(
        [sys.executable, "paint.py", layer], cwd=repo, env=GIT_ENV, check=True, capture_output=True
    )
    (stored,) = cirrus.history(layer)
    shown = invoke("show", layer, stored.id[:12]).output
    assert f"script: paint.py (untracked, {len(RECORDED):,} bytes: its text is kept)" in shown
    assert "script:\n" in shown and '  with cirrus.session(["gs://lab/aff"]' in shown


def test_a_kept_script_cannot_drive_the_terminal_cirrus_show_prints_it_on(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cirrus.cli.volumes

    layer = f"file://{tmp_path}/layer"
    make_layer(layer)
    (repo / "paint.py").write_text(RECORDED + "# \x1b]0;PWNED\x07 \x1b[31mRED why\u202etxt.gnp\n")
    subprocess.run(
        [sys.executable, "paint.py", layer], cwd=repo, env=GIT_ENV, check=True, capture_output=True
    )
    monkeypatch.setattr(cirrus.cli.volumes, "is_terminal", lambda: True)
    out = invoke("show", layer, cirrus.history(layer)[0].id[:12], color=True).stdout
    assert "script of env" in out and "PWNED" not in out and "why<U+202E>txt.gnp" in out
    assert "\x1b]" not in out and "\x1b[31mRED" not in out and "\u202e" not in out
