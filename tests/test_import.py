"""`import cirrus` stays light: heavy clients load on first use, not at import."""

import json
import subprocess
import sys

HEAVY = ["cloudvolume", "cloudfiles", "git", "docker", "boto3", "google.cloud.storage", "numpy"]


def test_import_cirrus_loads_no_heavy_client():
    code = (
        f"import json, sys, cirrus; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_public_names_are_exported():
    import cirrus

    for name in cirrus.__all__:
        assert getattr(cirrus, name) is not None, name
