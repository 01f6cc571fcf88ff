"""The provenance model: parameters as canonical JSON, refused values, notes and process digests."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import enum
import json
import math
import subprocess
import sys
from configparser import ConfigParser
from pathlib import Path, PurePosixPath, PureWindowsPath
from types import MappingProxyType, SimpleNamespace
from typing import Any

import attrs
import numpy as np
import pytest

from cirrus.canonical import canonical_json, digest
from cirrus.errors import InvalidInput, ParameterError
from cirrus.model import Note, Process
from tests.session_support import chunk_files, chunk_of, make_layer, provenance_keys


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


def test_a_configparser_section_records_the_values_the_code_reads() -> None:
    """As before numpy and nested containers were accepted: interpolated, so digests hold."""
    config = ConfigParser(default_section="common")
    config.read_string("[common]\nroot = gs://lab\n[paths]\nseg = %(root)s/seg\npct = 50%%\n")
    assert Process("p", config["paths"]).parameters == {
        "root": "gs://lab",
        "seg": "gs://lab/seg",
        "pct": "50%",
    }
    assert Process("p", config).parameters["DEFAULT"] == {"root": "gs://lab"}


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


# --- values that are converted: numpy scalars, nested containers, paths, enums, dates ----------


class Mode(enum.Enum):
    FAST = "fast"
    CUBE = (8, 8, 40)  # an Enum's value is normalised in turn: the tuple becomes a list


class Opaque:
    """An object cirrus cannot see into."""


@dataclasses.dataclass
class Node:
    name: str
    child: Any = None


def same_process_as_plain(parameters: Any, plain: dict[str, Any]) -> None:
    """`parameters` are recorded as `plain`, in plain JSON types, and dedupe with it."""
    process = Process("p", parameters, ENV)
    assert process.parameters == plain
    assert canonical_json(process.parameters) == canonical_json(plain)
    assert json.loads(canonical_json(process.parameters)) == process.parameters  # plain types
    assert process.digest == Process("p", plain, ENV).digest


@pytest.mark.parametrize(
    ("value", "plain"),
    [
        (np.int64(7), 7),
        (np.int32(-3), -3),
        (np.uint8(255), 255),
        (np.uint64(2**64 - 1), 2**64 - 1),
        (np.float32(0.5), 0.5),
        (np.float32(0.1), 0.10000000149011612),  # the float32's exact value, as float() gives
        (np.float16(1.5), 1.5),
        (np.bool_(True), True),
        (np.bool_(False), False),
        (np.str_("x"), "x"),
        (np.asarray(2.5), 2.5),  # a 0-d array is a scalar
        (np.asarray(4, dtype=np.int16), 4),
    ],
    ids=["int64", "int32", "uint8", "uint64", "float32", "float32-0.1", "float16", "bool-true",
         "bool-false", "str_", "0d-float", "0d-int16"],
)  # fmt: skip
def test_numpy_scalars_are_their_python_value(value: Any, plain: Any) -> None:
    same_process_as_plain({"v": value, "in": [value]}, {"v": plain, "in": [plain]})
    assert type(Process("p", {"v": value}).parameters["v"]) is type(plain)


def test_numpy_float64_and_python_float_are_one_process() -> None:
    arrays = np.array([[0.3, 2.0]]), np.array([8, 8, 40])
    params = {"threshold": arrays[0][0, 0], "size": tuple(arrays[1]), "flip": arrays[1][0] > 4}
    same_process_as_plain(params, {"threshold": 0.3, "size": [8, 8, 40], "flip": True})


@pytest.mark.parametrize(
    "value", [np.float32("nan"), np.float16("inf"), np.float32("-inf"), np.asarray(np.nan)]
)
def test_numpy_nan_and_infinity_are_still_refused(value: Any) -> None:
    with pytest.raises(ParameterError, match="not finite; JSON has no NaN") as caught:
        Process("p", {"t": [1.0, value]})
    assert caught.value.path == "parameters.t[1]"


def test_argparse_namespace_is_accepted_like_a_simple_namespace() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threshold", type=float, default=0.3)
    parser.add_argument("--mip", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/data/seg"))
    args = parser.parse_args(["--mip", "3"])
    same_process_as_plain(args, {"threshold": 0.3, "mip": 3, "out": "/data/seg"})


def test_containers_are_accepted_nested_at_any_depth() -> None:
    config = ConfigParser()
    config.read_string("[DEFAULT]\nmip = 1\n[run]\nthreshold = 0.3\nsuffix = 50%\n")
    params = {
        "run": SimpleNamespace(threshold=0.3, inner=SimpleNamespace(depth=2)),
        "cli": argparse.Namespace(mip=2, model=DataParams(0.5, (8, 8, 40))),
        "blocks": [[AttrsParams(0.1, Inner(3))], (Inner(4),)],
        "config": config,
        "section": config["run"],
        "frozen": MappingProxyType({"b": 1, "a": [SimpleNamespace(z=None)]}),
    }
    same_process_as_plain(
        params,
        {
            "run": {"threshold": 0.3, "inner": {"depth": 2}},
            "cli": {"mip": 2, "model": {"threshold": 0.5, "size": [8, 8, 40], "names": ["a", "b"]}},
            "blocks": [[{"threshold": 0.1, "inner": {"depth": 3}}], [{"depth": 4}]],
            "config": {
                "DEFAULT": {"mip": "1"},
                "run": {"threshold": "0.3", "suffix": "50%", "mip": "1"},
            },
            "section": {"threshold": "0.3", "suffix": "50%", "mip": "1"},
            "frozen": {"a": [{"z": None}], "b": 1},
        },
    )


def test_paths_enums_and_dates_become_strings_and_values() -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    params = {
        "out": Path("/data/seg"),
        "relative": PurePosixPath("seg/mip1"),
        "windows": PureWindowsPath("C:\\data\\seg"),
        "mode": Mode.FAST,
        "shape": Mode.CUBE,
        "modes": {"first": Mode.FAST},
        "day": dt.date(2024, 5, 1),
        "naive": dt.datetime(2024, 5, 1, 14, 30),  # kept as given: no timezone is assumed
        "aware": dt.datetime(2024, 5, 1, 14, 30, 0, 250, tzinfo=plus_two),  # keeps its offset
    }
    same_process_as_plain(
        params,
        {
            "out": "/data/seg",
            "relative": "seg/mip1",
            "windows": "C:/data/seg",
            "mode": "fast",
            "shape": [8, 8, 40],
            "modes": {"first": "fast"},
            "day": "2024-05-01",
            "naive": "2024-05-01T14:30:00",
            "aware": "2024-05-01T14:30:00.000250+02:00",
        },
    )


def test_secret_keys_are_refused_inside_nested_containers() -> None:
    nested = {"db": argparse.Namespace(host="h", conf=SimpleNamespace(password="hunter2"))}
    with pytest.raises(ParameterError, match="looks like a secret") as caught:
        Process("p", nested)
    assert caught.value.path == "parameters.db.conf.password"

    @dataclasses.dataclass
    class Service:
        url: str
        api_key: str

    with pytest.raises(ParameterError, match="looks like a secret") as caught:
        Process("p", {"services": [Service("https://h", "k-123")]})
    assert caught.value.path == "parameters.services[0].api_key"
    allowed = Process("p", {"db": SimpleNamespace(token="public")}, allow_secrets=("token",))
    assert allowed.parameters == {"db": {"token": "public"}}


def test_a_container_that_contains_itself_fails_cleanly() -> None:
    node = Node("loop")
    node.child = node
    with pytest.raises(ParameterError, match="nested more than 100 levels deep"):
        Process("p", node)
    with pytest.raises(ParameterError, match="nested more than 100 levels deep"):
        Process("p", {"graph": SimpleNamespace(root=node)})


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (Opaque(), [f"value of type {__name__}.Opaque is not JSON", "convert it to str"]),
        (np.datetime64("2024-05-01"), ["numpy.datetime64", "str(value), an ISO 8601 string"]),
        (np.timedelta64(5, "s"), ["numpy.timedelta64", "numpy.timedelta64(1, 's')"]),
        (np.complex64(1j), ["numpy.complex64", "real and imaginary parts"]),
        (np.longdouble(1), ["numpy.longdouble", "float()"]),
        (np.zeros(3), ["ndarray", "use .tolist()", "shape (3,) and dtype float64"]),
        (dt.time(14, 30), ["datetime.time", ".isoformat()"]),
        (dt.timedelta(seconds=5), ["datetime.timedelta", ".total_seconds()"]),
    ],
    ids=["object", "datetime64", "timedelta64", "complex64", "longdouble", "ndarray", "time",
         "timedelta"],
)  # fmt: skip
def test_values_still_refused_name_their_type_and_fix_before_any_write(
    tmp_path: Any, value: Any, words: list[str]
) -> None:
    import cirrus

    with pytest.raises(ParameterError) as caught:
        Process("p", {"run": {"names": [value]}})
    assert caught.value.path == "parameters.run.names[0]"
    for word in words:
        assert word in str(caught.value)

    # inside containers too, and from a session: before any data or provenance is written
    path = f"file://{tmp_path}/layer"
    make_layer(path)
    parameters = {"run": SimpleNamespace(model=DataParams(0.5, (1, 1, 1), names=[value]))}
    with (
        pytest.raises(ParameterError) as raised,
        cirrus.session(["src"], "why", cirrus.Process("step", parameters)) as s,
    ):
        s.volume(path)[0:64, 0:64, 0:64] = chunk_of(1)
    assert raised.value.path == "parameters.run.model.names[0]"
    for word in words:
        assert word in str(raised.value)
    assert provenance_keys(path) == []
    assert chunk_files(path) == []


def test_converted_parameters_are_recorded_as_plain_json(tmp_path: Any) -> None:
    import cirrus

    path = f"file://{tmp_path}/layer"
    make_layer(path)
    args = argparse.Namespace(
        threshold=np.float32(0.25),
        size=tuple(np.array([8, 8, 40])),
        out=Path("/data/seg"),
        mode=Mode.FAST,
        day=dt.date(2024, 5, 1),
        model=SimpleNamespace(mip=np.uint8(1), flip=np.bool_(False)),
    )
    plain = {
        "threshold": 0.25,
        "size": [8, 8, 40],
        "out": "/data/seg",
        "mode": "fast",
        "day": "2024-05-01",
        "model": {"mip": 1, "flip": False},
    }
    with cirrus.session(["src"], "why", cirrus.Process("step", args)) as s:
        s.volume(path)[0:64, 0:64, 0:64] = chunk_of(1)
    (stored,) = cirrus.history(path)
    assert stored.record.process["parameters"] == plain
    assert stored.record.process["digest"] == cirrus.Process("step", plain).digest


# --- secrets -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["password", "db_passwd", "aws_secret_access_key", "github_token", "token", "api_key",
     "apiKey", "private-key", "credentials", "key", "secretKey", "client_secret",
     "Authorization", "auth", "x-auth", "db_pwd", "passphrase", "creds", "cookie", "jwt",
     "bearer", "X-Amz-Signature", "pass", "db_pass", "auth_header",
     "authHeader", "connection_string", "conn_str"],
)  # fmt: skip
def test_secret_looking_keys_are_refused(key: str) -> None:
    with pytest.raises(ParameterError, match="looks like a secret") as caught:
        Process("p", {"db": {key: "hunter2"}})
    assert caught.value.path == f"parameters.db.{key}"


@pytest.mark.parametrize(
    "params",
    [
        {"monkey": "george", "keyboard": "us", "tokenizer": "bert", "max_tokens": 512},
        {"secretary": "bob", "secretaries": "alice, bob"},
        {"author": "ann", "authority": "lab", "pwd": "/data/run1", "signature_version": "s3v4"},
        {"passes": 3, "bypass": "cache", "compass": "north", "pass": 2},
        {"doc": "-----BEGIN PUBLIC KEY-----", "constr": "x"},
        {"use_token": True, "token_ttl": 3600, "password": None, "secret": ""},
    ],
)
def test_harmless_keys_and_values_pass(params: dict) -> None:
    assert Process("p", params).parameters == params


PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"


@pytest.mark.parametrize(
    "params",
    [
        {"service_account": {"type": "service_account", "client_email": "a@b", "key_pem": PEM}},
        {"inputs": ["gs://lab/x", PEM.replace("BEGIN PRIVATE", "BEGIN RSA PRIVATE")]},
        {"deploy": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXkt..."},
    ],
)
def test_a_private_key_pasted_as_a_value_is_refused_whatever_its_name(params: dict) -> None:
    with pytest.raises(ParameterError, match="holds a private key"):
        Process("p", params)
    (key,) = params
    assert Process("p", params, allow_secrets=(key,)).parameters == params  # vouched for


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


def test_a_process_of_another_library_is_named_with_its_module() -> None:
    import cirrus
    from cirrus.errors import InvalidInput

    class Process:  # provenance-toolbox's is also called Process
        pass

    with pytest.raises(InvalidInput, match=r"got tests\.test_model\..*Process; build one"):
        cirrus.session(["src"], "why", Process())


def test_a_code_environment_class_instead_of_one_is_refused_by_name() -> None:
    import cirrus

    with pytest.raises(InvalidInput, match="is not one; pass one made by calling"):
        Process("p", {}, cirrus.PythonGithubEnv)


def test_credentials_in_a_description_or_note_are_taken_out() -> None:
    process = Process("segment https://u:T1@h.lab.org/aff", {})
    assert process.description == "segment https://h.lab.org/aff"
    note = Note("result", "see https://h/r?X-Goog-Signature=T2&alt=media")
    assert note.text == "see https://h/r?X-Goog-Signature=REDACTED&alt=media"
