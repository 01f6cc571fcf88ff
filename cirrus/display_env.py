"""How a code environment reads in `cirrus show` and a record's text: its headline facts, and
its diff apart (coloured on a terminal by the caller)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cirrus.canonical import short

HIDDEN_ENV_KEYS = {
    "kind",
    "packages",
    "diff",
    "diff_sha256",
    "diff_truncated",
    "untracked_count",  # shown in the `untracked` line
    "untracked_truncated",
}


def env_lines(env_id: str, document: Mapping[str, Any] | None, error: str | None = None) -> list:
    """A code environment's headline facts (the diff is shown separately)."""
    if document is None:
        return [f"{short(env_id)}: unreadable: {error}"]
    kind = document.get("kind", "?")
    lines = [f"{short(env_id)} ({kind})"]
    keys = (
        "capture_error",
        "path",
        "notebook",
        "remotes",
        "commit",
        "branch",
        "dirty",
        "diff_bytes",
        "untracked",
        "python",
        "image",
        "tag",
        "image_id",
        "repo_digests",
    )
    keys += tuple(sorted(set(document) - set(keys) - HIDDEN_ENV_KEYS))
    for key in keys:
        value = document.get(key)
        if value in (None, "", [], {}):
            continue
        if key == "untracked":
            count = document.get("untracked_count", len(value))  # the list is capped
            value = f"{count} file(s): {', '.join(value[:5])}{' ...' * (count > 5)}"
        elif isinstance(value, (dict, list)):
            value = json.dumps(value, sort_keys=True)
        value = str(value)
        if len(value) > 200:
            value = value[:197] + "..."
        lines.append(f"  {key}: {value}")
    packages = document.get("packages")
    if packages:
        lines.append(f"  packages: {len(packages)} installed")
    return lines


def env_diff(document: Mapping[str, Any] | None) -> str:
    """The staged then unstaged diff a python-git environment recorded ('' if none)."""
    diff = (document or {}).get("diff") or {}
    if not isinstance(diff, Mapping):
        return str(diff)
    return "".join(part for part in (diff.get("staged"), diff.get("unstaged")) if part)
