"""Nothing leaked: no credential reaches any stored object.

Secrets are planted where a careless capture would pick them up (git remote URLs, the
environment, parameters); then a multi-volume session and a step run with a PythonGithubEnv and
a DockerEnv, and every file under every layer is scanned for them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import cirrus
from cirrus.errors import ParameterError
from cirrus.storage.paths import normalise_cloudpath
from tests.reliability import support

PLANTED = "PLANTED"  # every planted secret contains this, and nothing else stored does
REMOTES = {
    "origin": "https://ghp_PLANTEDtoken0123456789@github.com/lab/pipeline.git",
    "upstream": "https://alice:PLANTEDpassword@github.com/lab/pipeline.git",
    "query": "https://git.lab.org/pipeline.git?private_token=PLANTEDquery#PLANTEDfragment",
    "ssh": "ssh://git:PLANTEDsshpassword@git.lab.org/pipeline.git",
    "oauth": "https://oauth2:PLANTEDgitlab@gitlab.lab.org/pipeline.git",
    "scp": "alice:PLANTEDscp@git.lab.org:lab/pipeline.git",
    "unencoded": "https://alice:PLANTED/pass,word@github.com/lab/pipeline.git",
}
STRIPPED = {
    "origin": "https://github.com/lab/pipeline.git",
    "upstream": "https://github.com/lab/pipeline.git",
    "query": "https://git.lab.org/pipeline.git",
    "ssh": "ssh://git@git.lab.org/pipeline.git",
    "oauth": "https://gitlab.lab.org/pipeline.git",
    "scp": "alice@git.lab.org:lab/pipeline.git",
    "unencoded": "https://github.com/lab/pipeline.git",
}
SIGNED_SOURCE = "https://storage.googleapis.com/lab/aff/info?X-Goog-Signature=PLANTEDgoog&alt=media"
SOURCES = [
    "gs://lab/aff",
    SIGNED_SOURCE,
    "s3://bob:PLANTEDs3@lab/aff",
    "s3://AKIA:PLANTED/s3,k@lab/seg",
]
PARAMETERS = {
    "threshold": 0.4,
    "mirror": {"urls": ["https://u:PLANTEDpw@mirror.lab.org/x?X-Amz-Signature=PLANTEDsig"]},
}
ENVIRONMENT = {
    "AWS_SECRET_ACCESS_KEY": "PLANTED-aws-secret",
    "AWS_ACCESS_KEY_ID": "AKIAPLANTED",
    "GITHUB_TOKEN": "ghp_PLANTEDgithub",
    "GOOGLE_APPLICATION_CREDENTIALS": "/secrets/PLANTED.json",
    "JUPYTERHUB_API_TOKEN": "PLANTED-hub",
    "LAB_DB_PASSWORD": "PLANTED-db",
    "MY_UNRELATED_SETTING": "PLANTED-unrelated",
}
PRIVATE_DEPENDENCY = "git+https://alice:ghp_PLANTEDrequirement@github.com/lab/private.git"
MOTIVATION = "secrets scan of https://bob:PLANTEDmotivation@lab.org/run?n=1"
CONTAINER = "c" * 64
IMAGE_ID = "sha256:" + "d" * 64


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path) -> Path:
    """A real git repository with credentials in every remote, a commit and a dirty file."""
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "t@lab.org")
    git(path, "config", "user.name", "t")
    (path / "step.py").write_text("THRESHOLD = 0.3\n")
    git(path, "add", "step.py")
    git(path, "commit", "-q", "-m", "first")
    for name, url in REMOTES.items():
        git(path, "remote", "add", name, url)
    (path / "step.py").write_text("THRESHOLD = 0.4\n")  # dirty: the diff is recorded
    # a private dependency: its diff line starts `+git+https://...`
    (path / "requirements.txt").write_text(f"{PRIVATE_DEPENDENCY}\n")
    git(path, "add", "requirements.txt")
    return path


@pytest.fixture
def planted(monkeypatch):
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/alice/analysis.ipynb")  # the one read
    monkeypatch.setenv("HOSTNAME", CONTAINER[:12])  # how DockerEnv finds its container


def test_parameters_that_look_like_secrets_are_refused_unless_allowed():
    keys = ["password", "db_password", "aws_secret_access_key", "api_key", "token", "key"]
    keys += ["Authorization", "auth", "db_pwd", "passphrase", "creds", "cookie", "jwt"]
    for key in keys:
        with pytest.raises(ParameterError, match=f"parameters.{key}: looks like a secret"):
            cirrus.Process("p", {key: "PLANTED"})
    with pytest.raises(ParameterError, match=r"parameters.db.credentials: looks like a secret"):
        cirrus.Process("p", {"db": {"credentials": {"user": "u"}}})
    allowed = cirrus.Process("p", {"token_budget": 5, "key": "z"}, allow_secrets=("key",))
    assert allowed.parameters == {"key": "z", "token_budget": 5}
    # numbers and flags under such names are not secrets
    assert cirrus.Process("p", {"max_tokens": 512, "use_token": True}).parameters


def test_no_planted_secret_reaches_any_stored_object(tmp_path, repo, planted, fake_docker_engine):
    fake_docker_engine.add_container(
        CONTAINER, "lab/segmenter:1.2", IMAGE_ID, ("lab/segmenter@sha256:" + "e" * 64,)
    )
    python_env = cirrus.PythonGithubEnv(repo, strict=True)
    docker_env = cirrus.DockerEnv(strict=True, mountinfo="/nonexistent", cgroup="/nonexistent")
    assert docker_env.image == "lab/segmenter" and docker_env.image_id == IMAGE_ID
    assert python_env.to_json()["remotes"] == STRIPPED
    assert "THRESHOLD = 0.4" in python_env.to_json()["diff"]["unstaged"]
    process = cirrus.Process("segment", PARAMETERS, python_env, docker_env)
    assert process.parameters["mirror"]["urls"] == [
        "https://mirror.lab.org/x?X-Amz-Signature=REDACTED"
    ]

    paths = [normalise_cloudpath(f"file://{tmp_path}/layers/v{i}") for i in range(2)]
    for path in paths:
        support.make_layer(path)
    with cirrus.session(SOURCES, MOTIVATION, process) as s:
        for i, path in enumerate(paths):
            support.paint(s, path, 0, i + 1)
        s.result("done; see https://h.lab.org/report?X-Goog-Signature=PLANTEDresult")
    with pytest.raises(RuntimeError), cirrus.session(SOURCES, MOTIVATION, process) as s:
        support.paint(s, paths[0], 2, 3)
        raise RuntimeError("GET https://h.lab.org/aff?X-Amz-Signature=PLANTEDerror (403)")
    s = cirrus.session(SOURCES, MOTIVATION, process)
    support.paint(s, paths[1], 2, 3)
    s.abort("gave up on https://carol:PLANTEDabort@h.lab.org/aff")
    assert [r.record.error["message"] for r in cirrus.history(paths[0])[-1:]] == [
        "GET https://h.lab.org/aff?X-Amz-Signature=REDACTED (403)"
    ]
    assert cirrus.history(paths[0])[0].record.sources == (
        "gs://lab/aff",
        SIGNED_SOURCE.replace("PLANTEDgoog", "REDACTED"),
        "s3://lab/aff",
        "s3://lab/seg",
    )
    step = cirrus.step(SOURCES, MOTIVATION, process, paths)
    for i in range(2):
        with cirrus.join(step.token, task=f"t{i}") as t:
            support.paint(t, paths[i], 1 + i, 7)
    step.finish()
    cirrus.add_note(paths[0], "a note")

    stored = [f for f in (tmp_path / "layers").rglob("*") if f.is_file()]
    provenance = [f for f in stored if "provenance" in f.parts[-1] or "provenance.d" in f.parts]
    assert len(provenance) >= 10  # summaries, records, envs, step manifest, fragments
    for file in stored:
        data = file.read_bytes()
        assert PLANTED.encode() not in data, (file, data[:2000])
        for value in ENVIRONMENT.values():
            assert value.encode() not in data, (file, value)
    # what is meant to be there is there
    everything = b"".join(f.read_bytes() for f in provenance)
    assert b"https://github.com/lab/pipeline.git" in everything
    assert b"+git+https://github.com/lab/private.git" in everything  # the staged diff
    assert b"https://lab.org/run?n=1" in everything  # the motivation, its URL without userinfo
    assert b"lab/segmenter" in everything and IMAGE_ID.encode() in everything
    assert b"/home/alice/analysis.ipynb" in everything
    assert CONTAINER.encode() not in everything  # the container id is not part of the env
