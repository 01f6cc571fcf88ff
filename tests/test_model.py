"""The provenance model: parameters as canonical JSON, refused values, notes and process digests."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import subprocess
import sys
from configparser import ConfigParser
from types import SimpleNamespace
from typing import Any

import attrs
import numpy as np
import pytest

from cirrus.canonical import canonical_json, digest
from cirrus.errors import InvalidInput, ParameterError
from cirrus.model import Note, Process


@attrs.frozen
class StaticEnv:
    """A code environment with fixed JSON, standing in for PythonGithubEnv/DockerEnv."""

    document: dict[str, Any] = attrs.field(hash=False)

    def to_json(self) -> dict[str, Any]:
        return dict(self.document)


ENV = StaticEnv({"kind": "test", "commit": "abc"})


@dataclasses.dataclass
class DataParams:
    threshold: float
    size: tuple[int, int, int]
    names: list[str] = dataclasses.field(default_factory=lambda: ["a", "b"])


@attrs.define
class Inner:
    depth: int


@attrs.define
class AttrsParams:
    threshold: float
    inner: Inner


# --- parameter types ---------------------------------------------------------------------------


def test_dict_parameters_are_kept() -> None:
    process = Process("p", {"a": 1, "b": {"c": [1, 2.5, None, True, "x"]}})
    assert process.parameters == {"a": 1, "b": {"c": [1, 2.5, None, True, "x"]}}


def test_simple_namespace() -> None:
    assert Process("p", SimpleNamespace(a=1, b="two")).parameters == {"a": 1, "b": "two"}


def test_configparser_sections_become_nested_dicts() -> None:
    config = ConfigParser()
    config.read_string("[run]\nthreshold = 0.3\nmip = 2\n[paths]\nout = gs://lab/seg\n")
    assert Process("p", config).parameters == {
        "run": {"threshold": "0.3", "mip": "2"},
        "paths": {"out": "gs://lab/seg"},
    }


def test_configparser_defaults_are_kept_apart_and_inherited() -> None:
    config = ConfigParser()
    config.read_string("[DEFAULT]\nmip = 1\n[run]\nthreshold = 0.3\n")
    assert Process("p", config).parameters == {
        "DEFAULT": {"mip": "1"},
        "run": {"threshold": "0.3", "mip": "1"},
    }


def test_dataclass_with_tuples_as_lists() -> None:
    params = Process("p", DataParams(0.5, (8, 8, 40))).parameters
    assert params == {"threshold": 0.5, "size": [8, 8, 40], "names": ["a", "b"]}
    assert canonical_json(params) == b'{"names":["a","b"],"size":[8,8,40],"threshold":0.5}'


def test_attrs_instance_nested() -> None:
    params = Process("p", AttrsParams(0.5, Inner(3))).parameters
    assert params == {"threshold": 0.5, "inner": {"depth": 3}}


def test_tuples_become_lists() -> None:
    assert Process("p", {"t": (1, (2, 3))}).parameters == {"t": [1, [2, 3]]}
    assert Process("p", {"t": (1, 2)}).digest == Process("p", {"t": [1, 2]}).digest


def test_no_parameters_is_an_empty_dict() -> None:
    assert Process("p").parameters == {} == Process("p", None).parameters


@pytest.mark.parametrize("parameters", [[1, 2], "a=1", 3, object()])
def test_unsupported_parameter_containers(parameters: Any) -> None:
    with pytest.raises(ParameterError, match="not supported") as caught:
        Process("p", parameters)
    assert caught.value.path == "parameters"


# --- refused values, each named by its key path ---------------------------------------------------


@pytest.mark.parametrize(
    ("value", "path", "problem"),
    [
        ({"a": {"b": [0, 1, {3}]}}, "parameters.a.b[2]", "set"),
        ({"a": {"b": [0, 1, frozenset()]}}, "parameters.a.b[2]", "frozenset"),
        ({"a": np.zeros(3)}, "parameters.a", "ndarray"),
        ({"a": [object()]}, "parameters.a[0]", "object"),
        ({"a": {"b": math.nan}}, "parameters.a.b", "not finite"),
        ({"a": {"b": [math.inf]}}, "parameters.a.b[0]", "not finite"),
        ({"a": -math.inf}, "parameters.a", "not finite"),
        ({"a": {1: "x"}}, "parameters.a[1]", "keys must be strings"),
        ({("t",): 1}, "parameters[('t',)]", "keys must be strings"),
        ({"a": b"raw"}, "parameters.a", "bytes"),
        ({"a": "\udcff"}, "parameters.a", "not valid Unicode"),
    ],
)
def test_refused_values_name_the_key_path(value: Any, path: str, problem: str) -> None:
    with pytest.raises(ParameterError, match=problem) as caught:
        Process("p", value)
    assert caught.value.path == path
    assert path in str(caught.value)


def test_refused_inside_a_dataclass() -> None:
    @dataclasses.dataclass
    class Bad:
        values: set

    with pytest.raises(ParameterError) as caught:
        Process("p", Bad({1}))
    assert caught.value.path == "parameters.values"


# --- secrets -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["password", "db_passwd", "aws_secret_access_key", "github_token", "token", "api_key",
     "apiKey", "private-key", "credentials", "key"],
)  # fmt: skip
def test_secret_looking_keys_are_refused(key: str) -> None:
    with pytest.raises(ParameterError, match="looks like a secret") as caught:
        Process("p", {"db": {key: "hunter2"}})
    assert caught.value.path == f"parameters.db.{key}"


@pytest.mark.parametrize(
    "params",
    [
        {"monkey": "george", "keyboard": "us", "tokenizer": "bert", "max_tokens": 512},
        {"use_token": True, "token_ttl": 3600, "password": None, "secret": ""},
    ],
)
def test_harmless_keys_and_values_pass(params: dict) -> None:
    assert Process("p", params).parameters == params


def test_allow_secrets_lets_a_named_key_through() -> None:
    process = Process("p", {"key": "z-axis"}, allow_secrets=("key",))
    assert process.parameters == {"key": "z-axis"}
    with pytest.raises(ParameterError):
        Process("p", {"key": "z-axis", "token": "t"}, allow_secrets=("key",))


SIGNED = (
    "https://b.s3.amazonaws.com/seg/info?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAPLANTED%2F20240101%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Signature=PLANTED0123abcd"
)


def test_urls_in_parameter_values_lose_their_credentials() -> None:
    params = {
        "url": "https://u:PLANTEDpw@host/x",
        "inputs": ["gs://lab/aff", SIGNED, {"mirror": "https://PLANTEDtok@host/y?page=2"}],
        "nested": {
            "gcs": "https://storage.googleapis.com/b/o?X-Goog-Signature=PLANTED&X-Goog-Credential="
            "sa%40PLANTED&alt=media",
            "sas": "https://a.blob.core.windows.net/c/b?sv=2022&sig=PLANTED&se=2030",
            "api": ["https://h/v1?token=PLANTED&access_token=PLANTED&Signature=PLANTED&n=5"],
        },
        "command": "igneous mesh --src precomputed://https://u:PLANTED@h/seg --mip 2",
        "threshold": 0.3,
    }
    process = Process("p", params)
    assert "PLANTED" not in canonical_json(process.to_json()).decode()
    assert process.parameters == {
        "url": "https://host/x",
        "inputs": [
            "gs://lab/aff",
            "https://b.s3.amazonaws.com/seg/info?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED",
            {"mirror": "https://host/y?page=2"},
        ],
        "nested": {
            "gcs": "https://storage.googleapis.com/b/o?X-Goog-Signature=REDACTED"
            "&X-Goog-Credential=REDACTED&alt=media",
            "sas": "https://a.blob.core.windows.net/c/b?sv=2022&sig=REDACTED&se=2030",
            "api": ["https://h/v1?token=REDACTED&access_token=REDACTED&Signature=REDACTED&n=5"],
        },
        "command": "igneous mesh --src precomputed://https://h/seg --mip 2",
        "threshold": 0.3,
    }
    # a fresh signature on the same object is the same process
    assert Process("p", {"url": SIGNED}).digest == Process("p", {"url": SIGNED + "9"}).digest


def test_urls_without_credentials_are_kept_exactly() -> None:
    params = {"src": "gs://lab/aff", "q": "https://h//a/?x=%20&tokenizer=bert#frag", "n": "a://"}
    assert Process("p", params).parameters == params


def test_allow_secrets_keeps_a_url_as_given() -> None:
    url = "https://h/x?token=public-page-cursor"
    assert Process("p", {"cursor_url": url}, allow_secrets=("cursor_url",)).parameters == {
        "cursor_url": url
    }
    assert Process("p", {"cursor_url": url}).parameters == {
        "cursor_url": "https://h/x?token=REDACTED"
    }


# --- canonical JSON and digests ------------------------------------------------------------------


def test_same_digest_across_dict_orderings() -> None:
    one = Process("p", {"a": 1, "b": {"x": 1, "y": [1, 2]}}, ENV)
    two = Process("p", {"b": {"y": [1, 2], "x": 1}, "a": 1}, ENV)
    assert one.digest == two.digest
    assert canonical_json(one.to_json()) == canonical_json(two.to_json())


def test_same_digest_across_processes() -> None:
    params = {"b": [1.5, "é", None], "a": {"z": True, "y": 10**20}}
    code = (
        "import json, sys; from cirrus.model import Process; "
        "print(Process('p', json.loads(sys.argv[1])).digest)"
    )
    # a different hash seed changes dict/set iteration in the child; the digest must not change
    runs = {
        subprocess.run(
            [sys.executable, "-c", code, json.dumps(params)],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert runs == {Process("p", params).digest}


def test_canonical_json_shape() -> None:
    assert canonical_json({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'.encode()
    assert digest({"a": 1}) == digest({"a": 1}) != digest({"a": 1.0})


def test_process_digest_changes_with_description_parameters_or_env() -> None:
    base = Process("p", {"a": 1}, ENV)
    assert (
        Process("p", {"a": 1}, StaticEnv({"kind": "test", "commit": "abc"})).digest == base.digest
    )
    assert Process("q", {"a": 1}, ENV).digest != base.digest
    assert Process("p", {"a": 2}, ENV).digest != base.digest
    assert (
        Process("p", {"a": 1}, StaticEnv({"kind": "test", "commit": "def"})).digest != base.digest
    )
    assert Process("p", {"a": 1}).digest != base.digest
    assert base.to_json()["envs"] == [digest({"kind": "test", "commit": "abc"})]


def test_process_description_required() -> None:
    for description in ("", "   ", None, 3):
        with pytest.raises(InvalidInput, match="description"):
            Process(description, {})  # type: ignore[arg-type]


def test_code_envs_are_checked_when_the_process_is_made() -> None:
    with pytest.raises(InvalidInput, match="not one"):
        Process("p", {}, "not an env")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match='"kind"'):
        Process("p", {}, StaticEnv({"commit": "abc"}))
    with pytest.raises(ParameterError) as caught:
        Process("p", {}, ENV, StaticEnv({"kind": "test", "files": {"a"}}))
    assert caught.value.path == "code_envs[1].files"


# --- notes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["motivation", "result", "generic"])
def test_note_kinds(kind: str) -> None:
    assert Note(kind, "text").to_json()["kind"] == kind


def test_unknown_note_kind_refused() -> None:
    with pytest.raises(ValueError):
        Note("opinion", "text")


def test_note_text_kept_exactly() -> None:
    text = "2024-01-01;RESULT;not a field\n  second line; with ';' \t\n"
    note = Note("result", text)
    assert note.to_json()["text"] == text
    assert Note.from_json(json.loads(canonical_json(note.to_json()))) == note


@pytest.mark.parametrize("text", ["", "   \n", None, 3])
def test_empty_note_text_refused(text: Any) -> None:
    with pytest.raises(InvalidInput):
        Note("generic", text)


def test_note_times_are_utc() -> None:
    stamp = Note("generic", "x").to_json()["time"]
    assert stamp.endswith("+00:00")
    assert dt.datetime.fromisoformat(stamp).tzinfo == dt.timezone.utc
    plus_two = dt.timezone(dt.timedelta(hours=2))
    note = Note("generic", "x", dt.datetime(2024, 5, 1, 14, 0, tzinfo=plus_two))
    assert note.to_json()["time"] == "2024-05-01T12:00:00.000000+00:00"


def test_naive_note_time_refused_at_construction() -> None:
    with pytest.raises(InvalidInput, match="timezone"):
        Note("generic", "x", dt.datetime(2024, 5, 1))
