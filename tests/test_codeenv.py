"""Code environments: PythonGithubEnv on real git repositories, DockerEnv against a fake engine."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import attrs
import pytest

from cirrus.canonical import canonical_json, digest
from cirrus.codeenv import (
    DockerEnv,
    PythonGithubEnv,
    detect_container_id,
    installed_packages,
    strip_credentials,
)
from cirrus.codeenv.dockerenv import split_reference
from cirrus.codeenv.gitenv import DIFF_OPTIONS, UNTRACKED_LIMIT, notebook_path
from cirrus.display_env import env_lines
from cirrus.errors import CaptureError, InvalidInput
from cirrus.model import Process
from cirrus.redact import redact_url

TOKEN = "ghp_S3cretT0kenValue1234567890"
PASSWORD = "hunter2-Pa55word"
SCP_PASSWORD = "scp-Pa55:w/rd@x"
CONTAINER = "4f3c2b1a" * 8
IMAGE_ID = "sha256:" + "ab12" * 16
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.org",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.org",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=repo, env=GIT_ENV, check=True, capture_output=True, text=True
    )
    return done.stdout


def committed_repo(tmp_path: Path) -> Path:
    """A repository `code` with one commit (of `a.py`) on `main`."""
    root = tmp_path / "code"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "a.py").write_text("x = 1\n")
    git(root, "add", "a.py")
    git(root, "commit", "-q", "-m", "first")
    return root


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with one commit on `main` and remotes carrying credentials."""
    root = committed_repo(tmp_path)
    git(root, "remote", "add", "origin", f"https://alice:{TOKEN}@github.com/lab/code.git")
    git(root, "remote", "add", "bare", f"https://{TOKEN}@github.com/lab/bare.git")
    git(root, "remote", "add", "mirror", f"ssh://git:{PASSWORD}@git.example.org/lab/code.git")
    git(root, "remote", "add", "scp", f"user:{SCP_PASSWORD}@host.example:lab/p.git")
    return root


# --- credentials -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:tok@github.com/lab/x.git", "https://github.com/lab/x.git"),
        ("https://tok@github.com/lab/x.git", "https://github.com/lab/x.git"),
        ("https://github.com/lab/x.git?access_token=tok", "https://github.com/lab/x.git"),
        ("http://u:p@host:8080/x", "http://host:8080/x"),
        ("ssh://git:pw@host/x.git", "ssh://git@host/x.git"),
        ("ssh://git@host:22/x.git", "ssh://git@host:22/x.git"),
        ("git@github.com:lab/x.git", "git@github.com:lab/x.git"),
        ("user:pw@host.example:lab/p.git", "user@host.example:lab/p.git"),
        ("user:p@ss:w/rd@host:lab/x@v1.git", "user@host:lab/x@v1.git"),
        (":pw@host:x.git", "host:x.git"),
        ("u:pw@[::1]:x.git", "u@[::1]:x.git"),
        ("host.example:lab/p.git", "host.example:lab/p.git"),
        ("./a:b@host:x.git", "./a:b@host:x.git"),
        ("/srv/git/x.git", "/srv/git/x.git"),
        ("file:///srv/git/x.git", "file:///srv/git/x.git"),
        # a password written unencoded, holding what urlsplit ends the host at
        ("https://u:pa/ss@github.com/lab/x.git", "https://github.com/lab/x.git"),
        ("https://u:p?w#d@github.com/lab/x.git", "https://github.com/lab/x.git"),
        ("ssh://git:pa/ss@host/x.git", "ssh://git@host/x.git"),
        # a remote is one URL: a `,` in its userinfo is no prose
        ("https://us,er:pw@host/x.git", "https://host/x.git"),
        # a malformed host is kept unless it may hide userinfo
        ("https://[::1/x.git", "https://[::1/x.git"),
        ("https://[u,x@h/x.git", "<unparseable remote url>"),
    ],
)
def test_strip_credentials(url: str, expected: str) -> None:
    assert strip_credentials(url) == expected


def test_tokens_appear_nowhere_in_the_json(repo: Path) -> None:
    env = PythonGithubEnv(repo)
    text = canonical_json(env.to_json()).decode()
    assert TOKEN not in text and PASSWORD not in text and "alice" not in text
    assert "Pa55" not in text
    assert env.to_json()["remotes"] == {
        "origin": "https://github.com/lab/code.git",
        "bare": "https://github.com/lab/bare.git",
        "mirror": "ssh://git@git.example.org/lab/code.git",
        "scp": "user@host.example:lab/p.git",
    }
    assert TOKEN not in repr(env)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://u:pw@host/x", "https://host/x"),
        (f"https://{TOKEN}@github.com/lab/x.git", "https://github.com/lab/x.git"),
        (f"https://{TOKEN}:x-oauth-basic@github.com/x", "https://github.com/x"),
        ("ssh://git:pw@host/x.git", "ssh://git@host/x.git"),
        ("s3://AKIA:secret@bucket/x", "s3://bucket/x"),
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=AKIA%2F20240101%2Fus-east-1%2Fs3%2Faws4_request"
            "&X-Amz-Security-Token=FwoG&X-Amz-Signature=abcdef&X-Amz-Expires=60",
            "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=REDACTED&X-Amz-Security-Token=REDACTED"
            "&X-Amz-Signature=REDACTED&X-Amz-Expires=60",
        ),
        (
            "https://storage.googleapis.com/b/o?X-Goog-Credential=sa%40p.iam&X-Goog-Signature=9f",
            "https://storage.googleapis.com/b/o?X-Goog-Credential=REDACTED"
            "&X-Goog-Signature=REDACTED",
        ),
        (
            "https://a.blob.core.windows.net/c/b?sv=2022&sig=Zm9v%3D&Signature=x&se=2030",
            "https://a.blob.core.windows.net/c/b?sv=2022&sig=REDACTED&Signature=REDACTED&se=2030",
        ),
        (
            "https://h/x?token=t&access_token=a&page=2",
            "https://h/x?token=REDACTED&access_token=REDACTED&page=2",
        ),
        ("https://h/cb#access_token=a&state=s", "https://h/cb#access_token=REDACTED&state=s"),
        ("precomputed://https://u:pw@h/seg?sig=s", "precomputed://https://h/seg?sig=REDACTED"),
        # a diff line's sign before the URL (requirements.txt: `+git+https://...`)
        ("+git+https://u:T1@github.com/o/r.git", "+git+https://github.com/o/r.git"),
        ("x\n-https://u:T2@h/r.git\n+ https://T3@h/s", "x\n-https://h/r.git\n+ https://h/s"),
        ("a+https://u:T4@h/x", "a+https://h/x"),
        ("https://u:P1@h/x,https://u2:P2@h2/y", "https://h/x,https://h2/y"),
        ("https://u:P1@h/x;s3://AKIA:P2@b/y", "https://h/x;s3://b/y"),
        ("https://h/x?a=1|https://u:P3@h2/y", "https://h/x?a=1|https://h2/y"),
        ("https://proxy/?url=https://u:P4@h/y", "https://proxy/?url=https://h/y"),
        ("https://proxy/?url=--https://u:P5@h/y", "https://proxy/?url=--https://h/y"),
        ("https://proxy/?url=https://u:P@5@h/y", "https://proxy/?url=https://h/y"),
        ("https://h/x,--https://u:P6@h2/y?sig=s", "https://h/x,--https://h2/y?sig=REDACTED"),
        # userinfo after any `://`: in a fragment, or after a `,` that does not part URLs
        ("https://h/#https://u:P9@h2/", "https://h/#https://h2/"),
        ("https://h,--dst=https://u:P10@h2/y", "https://h,--dst=https://h2/y"),
        ("https://T5@h,--owner=me@lab.org", "https://h,--owner=me@lab.org"),
        # what cannot start a scheme is kept before it; `1://` or ` ://` has no scheme at all
        ("--ssh://git:pw@host/x.git", "--ssh://git@host/x.git"),
        ("see 1://u:P7@h/x?sig=s", "see 1://h/x?sig=REDACTED"),
        ("at ://u:P8@h/x", "at ://h/x"),
        # the scheme as written
        ("HTTPS://u:P11@H/x?Sig=s", "HTTPS://H/x?Sig=REDACTED"),
        ("SSH://git:pw@host/x.git", "SSH://git@host/x.git"),
        ("https://h/x?auth=P5&pwd=/data/run1&n=1", "https://h/x?auth=REDACTED&pwd=/data/run1&n=1"),
        (
            '{"endpoint":"https://storage.googleapis.com","email":"me@lab.org"}',
            '{"endpoint":"https://storage.googleapis.com","email":"me@lab.org"}',
        ),
        ('["https://h","ops@x.org"]', '["https://h","ops@x.org"]'),
        ("https://h/a,ops@x.org", "https://h/a,ops@x.org"),
        ("--src=https://s3.lab.org,--owner=me@lab.org", "--src=https://s3.lab.org,--owner=me@lab.org"),
        (
            "run --src gs://b/x?sig=s --dst https://u:p@h/y",
            "run --src gs://b/x?sig=REDACTED --dst https://h/y",
        ),
        # nothing secret: returned exactly as given, not re-encoded
        ("gs://lab/aff?tokenizer=bert&key_frame=3#", "gs://lab/aff?tokenizer=bert&key_frame=3#"),
        ("https://h//x/?a=%20&b", "https://h//x/?a=%20&b"),
        ("user:pw@host:x.git", "user:pw@host:x.git"),
        ("no url here", "no url here"),
        ("", ""),
    ],
)  # fmt: skip
def test_redact_url(text: str, expected: str) -> None:
    assert redact_url(text) == expected
    assert redact_url(expected) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a password holding a `,`: in a URL, a list, a command line
        ("https://usr:PW,XQ@host/x", "https://host/x"),
        ("--src https://usr:PW,XQ@host/x,gs://b/y -v", "--src https://host/x,gs://b/y -v"),
        ("mongodb://u:p,w@h1:27017,h2:27017/db", "mongodb://h1:27017,h2:27017/db"),
        ("https://u:PW,--x=1@host/x", "https://host/x"),
        # holding a `/`, `?` or `#`, where urlsplit ends the host (secrets in URL-safe base64)
        ("s3://AKIA:sec/ret@bucket/x", "s3://bucket/x"),
        ("s3://AKIA:/secret@bucket/x", "s3://bucket/x"),
        ("s3://AKIA0123:12/secret@bucket/x", "s3://bucket/x"),  # not a port
        ("s3://AKIA0123://secret@bucket/x", "s3://bucket/x"),  # not a nested URL
        ("https://john.doe:7/secret@h.lab.org/x", "https://h.lab.org/x"),  # no port has one digit
        ("https://alice:8?p#w@h/x", "https://h/x"),
        ("ssh://git:pa/ss@host/x.git", "ssh://git@host/x.git"),
        ("https://u:p?w#d@h/x?sig=s", "https://h/x?sig=REDACTED"),
        ("git+https://u:to/k@github.com/o/r.git@v1.2#egg=r", "git+https://github.com/o/r.git@v1.2#egg=r"),
        # nested, and with an `@` before a `;`
        ("https://proxy/?url=https://u:se/c,ret@h/y", "https://proxy/?url=https://h/y"),
        ("https://proxy/?url=https://u:p@b;c@h/y", "https://proxy/?url=https://h/y"),
        # a malformed host: its userinfo goes, the rest is kept
        ("https://[u:pw@h/x", "https://h/x"),
        ("https://[tok@h/x", "https://h/x"),
        ("https://[::1/x", "https://[::1/x"),
        ("see https://[::1/x?sig=s now", "see https://[::1/x?sig=REDACTED now"),
    ],
)  # fmt: skip
def test_redact_url_takes_passwords_urlsplit_misreads(text: str, expected: str) -> None:
    assert redact_url(text) == expected
    assert redact_url(expected) == expected


@pytest.mark.parametrize(
    "text",
    [
        # a `,` or `/` that ends a URL, with or without an `@` after it
        "see https://a.org/x, then mail me@lab.org",
        "see https://a.org/x,me@lab.org",
        '"https://h/a,b"',
        "--sources gs://a/x,gs://b/y",
        # an `@` after a host and port, or an IPv6 host, is in the path or the query
        "http://localhost:3000/@vite/client",
        "http://[::1]/x@y",
        "http://[::1]:8080/x@y",
        "https://h.lab.org:8080?to=me@lab.org",
        "http://10.0.0.7:4873/@lab%2fviewer#me@lab.org",
        "https://medium.com/@lab/post",
        # the `:` of a nested URL, and a pip requirement's `@tag`
        "precomputed://gs://b/x@v1",
        "git+https://github.com/o/r.git@v1.2#egg=r",
    ],
)
def test_redact_url_keeps_an_at_sign_that_is_no_userinfo(text: str) -> None:
    assert redact_url(text) == text


@pytest.mark.parametrize("before", ["--", "(+", "é+", "é", "a.-", "Foo.-", "x", "1", "+-+", "'-"])
def test_redact_url_whatever_comes_before_the_scheme(before: str) -> None:
    text = f"run {before}https://u:{PASSWORD}@h/p?X-Amz-Signature={TOKEN}&n=1 now"
    assert redact_url(text) == f"run {before}https://h/p?X-Amz-Signature=REDACTED&n=1 now"


@pytest.mark.parametrize(
    "text",
    [
        "a" * 200_000 + "/://",  # a long run of scheme characters, not before the `://`
        "a" * 200_000 + "://u:pw@h",
        "+-" * 100_000 + "/://",
        "+-" * 100_000 + "://u:pw@h",
        "https://h/" + "a" * 200_000 + "/",  # the same in a URL's path
        "https://h/" + "+-" * 100_000 + "/",
        "a://" * 50_000 + "u:pw@h",  # URLs nested 50,000 deep
        "A://" * 50_000 + "u:pw@h",
        "://" * 70_000 + "u:pw@h",
        "x://u:pw@h/" + "x://u:a/" * 50_000,  # passwords that may hold `/`, none ending in `@`
        "https://[" + ":" * 200_000 + "/x://u:pw@h",  # an IPv6 host never closed
    ],
)
def test_redact_url_scans_in_linear_time(text: str) -> None:
    """A scan trying a scheme at every position of these runs takes minutes, a linear one ms."""
    started = time.perf_counter()
    redacted = redact_url(text)
    assert time.perf_counter() - started < 2
    assert ":pw@" not in redacted


# --- git states --------------------------------------------------------------------------------


def test_clean_repository(repo: Path) -> None:
    doc = PythonGithubEnv(str(repo)).to_json()
    assert doc["kind"] == "python-git"
    assert doc["path"] == str(repo)
    assert doc["commit"] == git(repo, "rev-parse", "HEAD").strip()
    assert (doc["branch"], doc["detached"], doc["dirty"]) == ("main", False, False)
    assert doc["diff"] == {"staged": "", "unstaged": ""}
    assert (doc["diff_truncated"], doc["diff_bytes"]) == (False, 0)
    assert doc["diff_sha256"] == hashlib.sha256(b"").hexdigest()
    assert (doc["untracked"], doc["untracked_count"], doc["untracked_truncated"]) == ([], 0, False)
    assert "capture_error" not in doc
    assert doc["python"] == ".".join(map(str, sys.version_info[:3]))
    assert doc["platform"].startswith(sys.platform)


def test_found_from_a_subdirectory(repo: Path) -> None:
    (repo / "pkg").mkdir()
    doc = PythonGithubEnv(repo / "pkg").to_json()
    assert doc["path"] == str(repo) and "capture_error" not in doc


def test_staged_changes(repo: Path) -> None:
    (repo / "a.py").write_text("x = 2\n")
    git(repo, "add", "a.py")
    doc = PythonGithubEnv(repo).to_json()
    assert doc["dirty"] is True
    assert "+x = 2" in doc["diff"]["staged"] and "-x = 1" in doc["diff"]["staged"]
    assert doc["diff"]["unstaged"] == ""


def test_unstaged_changes(repo: Path) -> None:
    (repo / "a.py").write_text("x = 3\n")
    doc = PythonGithubEnv(repo).to_json()
    assert doc["dirty"] is True
    assert doc["diff"]["staged"] == ""
    assert "+x = 3" in doc["diff"]["unstaged"]


def test_staged_and_unstaged_are_kept_apart(repo: Path) -> None:
    (repo / "a.py").write_text("x = 2\n")
    git(repo, "add", "a.py")
    (repo / "a.py").write_text("x = 3\n")
    diff = PythonGithubEnv(repo).to_json()["diff"]
    assert "+x = 2" in diff["staged"] and "+x = 3" not in diff["staged"]
    assert "-x = 2" in diff["unstaged"] and "+x = 3" in diff["unstaged"]


def test_untracked_files_sorted_and_not_dirty(repo: Path) -> None:
    (repo / "zeta.py").write_text("")
    (repo / "sub").mkdir()
    (repo / "sub" / "b.py").write_text("")
    (repo / "empty").mkdir()
    (repo / "logs").mkdir()
    (repo / "logs" / "run.log").write_text("ignored")
    (repo / ".gitignore").write_text("*.log\n")
    (repo / "run.log").write_text("ignored")
    doc = PythonGithubEnv(repo).to_json()
    assert doc["untracked"] == [".gitignore", "sub/", "zeta.py"]
    assert (doc["untracked_count"], doc["untracked_truncated"]) == (3, False)
    assert doc["dirty"] is False


def test_untracked_directories_are_one_entry_and_the_list_is_capped(repo: Path) -> None:
    chunks = repo / "out" / "seg" / "8_8_40"  # a file:// volume written inside the tree
    chunks.mkdir(parents=True)
    for i in range(50):
        (chunks / f"{i * 64}-{i * 64 + 64}_0-64_0-64.gz").write_text("")
    (repo / "src").mkdir()
    (repo / "src" / "new.py").write_text("")
    git(repo, "add", "src/new.py")
    (repo / "src" / "newer.py").write_text("")  # beside a tracked file: named itself
    doc = PythonGithubEnv(repo).to_json()
    assert doc["untracked"] == ["out/", "src/newer.py"]
    names = [f"f{i:04}.txt" for i in range(UNTRACKED_LIMIT + 5)]
    for name in names:
        (repo / name).write_text("")
    doc = PythonGithubEnv(repo).to_json()
    assert doc["untracked"] == sorted([*names, "out/", "src/newer.py"])[:UNTRACKED_LIMIT]
    assert (doc["untracked_count"], doc["untracked_truncated"]) == (UNTRACKED_LIMIT + 7, True)
    shown = "\n".join(env_lines("0" * 64, doc))  # `cirrus show`: the count, not the list's length
    assert f"untracked: {UNTRACKED_LIMIT + 7} file(s): f0000.txt" in shown
    assert "untracked_count" not in shown and "untracked_truncated" not in shown


def test_file_names_that_are_not_utf8(repo: Path) -> None:
    (repo / os.fsdecode(b"latin\xe9.py")).write_text("")
    (repo / "caf\u00e9.py").write_text("")
    env = PythonGithubEnv(repo)
    assert env.to_json()["untracked"] == ["caf\u00e9.py", "latin\\xe9.py"]
    assert Process("p", {}, env).env_documents()[0]["untracked"][1] == "latin\\xe9.py"


def test_remotes_without_a_url(repo: Path) -> None:
    git(repo, "config", "remote.upstream.tagopt", "--no-tags")  # a section with no url at all
    git(repo, "config", "remote.pushonly.pushurl", f"https://alice:{TOKEN}@github.com/lab/p.git")
    doc = PythonGithubEnv(repo, strict=True).to_json()
    assert "upstream" not in doc["remotes"]
    assert doc["remotes"]["pushonly"] == "https://github.com/lab/p.git"
    assert doc["remotes"]["origin"] == "https://github.com/lab/code.git"
    assert TOKEN not in canonical_json(doc).decode()


def test_detached_head(repo: Path) -> None:
    git(repo, "checkout", "-q", "--detach")
    doc = PythonGithubEnv(repo).to_json()
    assert (doc["branch"], doc["detached"]) == (None, True)
    assert doc["commit"] == git(repo, "rev-parse", "HEAD").strip()


def test_repository_without_a_commit(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    env = PythonGithubEnv(tmp_path)
    doc = env.to_json()
    assert doc["kind"] == "python-git"
    assert "no commit" in doc["capture_error"] and str(tmp_path) in doc["capture_error"]
    assert env.capture_error == doc["capture_error"]
    assert doc["python"] and doc["packages"]
    assert "commit" not in doc
    with pytest.raises(CaptureError, match="no commit") as caught:
        PythonGithubEnv(tmp_path, strict=True)
    assert str(tmp_path) in str(caught.value)


def test_a_repository_git_refuses_is_reported_in_gits_words(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Owned by another user, git refuses it ("dubious ownership"): not "no commit yet"."""
    if os.geteuid() == 0:
        os.chown(repo, 12345, 12345)
    else:
        monkeypatch.setenv("GIT_TEST_ASSUME_DIFFERENT_OWNER", "1")  # git's own knob for the check
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)  # no `safe.directory = *` from this machine
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    error = PythonGithubEnv(repo).capture_error
    assert error.startswith(f"git refuses to read the repository at {repo}: fatal: ")
    assert "dubious ownership" in error and f"safe.directory {repo}" in error
    assert "no commit" not in error
    with pytest.raises(CaptureError, match="safe.directory"):
        PythonGithubEnv(repo, strict=True)


def test_a_head_git_reads_but_gitpython_cannot_is_not_called_uncommitted(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "--object-format=sha256")  # GitPython reads SHA-1 repositories only
    (tmp_path / "a.py").write_text("x = 1\n")
    git(tmp_path, "add", "a.py")
    git(tmp_path, "commit", "-q", "-m", "first")
    error = PythonGithubEnv(tmp_path).capture_error
    assert error.startswith(f"reading the git repository at {tmp_path} failed: ")
    assert "no commit" not in error


def test_no_git_executable_is_a_recorded_failure(repo: Path, tmp_path: Path) -> None:
    """Without git (python:*-slim images) GitPython fails on import, so a real process is used."""
    code = (
        "import sys, cirrus\n"
        "from cirrus.errors import CaptureError\n"
        "print(cirrus.PythonGithubEnv(sys.argv[1]).capture_error)\n"
        "try:\n"
        "    cirrus.PythonGithubEnv(sys.argv[1], strict=True)\n"
        "except CaptureError as err:\n"
        "    print('strict:', err)\n"
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GIT_PYTHON")}
    environ["PATH"] = str(tmp_path / "no-git-here")
    done = subprocess.run(
        [sys.executable, "-c", code, str(repo)],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    recorded, strict = done.stdout.splitlines()
    assert recorded.startswith("git cannot be run (") and "install git" in recorded
    assert strict.startswith(f"strict: PythonGithubEnv({str(repo)!r}): git cannot be run")
    assert "could not capture the code" in done.stderr  # the documented warning


def test_not_a_repository(tmp_path: Path) -> None:
    doc = PythonGithubEnv(tmp_path).to_json()
    assert doc["capture_error"] == f"{tmp_path} is not inside a git repository"
    assert doc["packages"] and doc["python"]
    with pytest.raises(CaptureError, match="not inside a git repository") as caught:
        PythonGithubEnv(str(tmp_path), True)
    assert str(tmp_path) in str(caught.value)


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert "does not exist" in PythonGithubEnv(missing).to_json()["capture_error"]
    with pytest.raises(CaptureError, match="does not exist"):
        PythonGithubEnv(missing, strict=True)


def capture_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("cirrus.") and r.levelno >= 30]


def test_a_failed_capture_warns_once_naming_the_path_and_the_fix(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="cirrus")
    missing = tmp_path / "not" / "a" / "repo"
    PythonGithubEnv(missing)
    [warning] = capture_warnings(caplog)
    assert warning.levelno == logging.WARNING and warning.name.startswith("cirrus.")
    assert str(missing) in warning.getMessage() and "does not exist" in warning.getMessage()
    assert "Pass PythonGithubEnv the path of the git working tree" in warning.getMessage()
    PythonGithubEnv(missing)  # the same failure again: not warned again
    assert len(capture_warnings(caplog)) == 1
    PythonGithubEnv(tmp_path)  # another failure is
    [_, other] = capture_warnings(caplog)
    assert f"{tmp_path} is not inside a git repository" in other.getMessage()


def test_a_capture_that_works_or_raises_does_not_warn(
    repo: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    PythonGithubEnv(repo)
    with pytest.raises(CaptureError):
        PythonGithubEnv(tmp_path / "elsewhere", strict=True)
    assert capture_warnings(caplog) == []


def git_diffs(repo: Path) -> tuple[bytes, bytes]:
    """The staged and unstaged diffs as git prints them with cirrus's options."""
    staged = subprocess.run(
        ["git", "diff", "--cached", *DIFF_OPTIONS], cwd=repo, capture_output=True, check=True
    ).stdout
    unstaged = subprocess.run(
        ["git", "diff", *DIFF_OPTIONS], cwd=repo, capture_output=True, check=True
    ).stdout
    return staged, unstaged


def test_large_diff_is_truncated_with_digest_of_the_whole(repo: Path) -> None:
    (repo / "a.py").write_text("".join(f"line_{i} = {i}\n" for i in range(500)))
    git(repo, "add", "a.py")
    (repo / "a.py").write_text("y = 'é'\n" * 300)
    doc = PythonGithubEnv(repo, diff_limit=1000).to_json()
    staged, unstaged = git_diffs(repo)
    assert doc["diff_truncated"] is True
    assert doc["diff_bytes"] == len(staged) + len(unstaged) > 1000
    assert doc["diff_sha256"] == hashlib.sha256(staged + unstaged).hexdigest()
    assert len(doc["diff"]["staged"].encode()) <= 1000
    assert staged.decode().startswith(doc["diff"]["staged"])
    assert doc["diff"]["unstaged"] == ""


def test_diff_within_the_limit_is_whole(repo: Path) -> None:
    (repo / "a.py").write_text("x = 4\n")
    doc = PythonGithubEnv(repo, diff_limit=10_000).to_json()
    _, whole = git_diffs(repo)
    assert doc["diff"]["unstaged"] == whole.decode()
    assert doc["diff_truncated"] is False


def test_credentials_in_the_diff_are_redacted(repo: Path) -> None:
    url = f"https://oauth2:{TOKEN}@gitlab.lab.org/aff.zarr?X-Amz-Signature={PASSWORD}&n=1"
    (repo / "b.py").write_text(f'SRC = "{url}"\n')
    git(repo, "add", "b.py")
    (repo / "a.py").write_text(f"x = 1\nDST = '{url}'\n")
    doc = PythonGithubEnv(repo).to_json()
    clean = "https://gitlab.lab.org/aff.zarr?X-Amz-Signature=REDACTED&n=1"
    assert f'+SRC = "{clean}"' in doc["diff"]["staged"]
    assert f"+DST = '{clean}'" in doc["diff"]["unstaged"]
    text = canonical_json(doc).decode()
    assert TOKEN not in text and PASSWORD not in text
    staged, unstaged = git_diffs(repo)
    assert doc["diff_sha256"] == hashlib.sha256(staged + unstaged).hexdigest()  # as git printed it
    # cut inside the token, before the `@` that marks it as credentials: the line is left out
    cut = staged.index(TOKEN.encode()) + 10
    doc = PythonGithubEnv(repo, diff_limit=cut).to_json()
    assert doc["diff_truncated"] is True and TOKEN[:10] not in canonical_json(doc).decode()
    assert doc["diff"]["staged"].endswith("+++ b/b.py\n@@ -0,0 +1 @@\n")


def test_edits_inside_a_submodule_are_in_the_diff(repo: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    git(lib, "init", "-q", "-b", "main")
    (lib / "lib.py").write_text("THRESHOLD = 0.5\n")
    git(lib, "add", "lib.py")
    git(lib, "commit", "-q", "-m", "lib")
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), "lib")
    git(repo, "commit", "-q", "-m", "vendor lib")
    (repo / "lib" / "lib.py").write_text("THRESHOLD = 0.9\n")
    doc = PythonGithubEnv(repo).to_json()
    assert doc["dirty"] is True
    assert "-THRESHOLD = 0.5\n+THRESHOLD = 0.9\n" in doc["diff"]["unstaged"]


def test_a_huge_diff_is_streamed_not_held_in_memory(repo: Path) -> None:
    (repo / "big.bin").write_bytes(os.urandom(4 << 20))
    git(repo, "add", "big.bin")
    git(repo, "commit", "-q", "-m", "big")
    PythonGithubEnv(repo)  # imports GitPython before memory is traced
    (repo / "big.bin").write_bytes(os.urandom(4 << 20))
    tracemalloc.start()
    try:
        doc = PythonGithubEnv(repo, diff_limit=1000).to_json()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _, whole = git_diffs(repo)
    assert (doc["diff_bytes"], doc["diff_truncated"]) == (len(whole), True)
    assert doc["diff_sha256"] == hashlib.sha256(whole).hexdigest()
    assert whole.decode().startswith(doc["diff"]["unstaged"]) and doc["diff"]["unstaged"]
    assert peak < len(whole) / 4, f"{peak} bytes allocated for a {len(whole)}-byte diff"


def test_a_diff_git_cannot_make_is_a_recorded_failure(repo: Path) -> None:
    blob = git(repo, "rev-parse", "HEAD:a.py").strip()
    (repo / "a.py").write_text("x = 7\n")
    git(repo, "add", "a.py")
    (repo / ".git" / "objects" / blob[:2] / blob[2:]).unlink()  # the committed a.py is lost
    error = PythonGithubEnv(repo).capture_error
    assert error.startswith(f"`git diff --cached` failed in {repo} (exit status 128): fatal: ")
    assert blob in error


def test_same_state_same_digest(repo: Path) -> None:
    (repo / "a.py").write_text("x = 5\n")
    (repo / "new.py").write_text("")
    first, second = PythonGithubEnv(repo), PythonGithubEnv(repo)
    assert digest(first.to_json()) == digest(second.to_json())
    assert first == second
    assert Process("p", {}, first).digest == Process("p", {}, second).digest
    (repo / "a.py").write_text("x = 6\n")
    assert digest(PythonGithubEnv(repo).to_json()) != digest(first.to_json())


def test_capture_time_is_an_attribute_not_json(repo: Path) -> None:
    env = PythonGithubEnv(repo)
    assert env.capture_ms > 0
    assert not any("ms" in key or "time" in key for key in env.to_json())


def test_env_is_frozen_and_json_is_a_copy(repo: Path) -> None:
    env = PythonGithubEnv(repo)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        env.path = "elsewhere"  # type: ignore[misc]
    env.to_json()["remotes"].clear()
    assert env.to_json()["remotes"]


def test_packages_listed_sorted_and_unique(repo: Path) -> None:
    packages = PythonGithubEnv(repo).to_json()["packages"]
    assert ["attrs", attrs.__version__] in packages
    assert len({tuple(p) for p in packages}) == len(packages)
    assert packages == sorted(packages, key=lambda p: (p[0].lower(), p[0], p[1]))


def test_packages_match_importlib_metadata() -> None:
    reference = {
        (dist.metadata["Name"], dist.version)
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"]
    }
    assert {tuple(pair) for pair in installed_packages()} == reference


def test_notebook_path_and_nothing_else_from_the_environment(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIRRUS_TEST_SECRET", TOKEN)
    doc = PythonGithubEnv(repo, environ={"JPY_SESSION_NAME": "/home/u/seg.ipynb"}).to_json()
    assert doc["notebook"] == "/home/u/seg.ipynb"
    assert TOKEN not in canonical_json(doc).decode()
    assert PythonGithubEnv(repo, environ={}).to_json()["notebook"] is None
    assert notebook_path({}, [{"__vsc_ipynb_file__": "/w/a.ipynb"}]) == "/w/a.ipynb"
    assert notebook_path({}, [{}]) is None


def test_process_accepts_the_env(repo: Path) -> None:
    env = PythonGithubEnv(".")  # provenance-toolbox's call shape
    process = Process("watershed", {"threshold": 0.3}, env, PythonGithubEnv(repo))
    assert process.env_documents()[1]["kind"] == "python-git"
    assert len(process.to_json()["envs"]) == 2


def test_import_does_not_import_git_or_docker() -> None:
    code = "import cirrus.codeenv, sys; print('git' in sys.modules, 'docker' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False False"


# --- Docker ------------------------------------------------------------------------------------


@pytest.fixture
def no_container(tmp_path: Path) -> dict:
    """Detection inputs with no sign of a container."""
    (tmp_path / "mountinfo").write_text("22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n")
    (tmp_path / "cgroup").write_text("0::/user.slice/session-1.scope\n")
    return {"mountinfo": tmp_path / "mountinfo", "cgroup": tmp_path / "cgroup", "environ": {}}


def in_container(tmp_path: Path, engine_url: str, container_id: str = CONTAINER) -> dict:
    """Detection inputs as seen from inside container `container_id` (via mountinfo)."""
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 8:1 / / rw - overlay overlay rw\n"
        f"560 550 8:1 /var/lib/docker/containers/{container_id}/hostname /etc/hostname rw - "
        "ext4 /dev/sda1 rw\n"
    )
    (tmp_path / "cgroup").write_text("0::/\n")
    return {
        "mountinfo": mountinfo,
        "cgroup": tmp_path / "cgroup",
        "environ": {"DOCKER_HOST": engine_url},
    }


def test_explicit_values_positional_need_no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    env = DockerEnv("lab/segmenter", "v1.2", IMAGE_ID)
    assert env.to_json() == {
        "kind": "docker",
        "image": "lab/segmenter",
        "tag": "v1.2",
        "image_id": IMAGE_ID,
        "repo_digests": None,
    }
    assert DockerEnv("lab/segmenter", "v1.2", IMAGE_ID, strict=True).to_json() == env.to_json()


def test_detected_via_mountinfo(fake_docker_engine, tmp_path: Path) -> None:
    fake_docker_engine.add_container(
        CONTAINER, "gcr.io/lab/seg:v3", IMAGE_ID, ("gcr.io/lab/seg@sha256:" + "9" * 64,)
    )
    env = DockerEnv(**in_container(tmp_path, fake_docker_engine.url))
    assert env.to_json() == {
        "kind": "docker",
        "image": "gcr.io/lab/seg",
        "tag": "v3",
        "image_id": IMAGE_ID,
        "repo_digests": ["gcr.io/lab/seg@sha256:" + "9" * 64],
    }
    assert env.container_id == CONTAINER
    assert f"/v{'1.47'}/containers/{CONTAINER}/json" in fake_docker_engine.requests


@pytest.mark.parametrize(
    "line", [f"12:pids:/docker/{CONTAINER}", f"0::/system.slice/docker-{CONTAINER}.scope"]
)
def test_detected_via_cgroup(fake_docker_engine, tmp_path: Path, line: str) -> None:
    fake_docker_engine.add_container(CONTAINER, "lab/seg:v4", IMAGE_ID)
    (tmp_path / "mountinfo").write_text("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n")
    (tmp_path / "cgroup").write_text(f"1:name=systemd:/\n{line}\n")
    env = DockerEnv(mountinfo=tmp_path / "mountinfo", cgroup=tmp_path / "cgroup", environ={})
    assert (env.image, env.tag, env.image_id, env.container_id) == (
        "lab/seg",
        "v4",
        IMAGE_ID,
        CONTAINER,
    )


def test_detected_via_hostname(fake_docker_engine, no_container: dict) -> None:
    fake_docker_engine.add_container(CONTAINER, "lab/seg", IMAGE_ID)
    no_container["environ"] = {"HOSTNAME": CONTAINER[:12], "DOCKER_HOST": fake_docker_engine.url}
    env = DockerEnv(**no_container)
    assert (env.image, env.tag, env.container_id) == ("lab/seg", "latest", CONTAINER)
    assert env.capture_error is None


def test_detected_pinned_by_digest_has_no_tag(fake_docker_engine, tmp_path: Path) -> None:
    pinned = "gcr.io/lab/seg@sha256:" + "9" * 64  # as Kubernetes, Cloud Run and Batch run images
    fake_docker_engine.add_container(CONTAINER, pinned, IMAGE_ID, (pinned,))
    env = DockerEnv(strict=True, **in_container(tmp_path, fake_docker_engine.url))
    assert (env.image, env.tag, env.image_id) == ("gcr.io/lab/seg", None, IMAGE_ID)
    assert env.repo_digests == (pinned,)


@pytest.mark.parametrize("mount_point", ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"])
def test_mountinfo_counts_only_the_containers_own_files(tmp_path: Path, mount_point: str) -> None:
    mountinfo = tmp_path / "mountinfo"
    other = "f" * 64
    host = (  # a Docker host: other containers' shm and files, mounted where they are
        "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n"
        f"812 22 0:97 / /var/lib/docker/containers/{other}/mounts/shm rw,nosuid shared:410 - "
        "tmpfs shm rw,size=65536k\n"
        f"813 22 259:2 /var/lib/docker/containers/{other}/hosts /var/lib/docker/containers/"
        f"{other}/hosts rw - ext4 /dev/nvme0n1p2 rw\n"
    )
    mountinfo.write_text(host)
    (tmp_path / "cgroup").write_text("0::/user.slice/user-1000.slice/session-3.scope\n")
    assert detect_container_id(mountinfo, tmp_path / "cgroup", {}) is None
    mountinfo.write_text(
        f"{host}560 550 8:1 /var/lib/docker/containers/{CONTAINER}/{mount_point[5:]} "
        f"{mount_point} rw,relatime - ext4 /dev/sda1 rw\n"
    )
    assert detect_container_id(mountinfo, tmp_path / "cgroup", {}) == CONTAINER


def test_hostname_that_is_not_an_id_is_ignored(no_container: dict) -> None:
    assert (
        detect_container_id(no_container["mountinfo"], no_container["cgroup"], {"HOSTNAME": "vm"})
        is None
    )
    assert detect_container_id("/nonexistent/a", "/nonexistent/b", {}) is None


def test_given_values_win_over_detected(fake_docker_engine, tmp_path: Path) -> None:
    fake_docker_engine.add_container(CONTAINER, "lab/seg:v5", IMAGE_ID)
    env = DockerEnv(tag="release-5", **in_container(tmp_path, fake_docker_engine.url))
    assert (env.image, env.tag, env.image_id) == ("lab/seg", "release-5", IMAGE_ID)


def test_container_id_is_not_in_the_json(fake_docker_engine, tmp_path: Path) -> None:
    other = "5e" * 32
    fake_docker_engine.add_container(CONTAINER, "lab/seg:v6", IMAGE_ID)
    fake_docker_engine.add_container(other, "lab/seg:v6", IMAGE_ID)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = DockerEnv(**in_container(tmp_path / "one", fake_docker_engine.url))
    second = DockerEnv(**in_container(tmp_path / "two", fake_docker_engine.url, other))
    assert first.container_id != second.container_id
    assert digest(first.to_json()) == digest(second.to_json())
    assert first == second


def test_engine_does_not_know_the_container(fake_docker_engine, tmp_path: Path) -> None:
    inputs = in_container(tmp_path, fake_docker_engine.url)
    env = DockerEnv(**inputs)
    assert "does not know container" in env.to_json()["capture_error"]
    assert CONTAINER in env.to_json()["capture_error"]
    assert env.to_json()["image"] is None
    with pytest.raises(CaptureError, match="does not know container"):
        DockerEnv(strict=True, **inputs)


def test_no_engine_reachable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = f"unix://{tmp_path}/missing.sock"
    monkeypatch.setenv("DOCKER_HOST", missing)
    inputs = in_container(tmp_path, missing)
    env = DockerEnv(**inputs)
    assert env.capture_error.startswith("no Docker engine reachable")
    assert env.to_json()["kind"] == "docker"
    with pytest.raises(CaptureError, match="no Docker engine reachable"):
        DockerEnv(None, None, None, False, True, **inputs)


def test_not_in_a_container(no_container: dict) -> None:
    env = DockerEnv(**no_container)
    assert "not running in a Docker container" in env.capture_error
    with pytest.raises(CaptureError, match="not running in a Docker container"):
        DockerEnv(strict=True, **no_container)


def test_explicit_image_and_tag_without_id_are_no_failure(
    no_container: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = DockerEnv(image="lab/ws", tag="v1", **no_container)
    assert env.to_json() == {
        "kind": "docker",
        "image": "lab/ws",
        "tag": "v1",
        "image_id": None,
        "repo_digests": None,
    }
    assert env.capture_error is None
    assert DockerEnv("lab/ws", "v1", strict=True, **no_container).to_json() == env.to_json()
    assert DockerEnv(image_id=IMAGE_ID, strict=True, **no_container).image_id == IMAGE_ID
    (tmp_path / "in").mkdir()  # inside a container whose engine cannot be reached
    unreachable = in_container(tmp_path / "in", f"unix://{tmp_path}/missing.sock")
    assert DockerEnv("lab/ws", "v1", strict=True, **unreachable).to_json() == env.to_json()
    assert capture_warnings(caplog) == []


def test_explicit_tag_is_completed_by_the_engine_when_it_can_be(
    fake_docker_engine, tmp_path: Path
) -> None:
    fake_docker_engine.add_container(CONTAINER, "lab/seg:v8", IMAGE_ID)
    env = DockerEnv("lab/ws", "v1", **in_container(tmp_path, fake_docker_engine.url))
    assert (env.image, env.tag, env.image_id, env.capture_error) == ("lab/ws", "v1", IMAGE_ID, None)


def test_nothing_given_nor_detected_warns_once(
    no_container: dict, caplog: pytest.LogCaptureFixture
) -> None:
    DockerEnv(**no_container)
    DockerEnv(**no_container)
    [warning] = capture_warnings(caplog)
    assert "not running in a Docker container" in warning.getMessage()
    assert str(no_container["mountinfo"]) in warning.getMessage()
    assert "Pass DockerEnv(image, tag)" in warning.getMessage()


@pytest.mark.parametrize("argument", ["image", "tag", "image_id"])
@pytest.mark.parametrize("value", [3, b"lab/ws", ["lab/ws"], "", "  "])
def test_image_tag_and_id_must_be_strings(argument: str, value: object, no_container: dict) -> None:
    with pytest.raises(InvalidInput, match=f"DockerEnv {argument} must be a non-empty string"):
        DockerEnv(**{argument: value}, **no_container)
    with pytest.raises(InvalidInput, match="pass it as text"):
        DockerEnv(*(value if name == argument else None for name in ("image", "tag", "image_id")))


def test_include_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    env = DockerEnv("lab/seg", "v1", IMAGE_ID, include_packages=True)
    assert ["attrs", attrs.__version__] in env.to_json()["packages"]
    assert "packages" not in DockerEnv("lab/seg", "v1", IMAGE_ID).to_json()
    assert Process("p", {}, env).env_documents()[0]["packages"]


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("lab/seg:v1", ("lab/seg", "v1")),
        ("lab/seg", ("lab/seg", "latest")),
        ("registry:5000/lab/seg", ("registry:5000/lab/seg", "latest")),
        ("registry:5000/lab/seg:v2", ("registry:5000/lab/seg", "v2")),
        ("lab/seg:v1@sha256:" + "1" * 64, ("lab/seg", "v1")),
        ("gcr.io/lab/seg@sha256:" + "1" * 64, ("gcr.io/lab/seg", None)),
        ("registry:5000/seg@sha256:" + "1" * 64, ("registry:5000/seg", None)),
        (IMAGE_ID, (None, None)),
    ],
)
def test_split_reference(reference: str, expected: tuple) -> None:
    assert split_reference(reference) == expected


@pytest.mark.skipif(shutil.which("docker") is None, reason="docker CLI not installed")
def test_real_docker_cli_inspects_the_fake_engine(fake_docker_engine, tmp_path: Path) -> None:
    fake_docker_engine.add_container(CONTAINER, "lab/seg:v7", IMAGE_ID)
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "docker-config")}
    done = subprocess.run(
        ["docker", "inspect", "--type", "container", CONTAINER[:12]],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    [container] = json.loads(done.stdout)
    assert (container["Id"], container["Image"]) == (CONTAINER, IMAGE_ID)
