"""Canonical JSON and sha256 digests: the identity of everything cirrus stores."""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

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


def normalise_json(value: Any, path: str, error: type[Exception], _depth: int = 0) -> Any:
    """Return `value` as plain JSON types (tuples become lists); raise `error(path, problem)`.

    Refused: non-string keys, NaN and infinities, sets, arrays, arbitrary objects, strings
    that UTF-8 cannot encode (lone surrogates, as `os.fsdecode` makes of undecodable bytes) and
    lists or dicts nested more than MAX_DEPTH deep (also what makes a cycle fail cleanly).
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
        return value
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
                    f"key of type {type(key).__name__}; JSON keys must be strings, convert it",
                )
            out[key] = normalise_json(item, f"{path}.{key}", error, _depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [
            normalise_json(item, f"{path}[{i}]", error, _depth + 1) for i, item in enumerate(value)
        ]
    kind = type(value).__name__
    hint = {
        "set": "use a sorted list",
        "frozenset": "use a sorted list",
        "ndarray": "use .tolist()",
        "bytes": "decode it or store its sha256",
    }.get(kind, "convert it to str, int, float, bool, None, list or dict")
    raise error(path, f"value of type {kind} is not JSON; {hint}")
