"""Helpers for the reading-side tests: real layers written by real sessions, and the command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tests.layers import make_layer as new_layer

CHUNK = 64
CIRRUS = Path(sys.executable).parent / "cirrus"


class StaticEnv:
    """A code environment with fixed JSON (the real ones capture the whole machine)."""

    def __init__(self, name: str = "static"):
        self.name = name

    def to_json(self) -> dict[str, Any]:
        return {"kind": "static", "name": self.name}


def make_layer(path: str, size: tuple[int, int, int] = (128, 64, 64)) -> None:
    """An empty uint8 precomputed layer (info only), written with plain CloudVolume."""
    new_layer(path, size, CHUNK)


def write(
    paths: list[str],
    sources: list[str],
    motivation: str = "test motivation",
    description: str = "test step",
    result: str | None = None,
    envs: tuple[Any, ...] = (),
    chunks: int = 1,
) -> dict[str, str]:
    """One real session writing `chunks` chunks to each of `paths`; returns {layer: record id}."""
    import cirrus

    process = cirrus.Process(description, {"threshold": 0.3}, *envs)
    with cirrus.session(sources=sources, motivation=motivation, process=process) as s:
        for path in paths:
            volume = s.volume(path, progress=False)
            for i in range(chunks):
                x = (i % 2) * CHUNK
                volume[x : x + CHUNK, 0:CHUNK, 0:CHUNK] = np.full((CHUNK,) * 3, i + 1, np.uint8)
        if result:
            s.result(result)
    return s.records


def layers(tmp: Path, *names: str) -> list[str]:
    paths = [f"file://{tmp / name}" for name in names]
    for path in paths:
        make_layer(path)
    return paths


def run(
    *args: str, check: int | None = 0, env: dict[str, str] | None = None, **kwargs: Any
) -> subprocess.CompletedProcess:
    """The console script, for real; asserts the exit status unless check is None. `env`:
    variables to set on top of this process's environment."""
    env = {**os.environ, "COLUMNS": "200", **(env or {})}
    done = subprocess.run(
        [str(CIRRUS), *args], capture_output=True, text=True, env=env, timeout=120, **kwargs
    )
    if check is not None:
        assert done.returncode == check, (done.returncode, done.stdout, done.stderr)
    return done


def invoke(*args: str, code: int = 0, input: str | None = None, color: bool = False) -> Any:
    """The command through click's CliRunner (in process, fast); asserts the exit status.

    `color`: keep escape codes in the output, as a terminal would get them (click strips
    them from output that goes elsewhere, so without it a test cannot see them).
    """
    from click.testing import CliRunner

    from cirrus.cli import cli

    result = CliRunner().invoke(cli, list(args), input=input, color=color)
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    return result
