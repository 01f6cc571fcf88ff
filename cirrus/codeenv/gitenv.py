"""PythonGithubEnv: the git working tree and the Python environment a process ran from.

Captured once, at construction: remotes (credentials stripped), commit, branch, dirty flag, the
staged and unstaged diffs (submodules' edits included, URL credentials redacted), untracked file
names, installed packages and the interpreter. The JSON holds nothing that changes between two
captures of the same state (no timestamps), so equal states give equal digests and processes dedupe
by content.
"""

from __future__ import annotations

import copy
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from cirrus.codeenv.runtime import (
    elapsed_ms,
    installed_packages,
    interpreter,
    warn_capture_failed,
)
from cirrus.codeenv.script import (
    IGNORED,
    MODIFIED,
    TRACKED,
    UNTRACKED,
    main_script,
    script_json,
)
from cirrus.errors import CaptureError, InvalidInput
from cirrus.redact import redact_url, strip_credentials

KIND = "python-git"
DIFF_OPTIONS = ("--no-color", "--no-ext-diff", "--no-textconv", "--binary", "--submodule=diff")
UNTRACKED_LIMIT = 1000  # names kept: a volume written inside the tree must not flood the document
_CHUNK = 1 << 16  # bytes read from `git diff` at a time
_RAW = {"stdout_as_string": False, "strip_newline_in_stdout": False}  # exact bytes from git
GIT_FIX = (
    "Pass PythonGithubEnv the path of the git working tree the code runs from (with at least one "
    "commit), or strict=True to raise instead of recording the failure"
)


class GitUnavailable(Exception):
    """The git state cannot be read; the message says why, naming the path."""


def notebook_path(
    environ: Mapping[str, str] | None = None, namespaces: Iterable[Mapping[str, Any]] | None = None
) -> str | None:
    """The notebook this kernel runs, when Jupyter or VS Code says so; else None.

    Only `JPY_SESSION_NAME` (set by Jupyter server) and the `__vsc_ipynb_file__` global (set by VS
    Code) are read: never the environment wholesale, which may hold secrets.
    """
    name = (os.environ if environ is None else environ).get("JPY_SESSION_NAME")
    if name:
        return name
    for namespace in _interactive_namespaces() if namespaces is None else namespaces:
        value = namespace.get("__vsc_ipynb_file__")
        if isinstance(value, str) and value:
            return value
    return None


def _interactive_namespaces() -> list[Mapping[str, Any]]:
    """`__main__`'s globals and, inside IPython, the user namespace."""
    spaces: list[Mapping[str, Any]] = []
    main = sys.modules.get("__main__")
    if main is not None:
        spaces.append(vars(main))
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython else None
    if shell is not None:
        spaces.append(shell.user_ns)
    return spaces


def git_state(
    path: str, diff_limit: int, script: str | None = None, script_limit: int | None = None
) -> dict[str, Any]:
    """Read the repository containing `path` (and how it holds the running `script`, its text
    kept up to `script_limit` bytes if given); raise GitUnavailable with the reason if
    impossible."""
    try:
        import git
    except ImportError as err:  # GitPython refuses to import when no git executable runs
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise GitUnavailable(
            f"git cannot be run ({reason}); install git (apt-get install git in python:*-slim "
            "images) or set GIT_PYTHON_GIT_EXECUTABLE to its path"
        ) from err
    try:
        repo = git.Repo(path, search_parent_directories=True)
    except git.NoSuchPathError as err:
        raise GitUnavailable(f"{os.path.abspath(path)} does not exist") from err
    except git.InvalidGitRepositoryError as err:
        raise GitUnavailable(f"{os.path.abspath(path)} is not inside a git repository") from err
    with repo:
        root = repo.working_tree_dir
        if root is None:
            raise GitUnavailable(f"{repo.git_dir} is a bare repository: no working tree to record")
        try:
            if not repo.head.is_valid():
                _check_head(repo, root)
            return _read_repo(repo, diff_limit, script, script_limit)
        except (git.GitError, OSError, ValueError) as err:
            raise GitUnavailable(f"reading the git repository at {root} failed: {err}") from err


def _check_head(repo: Any, root: str) -> None:
    """Raise GitUnavailable saying why HEAD is unreadable: git's own words, or no commit yet.

    GitPython sees "no HEAD" alike when git refuses the repository (dubious ownership: owned by
    another user) and when nothing is committed; `git rev-parse` tells them apart.
    """
    status, _, stderr = repo.git.rev_parse(
        "--verify", "--quiet", "HEAD", with_extended_output=True, with_exceptions=False
    )
    if status == 0:
        return  # git reads HEAD: what GitPython then fails on is reported as read
    message = " ".join(stderr.split())
    if message:
        raise GitUnavailable(f"git refuses to read the repository at {root}: {message}")
    raise GitUnavailable(
        f"the git repository at {root} has no commit yet; commit the code, then capture it"
    )


def _read_repo(
    repo: Any, diff_limit: int, script: str | None, script_limit: int | None
) -> dict[str, Any]:
    detached = repo.head.is_detached
    held = script_json(
        script, repo.working_tree_dir, lambda name: _git_holds(repo, name), script_limit
    )
    return {
        "path": str(repo.working_tree_dir),
        "remotes": _remotes(repo),
        "commit": repo.head.commit.hexsha,
        "branch": None if detached else repo.active_branch.name,
        "detached": detached,
        "dirty": repo.is_dirty(index=True, working_tree=True, untracked_files=False),
        **_diffs(repo, diff_limit),
        **_untracked(repo),
        **({"script": held} if held else {}),
    }


def _git_holds(repo: Any, name: str) -> str:
    """How git holds the file `name` (relative to the root): committed as it is, changed since
    HEAD (the diff has it), or not at all: untracked (listed in `untracked`) or ignored."""
    literal = f":(literal){name}"  # a name with `*` or `?` in it is no pattern
    if not repo.git.ls_files("--", literal):
        listed = repo.git.ls_files("--others", "--exclude-standard", "--", literal)
        return UNTRACKED if listed else IGNORED
    status, _, _ = repo.git.diff(
        "--quiet", "HEAD", "--", literal, with_extended_output=True, with_exceptions=False
    )
    return MODIFIED if status else TRACKED


def _remotes(repo: Any) -> dict[str, str]:
    """Each remote's url (else pushurl) without credentials; a remote with neither is left out."""
    remotes = {}
    for remote in repo.remotes:
        config = remote.config_reader
        url = config.get("url", fallback=None) or config.get("pushurl", fallback=None)
        if url:
            remotes[remote.name] = strip_credentials(url)
    return remotes


def _text(data: bytes) -> str:
    """git output as text; bytes that are not UTF-8 (Latin-1 files, names) kept as `\\xNN`."""
    return data.decode("utf-8", "backslashreplace")


def _untracked(repo: Any) -> dict[str, Any]:
    """Sorted untracked names that .gitignore does not exclude (raw, not quoted, by git).

    A directory holding nothing tracked is one `dir/` entry, and at most UNTRACKED_LIMIT names are
    kept: `untracked_count` says how many there are, `untracked_truncated` whether some are not.
    """
    raw = repo.git.ls_files(
        "--others", "--exclude-standard", "--directory", "--no-empty-directory", "-z", **_RAW
    )
    names = sorted(_text(name) for name in raw.split(b"\0") if name)
    return {
        "untracked": names[:UNTRACKED_LIMIT],
        "untracked_count": len(names),
        "untracked_truncated": len(names) > UNTRACKED_LIMIT,
    }


def _diffs(repo: Any, limit: int) -> dict[str, Any]:
    """Staged and unstaged diffs, together kept up to `limit` bytes (staged first).

    `diff_bytes` and `diff_sha256` describe the whole: the staged diff's bytes followed by the
    unstaged diff's, as `git diff --cached` and `git diff` print them with DIFF_OPTIONS. Both are
    streamed, so a huge diff costs no memory beyond what is kept; a part cut at the limit ends at
    its last whole line, and URL credentials in what is kept are redacted.
    """
    whole = hashlib.sha256()
    staged, staged_bytes = _stream_diff(repo, ("--cached",), limit, whole)
    unstaged, unstaged_bytes = _stream_diff(repo, (), max(0, limit - staged_bytes), whole)
    size = staged_bytes + unstaged_bytes
    return {
        "diff": {"staged": _redacted(staged), "unstaged": _redacted(unstaged)},
        "diff_truncated": size > limit,
        "diff_bytes": size,
        "diff_sha256": whole.hexdigest(),
    }


def _stream_diff(repo: Any, args: tuple[str, ...], keep: int, whole: Any) -> tuple[bytes, int]:
    """Run `git diff ARGS`, feeding all of it to `whole`; (its first `keep` bytes, its size).

    When the diff is longer than `keep`, what is kept ends at its last newline, so no URL is cut
    between its scheme and its credentials (which redaction would then miss). stderr goes to a
    file, so git never blocks on it while stdout is read.
    """
    root = repo.working_tree_dir
    command = [repo.git.GIT_PYTHON_GIT_EXECUTABLE, "diff", *args, *DIFF_OPTIONS]
    environment = {**os.environ, "LANGUAGE": "C", "LC_ALL": "C"}  # as GitPython runs git
    kept, size = bytearray(), 0
    with tempfile.TemporaryFile() as errors:
        with subprocess.Popen(
            command, cwd=root, env=environment, stdout=subprocess.PIPE, stderr=errors
        ) as process:
            for chunk in iter(lambda: process.stdout.read(_CHUNK), b""):
                whole.update(chunk)
                size += len(chunk)
                if len(kept) < keep:
                    kept += chunk[: keep - len(kept)]
        if process.returncode:
            errors.seek(0)
            message = " ".join(_text(errors.read()[-2000:]).split())  # fatal comes after warnings
            raise GitUnavailable(
                f"`{' '.join(['git diff', *args])}` failed in {root} "
                f"(exit status {process.returncode}): {message}"
            )
    if size > keep:
        del kept[kept.rfind(b"\n") + 1 :]
    return bytes(kept), size


def _redacted(diff: bytes) -> str:
    """A kept diff as text, with credentials taken out of every URL in it (as for parameters)."""
    return redact_url(_text(diff))


def capture_python_git(
    path: str,
    diff_limit: int,
    environ: Mapping[str, str] | None = None,
    script_text: bool = False,
) -> dict[str, Any]:
    """The python-git document; on failure it carries `capture_error` and what could be read."""
    document: dict[str, Any] = {"kind": KIND, "path": os.path.abspath(path)}
    script, script_limit = main_script(), (diff_limit if script_text else None)
    try:
        document.update(git_state(path, diff_limit, script, script_limit))
    except GitUnavailable as err:
        document["capture_error"] = str(err)
        held = script_json(script, None, None, script_limit)
        document.update({"script": held} if held else {})
    document.update(interpreter())
    document["packages"] = installed_packages()
    document["notebook"] = notebook_path(environ)
    return document


@attrs.frozen(init=False)
class PythonGithubEnv:
    """A git working tree plus the running Python, captured when constructed.

    `PythonGithubEnv(".")` keeps provenance-toolbox's call shape. A capture that fails (not a
    repository, no commit yet) is recorded in `to_json()["capture_error"]`, or raises CaptureError
    with `strict=True`. `capture_ms` says how long the capture took; it is not part of the JSON.
    `script_text=True` keeps the text of a running script git does not hold (off by default: a
    script kept out of git may hold keys, and a record cannot be edited once stored).
    """

    path: str
    strict: bool
    diff_limit: int
    script_text: bool
    document: dict[str, Any] = attrs.field(repr=False, hash=False)
    capture_ms: float = attrs.field(eq=False, repr=False)

    def __init__(
        self,
        path: str | os.PathLike[str] = ".",
        strict: bool = False,
        diff_limit: int = 1_000_000,
        *,
        environ: Mapping[str, str] | None = None,
        script_text: bool = False,
    ):
        if not isinstance(diff_limit, int) or diff_limit < 0:
            raise InvalidInput(f"diff_limit must be a non-negative int (bytes), got {diff_limit!r}")
        start = time.perf_counter()
        path = os.fspath(path)
        document = capture_python_git(path, diff_limit, environ, bool(script_text))
        if strict and "capture_error" in document:
            raise CaptureError(
                f"PythonGithubEnv({path!r}): {document['capture_error']} "
                "(pass strict=False to record the failure instead)"
            )
        if "capture_error" in document:
            warn_capture_failed(
                f"PythonGithubEnv({path!r}) could not capture the code, so records of this process "
                f"will not say which commit ran: {document['capture_error']}. {GIT_FIX}"
            )
        self.__attrs_init__(
            path, strict, diff_limit, bool(script_text), document, elapsed_ms(start)
        )

    @property
    def capture_error(self) -> str | None:
        return self.document.get("capture_error")

    def to_json(self) -> dict[str, Any]:
        """The captured document (a fresh copy): plain JSON types, deterministic."""
        return copy.deepcopy(self.document)
