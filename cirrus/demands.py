"""What every write needs before anything is written: sources, a motivation and a process.

Each is checked with an error that names the problem and shows the fix, so a session, a step or
a compatibility call refuses bad input before any data or provenance is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cirrus.canonical import check_text
from cirrus.errors import InvalidInput
from cirrus.model import Process
from cirrus.redact import redact_url
from cirrus.sources import recorded_source


def validate_sources(sources: Any) -> tuple[str, ...]:
    """The sources as records keep them: credentials out of URLs, `file://` layers resolved
    against this process's directory (`sources.recorded_source`), each once."""
    if isinstance(sources, str) or not isinstance(sources, Sequence):
        raise InvalidInput(
            f"sources must be a list of strings, got {type(sources).__name__} {sources!r}; "
            'e.g. sources=["gs://lab/aff"] or sources=["tracer annotation"]'
        )
    if not sources:
        raise InvalidInput(
            "sources is empty; name where the data comes from: input cloudpaths, or free text "
            'such as ["manual annotation"]'
        )
    for i, source in enumerate(sources):
        if not isinstance(source, str) or not source.strip():
            raise InvalidInput(f"sources[{i}] must be a non-empty string, got {source!r}")
        check_text(source, f"sources[{i}]")
    return tuple(dict.fromkeys(recorded_source(redact_url(source)) for source in sources))


def validate_motivation(motivation: Any) -> str:
    if not isinstance(motivation, str) or not motivation.strip():
        raise InvalidInput(
            "motivation must be a non-empty string saying why this data is made, "
            f"got {motivation!r}"
        )
    return check_text(motivation, "motivation")


def validate_process(process: Any) -> Process:
    if not isinstance(process, Process):
        raise InvalidInput(
            f"process must be a cirrus.Process, got {_qualified(process)}; build one with "
            'cirrus.Process("what the step does", {parameters}, cirrus.PythonGithubEnv("."))'
        )
    return process


def _qualified(value: Any) -> str:
    """`provenancetoolbox.process.Process`, where a bare `Process` would read as cirrus's."""
    kind = type(value)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
