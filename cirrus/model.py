"""The provenance model: processes, notes and records, each with a canonical JSON form and digest.

The model knows nothing of storage. Everything here is a frozen attrs class whose identity is the
sha256 of its canonical JSON.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from cirrus.canonical import check_text, container_as_dict, digest, normalise_json, type_name
from cirrus.errors import InvalidInput, ParameterError
from cirrus.redact import PRIVATE_KEY_BLOCK, SECRET_NAME, redact_url

NOTE_KINDS = ("motivation", "result", "generic")
RECORD_SCHEMA = "cirrus.record/1"


@runtime_checkable
class CodeEnv(Protocol):
    """What a code environment gives a process: a JSON description with a `kind` field."""

    def to_json(self) -> dict[str, Any]: ...


INTERRUPTED = "Interrupted"  # error type of a record `cirrus recover` wrote for a dead session


def is_interrupted(record: Mapping[str, Any]) -> bool:
    """Whether a record (JSON) is one `recover` wrote for a session that died while staging."""
    writes = record.get("writes") or {}
    return (
        record.get("status") == "failed"
        and (record.get("error") or {}).get("type") == INTERRUPTED
        and not writes.get("mips")
        and not writes.get("operations")
    )


def superseded_unpublished(record: Mapping[str, Any], ended_with: list[Mapping[str, Any]]) -> bool:
    """Whether a staged record stays unpublished because its session already ended on the same
    volume with `ended_with` (its records published there, or being published).

    A session ends once per volume: a record staged by a commit that failed before the session
    was aborted stays unpublished beside the `failed` one, and so does an interrupted record
    that lost a race to the session's own (`cirrus.abandon`). A real record is still published
    beside an interrupted one, made without the session: it carries the writes. Step records
    are exempt: a step finished again after late fragments supersedes its earlier record.
    """
    if record.get("step") or not ended_with:
        return False
    return is_interrupted(record) or not all(map(is_interrupted, ended_with))


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def isoformat(moment: dt.datetime) -> str:
    """UTC ISO 8601 with microseconds, readable by `datetime.fromisoformat`."""
    if moment.tzinfo is None:
        raise InvalidInput(f"timestamp {moment!r} has no timezone; pass an aware datetime (UTC)")
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")


def parse_time(text: str) -> dt.datetime:
    """A timestamp as `isoformat` writes it, back as an aware datetime."""
    return dt.datetime.fromisoformat(text)


def parameters_as_dict(parameters: Any) -> dict[str, Any]:
    """Turn a dict (any Mapping), SimpleNamespace, argparse.Namespace, ConfigParser, dataclass or
    attrs instance into a dict of its fields; what they hold is normalised by `normalise_json`
    (where the same containers are accepted at any depth)."""
    fields = container_as_dict(parameters)
    if fields is None:
        raise ParameterError(
            "parameters",
            f"a {type_name(parameters)} is not supported; pass a dict, SimpleNamespace, "
            "argparse.Namespace, ConfigParser, dataclass or attrs instance",
        )
    return fields


def normalise_parameters(parameters: Any, allow_secrets: tuple[str, ...] = ()) -> dict[str, Any]:
    """Canonical JSON-able parameters; refuse non-JSON values and keys that look like secrets,
    and take credentials out of URLs in string values (`redact_url`), but under `allow_secrets`."""
    plain = normalise_json(parameters_as_dict(parameters), "parameters", ParameterError)
    allowed = set(allow_secrets)
    _refuse_secrets(plain, "parameters", allowed)
    return _redact_urls(plain, allowed)


def _could_be_secret(value: Any) -> bool:
    """Strings and containers can hold credentials; None, "", numbers and booleans cannot
    (so `max_tokens: 512` or `use_token: True` pass)."""
    return value not in (None, "") and not isinstance(value, (bool, int, float))


def _refuse_secrets(value: Any, path: str, allowed: set[str], vouched: bool = False) -> None:
    """Refuse keys named like secrets, and private keys pasted as values (but under a key in
    `allowed`: `vouched`)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if SECRET_NAME.search(key) and key not in allowed and _could_be_secret(item):
                raise ParameterError(
                    f"{path}.{key}",
                    "looks like a secret and would be stored in every record; remove it, or "
                    f"pass allow_secrets=({key!r},) to Process if it is not one",
                )
            _refuse_secrets(item, f"{path}.{key}", allowed, vouched or key in allowed)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _refuse_secrets(item, f"{path}[{i}]", allowed, vouched)
    elif isinstance(value, str) and not vouched and PRIVATE_KEY_BLOCK.search(value):
        raise ParameterError(
            path,
            "holds a private key (a -----BEGIN ... PRIVATE KEY----- block), which would be "
            "stored in every record; pass the path of its file instead",
        )


def _redact_urls(value: Any, allowed: set[str]) -> Any:
    """`value` with `redact_url` applied to every string in it, but those under `allowed` keys."""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, dict):
        return {
            key: item if key in allowed else _redact_urls(item, allowed)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_redact_urls(item, allowed) for item in value]
    return value


@attrs.frozen(init=False)
class Process:
    """What made the data: a description, canonical parameters and captured code environments.

    `Process(description, parameters, *code_envs)` keeps provenance-toolbox's call shape.
    Identity is the digest of all three, so new code with old parameters is a new process.
    """

    description: str
    parameters: dict[str, Any]
    code_envs: tuple[CodeEnv, ...]

    def __init__(
        self,
        description: str,
        parameters: Any = None,
        *code_envs: CodeEnv,
        allow_secrets: tuple[str, ...] = (),
    ):
        if not isinstance(description, str) or not description.strip():
            raise InvalidInput(
                f"Process description must be a non-empty string, got {description!r}; "
                'say what the step does, e.g. Process("watershed at 8x8x40", {...})'
            )
        for env in code_envs:
            if isinstance(env, type) or not isinstance(env, CodeEnv):
                raise InvalidInput(
                    f"code environment {env!r} is not one; pass one made by calling "
                    "cirrus.PythonGithubEnv(path) or cirrus.DockerEnv(...)"
                )
        params = normalise_parameters({} if parameters is None else parameters, allow_secrets)
        self.__attrs_init__(redact_url(description), params, tuple(code_envs))
        self.env_documents()  # refuse an environment that is not JSON now, not at commit time

    def env_documents(self) -> list[dict[str, Any]]:
        """The JSON of each code environment, in the order given; each must have a `kind`."""
        documents = []
        for i, env in enumerate(self.code_envs):
            document = normalise_json(env.to_json(), f"code_envs[{i}]", ParameterError)
            if not isinstance(document, dict) or not isinstance(document.get("kind"), str):
                got = sorted(document) if isinstance(document, dict) else type(document).__name__
                raise InvalidInput(
                    f"code environment {env!r}: to_json() must return a dict with a string "
                    f'"kind" field, got {got}'
                )
            documents.append(document)
        return documents

    def to_json(self) -> dict[str, Any]:
        """The process as stored in records: environments by digest."""
        return {
            "description": self.description,
            "parameters": self.parameters,
            "envs": [digest(doc) for doc in self.env_documents()],
        }

    @property
    def digest(self) -> str:
        return digest(self.to_json())


def _redacted(text: Any) -> Any:
    return redact_url(text) if isinstance(text, str) else text  # the validator judges the rest


@attrs.frozen
class Note:
    """A timestamped note: motivation, result or generic; text kept as given, but for the
    credentials in URLs in it (`redact_url`): notes are shared with every reader of the volume."""

    kind: str = attrs.field(validator=attrs.validators.in_(NOTE_KINDS))
    text: str = attrs.field(converter=_redacted)
    time: dt.datetime = attrs.field(factory=utcnow)

    @time.validator
    def _check_time(self, _attribute: Any, value: Any) -> None:
        if not isinstance(value, dt.datetime) or value.tzinfo is None:
            raise InvalidInput(
                f"a note's time must be a timezone-aware datetime (UTC), got {value!r}"
            )

    @text.validator
    def _check_text(self, _attribute: Any, value: Any) -> None:
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput(f"a {self.kind} note must be a non-empty string, got {value!r}")
        check_text(value, f"a {self.kind} note")

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "text": self.text, "time": isoformat(self.time)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Note:
        return cls(data["kind"], data["text"], parse_time(data["time"]))


def error_message(error: BaseException) -> str:
    """What a failed record says of `error`: credentials in URLs out, and what UTF-8 cannot
    encode replaced. A failure must always be recordable, even one whose `__str__` raises."""
    return redact_url(_error_text(error).encode("utf-8", "replace").decode("utf-8"))


def _error_text(error: BaseException) -> str:
    """`error`'s text; without one, "interrupted (Ctrl-C)" for a bare KeyboardInterrupt, else
    its repr, else its type."""
    try:
        text = str(error)
    except Exception:
        text = ""
    if text:
        return text
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    try:
        return repr(error) or type(error).__name__
    except Exception:
        return type(error).__name__


@attrs.frozen
class Record:
    """One session's (or step's) account of what it did to one volume. Write-once."""

    session: str
    volume: str
    process: dict[str, Any] | None  # None for a note-only annotation
    sources: tuple[str, ...]
    notes: tuple[dict[str, Any], ...]
    status: str = attrs.field(validator=attrs.validators.in_(("committed", "failed")))
    started: str
    ended: str
    user: str
    host: str
    cirrus_version: str
    writes: dict[str, Any]
    siblings: tuple[str, ...] = ()
    error: dict[str, str] | None = None
    step: str | None = None
    tasks: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types. The parts were made JSON when they were built (process, notes,
        write set), so this is a shallow copy, not a deep walk: commits of many volumes pay
        for it once per volume."""
        data: dict[str, Any] = {"schema": RECORD_SCHEMA}
        for field in attrs.fields(Record):
            value = getattr(self, field.name)
            if value is not None or field.name == "process":
                data[field.name] = list(value) if isinstance(value, tuple) else value
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Record:
        fields = {f.name for f in attrs.fields(cls)}
        kwargs = {key: value for key, value in data.items() if key in fields}
        for name in ("sources", "notes", "siblings"):
            kwargs[name] = tuple(kwargs.get(name, ()))
        return cls(**kwargs)

    @property
    def digest(self) -> str:
        return digest(self.to_json())
