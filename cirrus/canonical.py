"""Canonical JSON and sha256 digests: the identity of everything cirrus stores."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import io
import json
import math
import re
import sys
from collections.abc import Mapping
from configparser import InterpolationError, RawConfigParser, SectionProxy
from pathlib import PurePath
from types import SimpleNamespace
from typing import Any

import attrs

from cirrus.errors import InvalidInput

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
MAX_DEPTH = 100  # nesting of lists and dicts; deeper is refused, never a RecursionError


def canonical_json(obj: Any) -> bytes:
    """UTF-8 JSON with sorted keys and no whitespace: equal values give equal bytes."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(obj: Any) -> str:
    """The sha256 of `obj`'s canonical JSON."""
    return sha256_hex(canonical_json(obj))


def check_digest(value: str, what: str = "digest") -> str:
    """Refuse anything but 64 lowercase hex characters before it becomes part of a storage key."""
    if not isinstance(value, str) or not _HEX64.match(value):
        raise InvalidInput(f"{what} must be 64 lowercase hex characters (a sha256), got {value!r}")
    return value


def check_text(value: str, what: str) -> str:
    """Refuse a string UTF-8 cannot encode (lone surrogates, as `os.fsdecode` makes of
    undecodable bytes) when it is given, not when the commit that stores it runs."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise InvalidInput(
                f"{what} is not valid Unicode ({err.reason}): {value[:80]!r}; decode file names "
                "with os.fsencode(name).decode('utf-8', 'replace') or pass text"
            ) from None
    return value


def is_step_id(value: Any) -> bool:
    return isinstance(value, str) and bool(re.fullmatch(r"[0-9a-f]{32}", value))


def check_step_id(step_id: str) -> str:
    """Step ids are 32 hex characters (a uuid4): nothing else may become part of a key."""
    if not is_step_id(step_id):
        raise InvalidInput(f"step id must be 32 lowercase hex characters, got {step_id!r}")
    return step_id


def is_digest(value: str) -> bool:
    return bool(_HEX64.match(value))


def short(digest: str | None, length: int = 12) -> str:
    """A digest as people read it: its first 12 characters ("-" for none)."""
    return "-" if not digest else digest[:length]


def type_name(value: Any) -> str:
    """The name of `value`'s type as a user would import it: `set`, `numpy.datetime64`."""
    kind = type(value)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def container_as_dict(value: Any) -> dict[Any, Any] | None:
    """The fields of a parameter container as a dict (one level: what they hold is normalised
    by the caller), or None if `value` is not one.

    Containers: any Mapping; a ConfigParser's section (its values as the code reads them, raw
    where they cannot be interpolated); a ConfigParser (sections become dicts, values raw: "%"
    is no interpolation error);
    SimpleNamespace and argparse.Namespace (their attributes); dataclass and attrs instances
    (their fields).
    """
    if isinstance(value, SectionProxy):  # as the code reads it; raw where "%" cannot interpolate
        try:
            return dict(value)
        except InterpolationError:
            return dict(value.parser.items(value.name, raw=True))
    if isinstance(value, RawConfigParser):  # defaults under "DEFAULT", whatever it is named
        sections = {name: dict(value.items(name, raw=True)) for name in value.sections()}
        defaults = dict(value.defaults())
        return {"DEFAULT": defaults, **sections} if defaults else sections
    argparse = sys.modules.get("argparse")  # a Namespace exists only once argparse is imported
    if isinstance(value, SimpleNamespace) or (
        argparse is not None and isinstance(value, argparse.Namespace)
    ):
        return dict(vars(value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    if attrs.has(type(value)):
        return {field.name: getattr(value, field.name) for field in attrs.fields(type(value))}
    if isinstance(value, Mapping):
        return dict(value)
    return None


_REFUSED = object()


def _as_json_value(value: Any) -> Any:
    """`value` as something `normalise_json` takes, or _REFUSED.

    Enums become their value; pure paths their POSIX string; dates and datetimes ISO 8601 as
    given (a naive datetime stays naive, an aware one keeps its offset); numpy scalars (and 0-d
    arrays) their Python value (`.item()`). numpy is never imported here: a numpy value can only
    exist once the caller has imported it.
    """
    container = container_as_dict(value)
    if container is not None:
        return container
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, PurePath):
        return value.as_posix()
    if isinstance(value, dt.date):  # datetime too
        return value.isoformat()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        if isinstance(value, numpy.ndarray) and value.ndim == 0 and value.dtype.kind != "O":
            value = value[()]
        if isinstance(value, numpy.generic) and not isinstance(
            value,
            (numpy.datetime64, numpy.timedelta64),  # .item() of these can be a bare int
        ):
            item = value.item()
            if type(item) in (bool, int, float, str):
                return item
    return _REFUSED


def _refusal(value: Any) -> str:
    """What is wrong with a value `normalise_json` cannot take, and what to do instead."""
    kind = type_name(value)
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.ndarray):
        # "ndarray", not numpy.ndarray, first: the wording users and docs/bad-input.md know
        return (
            f"value of type ndarray is not JSON; use .tolist() for a small numpy.ndarray (this "
            f"one has shape {value.shape} and dtype {value.dtype}), or store a large one "
            "elsewhere and record its path or sha256"
        )
    if isinstance(value, (set, frozenset)):
        hint = "use a sorted list"
    elif isinstance(value, (bytes, bytearray, memoryview)):
        hint = "decode it or store its sha256"
    elif isinstance(value, complex) or getattr(getattr(value, "dtype", None), "kind", "") == "c":
        hint = "store its real and imaginary parts as two floats"
    elif isinstance(value, dt.time):
        hint = "use .isoformat()"
    elif isinstance(value, dt.timedelta):
        hint = "use .total_seconds()"
    elif numpy is not None and isinstance(value, numpy.datetime64):
        hint = "use str(value), an ISO 8601 string"
    elif numpy is not None and isinstance(value, numpy.timedelta64):
        hint = "use value / numpy.timedelta64(1, 's'), the seconds as a float"
    elif numpy is not None and isinstance(value, numpy.generic):
        hint = "convert it with float(), int() or str()"
    elif isinstance(value, io.IOBase):
        hint = "record the file's path (its .name) instead of the open file"
    else:
        hint = (
            "convert it to str, int, float, bool, None, list or dict (or a dataclass, attrs "
            "instance or namespace of those)"
        )
    return f"value of type {kind} is not JSON; {hint}"


def normalise_json(value: Any, path: str, error: type[Exception], _depth: int = 0) -> Any:
    """Return `value` as plain JSON types; raise `error(path, problem)`.

    Tuples become lists, str/int/float subclasses (np.float64, np.str_, IntEnum) the plain type.
    Converted (`_as_json_value`), then normalised in turn: Mappings, ConfigParsers, namespaces,
    dataclass and attrs instances (to dicts, at any depth), Enums (their value), pure paths,
    dates and datetimes (strings), numpy scalars and 0-d arrays (their Python value).

    Refused: non-string keys, NaN and infinities, sets, arrays, arbitrary objects, strings
    that UTF-8 cannot encode (lone surrogates, as `os.fsdecode` makes of undecodable bytes) and
    containers nested more than MAX_DEPTH deep (also what makes a cycle fail cleanly).
    """
    if _depth > MAX_DEPTH and isinstance(value, (dict, list, tuple)):
        raise error(
            path if len(path) <= 80 else f"{path[:60]}...",
            f"nested more than {MAX_DEPTH} levels deep; flatten it or store it elsewhere "
            "and record its path or sha256",
        )
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as err:
                raise error(path, f"string is not valid Unicode ({err.reason})") from None
        return value if type(value) is str else str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise error(path, f"{value!r} is not finite; JSON has no NaN or infinity")
        return float(value)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise error(
                    f"{path}[{key!r}]",
                    f"key of type {type_name(key)}; JSON keys must be strings, "
                    "convert it with str()",
                )
            key = key if type(key) is str else str.__str__(key)
            out[key] = normalise_json(item, f"{path}.{key}", error, _depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [
            normalise_json(item, f"{path}[{i}]", error, _depth + 1) for i, item in enumerate(value)
        ]
    converted = _as_json_value(value)
    if converted is _REFUSED:
        raise error(path, _refusal(value))
    # a container's dict is checked against MAX_DEPTH at this depth, its items one deeper
    return normalise_json(converted, path, error, _depth)
