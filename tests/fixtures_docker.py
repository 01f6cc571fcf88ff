"""Fixture `fake_docker_engine`: a small Docker Engine API on a unix socket, for DockerEnv tests.

No Docker engine runs on the test machines, so this serves the few endpoints DockerEnv (and the
`docker inspect` CLI) use: /_ping, /version, /containers/{id}/json and /images/{id}/json, with or
without the /v1.NN prefix, 404 as {"message": ...}. It is stdlib only: a threaded
socketserver.UnixStreamServer speaking HTTP/1.1 with Content-Length on every reply.
"""

from __future__ import annotations

import json
import re
import shutil
import socketserver
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

API_VERSION = "1.47"
_ROUTE = re.compile(r"^(?:/v[0-9.]+)?/(containers|images)/(.+)/json$")


class FakeEngine:
    """The engine's state: containers and images by id; every request path is logged."""

    def __init__(self, socket_path: Path):
        self.socket_path = socket_path
        self.containers: dict[str, dict[str, Any]] = {}
        self.images: dict[str, dict[str, Any]] = {}
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def add_container(
        self,
        container_id: str,
        reference: str,
        image_id: str,
        repo_digests: tuple[str, ...] = (),
    ) -> None:
        """A running container of image `reference` (Config.Image) with id `image_id`."""
        self.containers[container_id] = {
            "Id": container_id,
            "Image": image_id,
            "Config": {"Image": reference, "Hostname": container_id[:12]},
        }
        tags = [] if reference.startswith("sha256:") else [reference]
        self.images[image_id] = {
            "Id": image_id,
            "RepoTags": tags,
            "RepoDigests": list(repo_digests),
        }

    def lookup(self, kind: str, key: str) -> dict[str, Any] | None:
        """Find by full id, id prefix (with or without `sha256:`) or, for images, a repo tag."""
        table = self.containers if kind == "containers" else self.images
        for ident, item in table.items():
            bare = ident.removeprefix("sha256:")
            if key in (ident, bare) or (len(key) >= 12 and bare.startswith(key)):
                return item
            if key in item.get("RepoTags", ()):
                return item
        return None


def _handler(engine: FakeEngine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_HEAD(self) -> None:
            self._answer(head=True)

        def do_GET(self) -> None:
            self._answer(head=False)

        def _answer(self, head: bool) -> None:
            path = self.path.split("?", 1)[0]
            engine.requests.append(path)
            status, body = self._route(path)
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header(
                "Content-Type", "text/plain" if path.endswith("_ping") else "application/json"
            )
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Api-Version", API_VERSION)
            self.send_header("Ostype", "linux")
            self.end_headers()
            if not head:
                self.wfile.write(data)

        def _route(self, path: str) -> tuple[int, Any]:
            if re.fullmatch(r"(?:/v[0-9.]+)?/_ping", path):
                return 200, b"OK"
            if re.fullmatch(r"(?:/v[0-9.]+)?/version", path):
                return 200, {
                    "Version": "27.0.0",
                    "ApiVersion": API_VERSION,
                    "MinAPIVersion": "1.24",
                    "Os": "linux",
                    "Arch": "amd64",
                }
            match = _ROUTE.match(path)
            if match:
                kind, key = match.groups()
                item = engine.lookup(kind, key)
                if item is not None:
                    return 200, item
                what = "container" if kind == "containers" else "image"
                return 404, {"message": f"No such {what}: {key}"}
            return 404, {"message": f"page not found: {path}"}

        def address_string(self) -> str:
            return "unix"

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def fake_docker_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEngine]:
    """A running fake engine; DOCKER_HOST points at it for the test's duration."""
    # A short directory: unix socket paths are limited to ~107 bytes, tmp_path can be longer.
    folder = Path(tempfile.mkdtemp(prefix="cirrus-docker-"))
    engine = FakeEngine(folder / "docker.sock")
    server = _Server(str(engine.socket_path), _handler(engine))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv("DOCKER_HOST", engine.url)
    for name in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT"):
        monkeypatch.delenv(name, raising=False)
    try:
        yield engine
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(folder, ignore_errors=True)
