"""`cirrus lineage` says what `cirrus log` says of what it cannot read whole: PATH's own
unreadable summary is an error, an ancestor's is a leaf naming the fix; and it exits 3 where
log does.

Real file:// layers under tmp_path, written by real sessions; damage done as a hand edit would.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli_support import invoke, layers, write


def _layer_dir(path: str) -> Path:
    return Path(path[len("file://") :])


def test_an_unreadable_summary_on_path_is_an_error_naming_the_fix(tmp_path: Path) -> None:
    (seg,) = layers(tmp_path, "seg")
    write([seg], ["microscope"])
    (_layer_dir(seg) / "provenance").write_text("[]")
    log = invoke("log", seg, code=3)
    result = invoke("lineage", seg, code=3)
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line == log.stderr.strip()  # the same error as `cirrus log`
    assert "is a JSON list, not an object" in line and "`cirrus repair PATH`" in line
    invoke("lineage", seg, "--format", "json", code=3)


def test_an_unreadable_ancestor_is_a_leaf_with_its_fix_then_exit_3(tmp_path: Path) -> None:
    image, seg = layers(tmp_path, "image", "seg")
    write([image], ["microscope"])
    write([seg], [image, "notes"])
    (_layer_dir(image) / "provenance").write_text("{not json")
    result = invoke("lineage", seg, code=3)
    assert f"{image}  [unreadable: {image}/provenance is not valid JSON" in result.stdout
    assert f"run `cirrus repair {image}`]" in result.stdout
    assert '"notes"  (free text)' in result.stdout  # the rest is shown
    assert f"could not be read: {image}" in result.stderr
    tree = json.loads(invoke("lineage", seg, "--format", "json", code=3).stdout)
    assert tree["sources"][0]["kind"] == "unreadable"
