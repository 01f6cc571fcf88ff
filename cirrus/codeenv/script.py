"""The script a process runs (`python SCRIPT`, `python -m MODULE`), as a code environment keeps it.

A commit says which code ran only for files git holds: a script that is untracked, ignored or
outside the repository would leave no trace but its name, so its size and sha256 are kept, and
its text when asked for (`script_text=True`: credentials in URLs redacted, cut at a whole line
past the limit; off by default, as a script kept out of git may hold keys).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from typing import Any

from cirrus.redact import redact_url

# how git holds the script: its text is kept unless the commit (and the diff) already hold it
TRACKED, MODIFIED, UNTRACKED, IGNORED = "tracked", "modified", "untracked", "ignored"
OUTSIDE, NO_REPOSITORY = "outside the repository", "no repository"


def main_script() -> str | None:
    """The file `__main__` was run from, resolved; None in a notebook, a REPL or `python -c`."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not isinstance(path, str) or not os.path.isfile(path):
        return None
    return os.path.realpath(path)


def script_json(
    path: str | None,
    root: str | None,
    git_status: Callable[[str], str] | None,
    limit: int | None,
) -> dict[str, Any] | None:
    """What a record keeps of the script at `path`: where it is, how git holds it, its digest
    and, when git does not hold it and `limit` is given, its text up to `limit` bytes.
    `git_status` maps a path relative to the repository `root` to TRACKED, MODIFIED, UNTRACKED
    or IGNORED (None: there is no repository)."""
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:  # it ran, so this is rare: a file removed or unreadable since
        return {"path": path, "capture_error": f"cannot read the script: {error}"}
    root = os.path.realpath(root) if root is not None else None
    if root is not None and git_status is not None and _is_under(path, root):
        shown = os.path.relpath(path, root).replace(os.sep, "/")
        held = git_status(shown)
    else:
        shown, held = path, (OUTSIDE if root is not None else NO_REPOSITORY)
    document: dict[str, Any] = {
        "path": shown,
        "git": held,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    if held not in (TRACKED, MODIFIED) and limit is not None:  # nor commit nor diff says it
        document.update(_text(data, limit))
    return document


def _is_under(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def _text(data: bytes, limit: int) -> dict[str, Any]:
    """The script's text, cut at its last whole line within `limit` bytes; None for binary."""
    if b"\0" in data:
        return {"text": None}
    kept = data if len(data) <= limit else data[: data.rfind(b"\n", 0, limit) + 1]
    text = redact_url(kept.decode("utf-8", "backslashreplace"))
    return {"text": text, "text_truncated": len(kept) < len(data)}
