"""Storage faults real servers do not produce on demand: bodies cut short, dropped connections,
501 answers, and a process forked while it holds pooled connections.

Each is served by a small stand-in for the S3 or GCS HTTP API (stdlib `http.server` in a thread,
HTTP/1.1 keep-alive) that answers the few requests a test makes; everything else is real:
boto3, google-cloud-storage, sockets and processes.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator

import attrs
import pytest

from cirrus.errors import PermanentStorageError, PreconditionFailed, TransientStorageError
from cirrus.storage import Store, open_backend
from cirrus.storage.retry import RetryPolicy
from tests.servers.moto_server import free_port

Answer = Callable[["Handler", int], None]


@attrs.define
class Request:
    method: str
    path: str
    port: int  # the client's port: one per TCP connection
    headers: dict[str, str]


@attrs.define
class StandIn:
    """A stand-in server: its URL and every request it got, in order."""

    url: str
    requests: list[Request] = attrs.field(factory=list)

    def count(self, method: str) -> int:
        return sum(r.method == method for r in self.requests)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 and GCS are
    stand_in: StandIn
    answer: Answer
    body = b""

    def log_message(self, *_args: object) -> None:
        pass

    def _handle(self) -> None:
        self.body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        request = Request(self.command, self.path, self.client_address[1], dict(self.headers))
        self.stand_in.requests.append(request)
        self.answer(self, self.stand_in.count(self.command))

    do_GET = do_PUT = do_POST = _handle

    def reply(self, status: int, body: bytes = b"", **headers: str) -> None:
        """A whole answer, keeping the connection open."""
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def cut(self, body: bytes, **headers: str) -> None:
        """Announce all of `body`, send 50 bytes of it, then reset the connection."""
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body[:50])
        self.wfile.flush()
        self.drop()

    def drop(self) -> None:
        """Close the connection without an answer (the request may have been applied)."""
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True


@contextlib.contextmanager
def stand_in(answer: Answer) -> Iterator[StandIn]:
    """Serve `answer(handler, n)` (n: the how-manyth request of its method) on 127.0.0.1."""
    served = StandIn(f"http://127.0.0.1:{free_port()}")
    handler = type(
        "StandInHandler", (Handler,), {"stand_in": served, "answer": staticmethod(answer)}
    )
    port = int(served.url.rsplit(":", 1)[1])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()


def s3_error(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>{message}</Message></Error>"
    ).encode()


BODY = b'{"description": "", "owners": [], "sources": [], "processing": []}' * 20


@pytest.fixture
def s3_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials for a stand-in S3 server (it checks none)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "stand-in")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "stand-in")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "")


def test_s3_body_cut_short_on_get_is_retried(s3_keys: None) -> None:
    """A GET whose connection breaks mid-body is transient: the retry reads the whole object."""

    def answer(handler: Handler, n: int) -> None:
        if n == 1:
            handler.cut(BODY, ETag='"e1"')
        else:
            handler.reply(200, BODY, ETag='"e1"')

    with stand_in(answer) as server:
        store = Store(open_backend(f"s3://{server.url}/bucket/layer"), RetryPolicy(deadline=5))
        blob = store.get("provenance")
    assert blob is not None and blob.data == BODY and blob.token == "e1"
    assert server.count("GET") == 2


def test_s3_swap_whose_answer_is_lost_reaches_the_conflict(s3_keys: None) -> None:
    """A compare-and-swap applied by the server whose connection then drops (twice) is
    retried; the retry finds its own write and answers a conflict, which the ledger resolves
    by re-reading."""
    stored = {"etag": "e1", "data": b"v1"}

    def answer(handler: Handler, n: int) -> None:
        matches = handler.headers.get("If-Match") == stored["etag"]
        if matches:
            stored.update(etag=f"e{n + 1}", data=handler.body)
        if n <= 2:
            handler.drop()  # the answer is lost, whether the swap was applied or not
        elif matches:
            handler.reply(200, ETag=f'"{stored["etag"]}"')
        else:
            handler.reply(412, s3_error("PreconditionFailed", "At least one failed"))

    with stand_in(answer) as server:
        store = Store(open_backend(f"s3://{server.url}/bucket/layer"), RetryPolicy(deadline=5))
        with pytest.raises(PreconditionFailed):
            store.swap("provenance", b"v2", "e1")
    assert stored["data"] == b"v2"
    assert server.count("PUT") == 3


def test_s3_errors_without_an_answer_are_transient() -> None:
    """botocore's timeouts and closed connections carry no response (`response` is None)."""
    from botocore import exceptions

    backend = open_backend("s3://http://127.0.0.1:9/bucket/layer")
    for error in (
        exceptions.ReadTimeoutError(endpoint_url="http://127.0.0.1:9/bucket/layer/provenance"),
        exceptions.ConnectTimeoutError(endpoint_url="http://127.0.0.1:9"),
        exceptions.ConnectionClosedError(endpoint_url="http://127.0.0.1:9"),
        exceptions.ResponseStreamingError(error="reset"),
        exceptions.IncompleteReadError(actual_bytes=50, expected_bytes=1320),
    ):
        assert isinstance(backend._classify(error, "provenance"), TransientStorageError), error


def test_s3_501_is_permanent_and_says_the_server_lacks_conditional_writes(s3_keys: None) -> None:
    def answer(handler: Handler, n: int) -> None:
        message = "A header you provided implies functionality that is not implemented"
        handler.reply(501, s3_error("NotImplemented", message))

    with stand_in(answer) as server:
        store = Store(open_backend(f"s3://{server.url}/bucket/layer"), RetryPolicy(deadline=10))
        with pytest.raises(PermanentStorageError, match="does not support") as caught:
            store.create("provenance.d/records/r.json", b"{}")
    assert server.count("PUT") == 1  # not retried
    assert "conditional writes" in str(caught.value)


def test_boto3_makes_one_attempt_per_call(s3_keys: None) -> None:
    """cirrus's RetryPolicy is the only retry layer: one backend call is one request."""

    def answer(handler: Handler, n: int) -> None:
        handler.reply(503, s3_error("ServiceUnavailable", "busy"))

    with stand_in(answer) as server:
        backend = open_backend(f"s3://{server.url}/bucket/layer")
        with pytest.raises(TransientStorageError, match="503"):
            backend.get("provenance")
    assert server.count("GET") == 1


def gcs_media(handler: Handler, n: int) -> None:
    """A stand-in for GCS's download endpoint: `BODY` as generation 7, cut short the first time."""
    media = "alt=media" in handler.path
    if media and sum("alt=media" in r.path for r in handler.stand_in.requests) == 1:
        handler.cut(BODY, x_goog_generation="7", Content_Type="application/json")
        return
    handler.reply(200, BODY, x_goog_generation="7", Content_Type="application/json")


def test_gcs_download_cut_short_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    with stand_in(gcs_media) as server:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
        store = Store(open_backend("gs://bucket/layer"), RetryPolicy(deadline=5))
        blob = store.get("provenance")
    assert blob is not None and blob.data == BODY and blob.token == "7"
    assert sum("alt=media" in r.path for r in server.requests) == 2


def test_gcs_transfer_failures_are_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    """What google-cloud-storage's own retry policy retries is transient here too."""
    import requests
    import urllib3
    from google.api_core import exceptions
    from google.auth import exceptions as auth_exceptions
    from google.cloud.storage.exceptions import DataCorruption

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    backend = open_backend("gs://bucket/layer")
    transient = [
        requests.exceptions.ChunkedEncodingError("reset mid-body"),
        http.client.IncompleteRead(b"x", 10),
        urllib3.exceptions.ProtocolError("Connection broken"),
        DataCorruption(None, "checksum mismatch"),
        auth_exceptions.RefreshError("metadata server: 503", retryable=True),
        exceptions.ServiceUnavailable("busy"),
    ]
    for error in transient:
        assert isinstance(backend._classify(error, "k"), TransientStorageError), error
    permanent = [
        auth_exceptions.RefreshError("invalid_grant"),
        exceptions.from_http_status(505, "HTTP version not supported"),
    ]
    for error in permanent:
        assert isinstance(backend._classify(error, "k"), PermanentStorageError), error


def test_gcs_501_is_permanent(monkeypatch: pytest.MonkeyPatch) -> None:
    def answer(handler: Handler, n: int) -> None:
        error = b'{"error": {"code": 501, "message": "ifGenerationMatch is not implemented"}}'
        handler.reply(501, error, Content_Type="application/json")

    with stand_in(answer) as server:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
        store = Store(open_backend("gs://bucket/layer"), RetryPolicy(deadline=10))
        with pytest.raises(PermanentStorageError, match="does not support"):
            store.create("provenance.d/records/r.json", b"{}")
    assert server.count("POST") == 1


def s3_object(handler: Handler, n: int) -> None:
    """A stand-in S3 GET: the object named by the last path part, as its own bytes."""
    name = handler.path.rsplit("/", 1)[1].encode()
    handler.reply(200, name * 100, ETag='"e1"')


def in_forked_child(work: Callable[[], bool]) -> int:
    """Run `work` in a forked child; its exit status (0: it returned True)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 1
        try:
            status = 0 if work() else 1
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_a_forked_child_opens_its_own_connections(
    scheme: str, s3_keys: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child forked after the parent used a layer must not reuse the parent's pooled
    keep-alive connection: both would then read each other's answers (the wrong object)."""
    answer = s3_object if scheme == "s3" else gcs_media
    with stand_in(answer) as server:
        if scheme == "s3":
            cloudpath = f"s3://{server.url}/bucket/layer"
        else:
            monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
            server.requests.append(Request("GET", "alt=media", 0, {}))  # no cut-short answer
            cloudpath = "gs://bucket/layer"
        before = open_backend(cloudpath)
        assert before.get("parent") is not None  # leaves a pooled keep-alive connection

        def child() -> bool:
            fresh = open_backend(cloudpath)
            return before.get("child") is not None and fresh.get("child2") is not None

        assert in_forked_child(child) == 0
        assert before.get("parent") is not None  # the parent's connection still works
    parent_ports = {r.port for r in server.requests if "parent" in r.path}
    child_ports = {r.port for r in server.requests if "child" in r.path}
    assert child_ports and not child_ports & parent_ports


@pytest.fixture
def tls_stand_in(tmp_path) -> Iterator[str]:
    """An HTTPS server whose certificate nobody signed: its URL."""
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],  # fmt: skip
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("protocol", ["s3", "gs"])
def test_a_certificate_that_fails_verification_is_permanent(
    protocol: str,
    tls_stand_in: str,
    s3_keys: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bad CA bundle or a wrong endpoint is no outage: it fails at once, naming the fix."""
    if protocol == "gs":
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", tls_stand_in)
        path = "gs://bucket/layer"
    else:
        path = f"s3://{tls_stand_in}/bucket/layer"
    store = Store(open_backend(path), RetryPolicy(deadline=20))
    with (
        caplog.at_level(logging.DEBUG, logger="cirrus.storage"),
        pytest.raises(PermanentStorageError, match="certificate failed verification") as raised,
    ):
        store.get("provenance")
    assert not [r for r in caplog.records if "retrying" in r.message]  # not retried
    assert ("AWS_CA_BUNDLE" if protocol == "s3" else "REQUESTS_CA_BUNDLE") in str(raised.value)
