"""How a code environment reads in `cirrus show` and a record's text: its headline facts, and
its diff apart (coloured on a terminal by the caller)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cirrus.canonical import short
from cirrus.codeenv.script import MODIFIED, TRACKED

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
        "script",
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
        elif key == "script" and isinstance(value, Mapping):
            value = _script_line(value)
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


def _script_line(script: Mapping[str, Any]) -> str:
    """`run.py (untracked, 2,048 bytes: its text is kept)`: where it is, how git holds it."""
    if script.get("capture_error"):
        return f"{script.get('path')} ({script['capture_error']})"
    kept = ""
    if "text" in script:
        kept = ": its text is kept" if script["text"] is not None else ": binary, not kept"
        kept += ", cut short" if script.get("text_truncated") else ""
    elif script.get("git") not in (TRACKED, MODIFIED):  # git does not say what ran
        kept = ": its text is not kept (PythonGithubEnv(..., script_text=True) keeps it)"
    return f"{script.get('path')} ({script.get('git')}, {script.get('bytes', 0):,} bytes{kept})"


def env_script(document: Mapping[str, Any] | None) -> str:
    """The text of the script a python-git environment kept, as git did not hold it ('' if
    none)."""
    script = (document or {}).get("script")
    return (script.get("text") or "") if isinstance(script, Mapping) else ""


def env_diff(document: Mapping[str, Any] | None) -> str:
    """The staged then unstaged diff a python-git environment recorded ('' if none)."""
    diff = (document or {}).get("diff") or {}
    if not isinstance(diff, Mapping):
        return str(diff)
    return "".join(part for part in (diff.get("staged"), diff.get("unstaged")) if part)
