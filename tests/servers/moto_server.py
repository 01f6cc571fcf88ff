"""An S3 server for tests and benchmarks: moto's ThreadedMotoServer on 127.0.0.1 at a free port."""

from __future__ import annotations

import contextlib
import socket
import urllib.request
from collections.abc import Iterator


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """Run moto in this process for the duration of the block; yields its endpoint URL."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def reset(endpoint: str) -> None:
    """Wipe every bucket and object moto holds."""
    _post(f"{endpoint}/moto-api/reset", b"")


def _post(url: str, body: bytes) -> None:
    # text/plain: as a form, Flask would consume the body before moto reads it.
    headers = {"Content-Type": "text/plain"}
    request = urllib.request.Request(url, method="POST", data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@contextlib.contextmanager
def authentication(endpoint: str) -> Iterator[None]:
    """Make moto check credentials inside the block (it accepts any by default)."""
    _post(f"{endpoint}/moto-api/reset-auth", b"0")
    try:
        yield
    finally:
        _post(f"{endpoint}/moto-api/reset-auth", b"inf")
