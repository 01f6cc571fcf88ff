"""Test-wide setup: private CloudFiles/CloudVolume caches, then the real-server fixtures."""

import os
import tempfile

# CloudFiles and CloudVolume read these at import time: set them before anything imports them.
_CACHE = tempfile.mkdtemp(prefix="cirrus-test-cache-")
os.environ.setdefault("CLOUD_FILES_DIR", os.path.join(_CACHE, "cloudfiles"))
os.environ.setdefault("CLOUD_VOLUME_DIR", os.path.join(_CACHE, "cloudvolume"))
os.environ.setdefault("AWS_SESSION_TOKEN", "")

pytest_plugins = [
    "tests.fixtures_cloud",
    "tests.fixtures_rgw",
    "tests.fixtures_docker",
]
