"""Notebooks: sessions, records and histories show as HTML tables in Jupyter, text elsewhere.

The notebook test runs a real kernel (ipykernel from this venv, through nbclient) with a
kernelspec written to a temporary JUPYTER_PATH so it cannot pick up another Python.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest

from tests.cli_support import layers, write

CELLS = [
    """\
import numpy as np
import cirrus
s = cirrus.session(
    sources=["file://{root}/raw"],
    motivation="try a threshold in a notebook",
    process=cirrus.Process("notebook threshold", {{"threshold": 7}}),
)""",
    """\
vol = s.volume("{path}", progress=False)
vol[0:64, 0:64, 0:64] = np.full((64, 64, 64), 7, np.uint8)
s""",
    "s.result('looks right'); records = s.commit(); records",
    "h = cirrus.history('{path}'); h",
    "h[0]",
    "print(h)",
]


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec running this interpreter, visible only through JUPYTER_PATH."""
    name = "cirrus-test-python"
    spec = tmp_path / "jupyter" / "kernels" / name
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": name, "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent.parent))
    return name


def _outputs(cell: nbformat.NotebookNode, mime: str) -> str:
    return "".join(
        out.get("data", {}).get(mime, "") if "data" in out else out.get("text", "")
        for out in cell.outputs
    )


def test_notebook_session_without_with_then_history_table(tmp_path: Path, kernel: str) -> None:
    from nbclient import NotebookClient

    (path,) = layers(tmp_path, "seg")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(cell.format(root=tmp_path, path=path)) for cell in CELLS
    ]
    resources = {"metadata": {"path": str(tmp_path)}}
    NotebookClient(notebook, kernel_name=kernel, timeout=120, resources=resources).execute()
    cells = notebook.cells
    session_html = _outputs(cells[1], "text/html")
    assert '<table class="cirrus-session">' in session_html
    assert "notebook threshold" in session_html and "mip 0" in session_html
    assert path in _outputs(cells[2], "text/plain")  # commit returned {volume: record id}
    history_html = _outputs(cells[3], "text/html")
    assert '<div class="cirrus-history">' in history_html and "<table>" in history_html
    assert "try a threshold in a notebook" in history_html and "looks right" in history_html
    assert '<table class="cirrus-record">' in _outputs(cells[4], "text/html")
    printed = _outputs(cells[5], "text/plain")
    assert "1 record(s)" in printed and "notebook threshold" in printed


def test_text_forms_outside_jupyter(tmp_path: Path) -> None:
    import cirrus

    (path,) = layers(tmp_path, "v")
    write([path], ["src"], "why", "the step", result="done")
    history = cirrus.history(path)
    assert isinstance(history, list) and len(history) == 1
    text = repr(history)
    assert text.startswith(f"{path}: 1 record(s)") and "the step" in text and "done" in text
    record = history[0]
    assert repr(record).startswith(f"<cirrus record {record.id[:12]} committed: the step")
    assert "motivation: why" in str(record) and record.id in str(record)
    session = cirrus.session(["src"], "open one", cirrus.Process("p", {"a": 1}))
    assert "state" in str(session) and "open one" in str(session)
    assert "no writes" not in str(session)
    session.volume(path, progress=False)
    assert "no writes yet" in str(session)
    session.abort("nothing to do")
