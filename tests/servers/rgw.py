"""A real S3 server for tests and benchmarks: a one-node Ceph cluster with RGW, in a temp dir.

One monitor, one OSD on ``memstore`` (RAM-backed, bounded by ``memstore_bytes``), no mgr, no auth,
pool size 1, and ``radosgw`` with the beast frontend on 127.0.0.1. Every path (config, keyrings,
mon and OSD data, run dir, admin sockets, logs) lives under one temp dir, removed on exit; every
port is picked free at runtime. If ``radosgw`` is not on PATH, ``scripts/install-rgw.sh`` installs
the Debian packages first (a fresh CI machine has none).

    with rgw_server() as rgw:
        rgw.make_bucket("b")
        s3 = rgw.client()

Or from a shell: ``.venv/bin/python -m tests.servers.rgw`` prints the endpoint and waits for Ctrl-C.

RGW 16 quirks (compared with AWS and moto): it compares ``If-Match`` etags literally, so pass the
ETag without its quotes; ``IfMatch`` on a missing key answers 412 (AWS and moto: 404);
``delete_object`` ignores ``IfMatch``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = ROOT / "scripts" / "install-rgw.sh"

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"

DEFAULT_MEMSTORE_BYTES = 1 << 30  # 1 GiB of RAM at most for all object data


class RGWError(RuntimeError):
    """The RGW server could not be installed or started."""


class RGWInstallError(RGWError):
    """The Debian packages for Ceph RGW could not be installed."""


@dataclass
class RGW:
    """A running RGW server: where it is, how to log in, and its daemons."""

    endpoint_url: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION
    root: Path | None = None
    pids: dict[str, int] = field(default_factory=dict)
    startup_seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)

    def client(self, **config):
        """A boto3 S3 client for this server (path-style addressing; ``config`` adds to it)."""
        import boto3
        from botocore.config import Config

        cfg = Config(s3={"addressing_style": "path"}, **config)
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=cfg,
        )

    def make_bucket(self, name: str) -> str:
        """Create bucket ``name`` (fine if it already exists) and return its name."""
        s3 = self.client()
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=name)
        return name

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 and CloudFiles' ``s3://`` at this server."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_SESSION_TOKEN": "",
            "AWS_DEFAULT_REGION": self.region,
        }

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each daemon, in bytes (0 for one that is gone)."""
        return {name: _rss(pid) for name, pid in self.pids.items()}


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} is not readable)"
    return "\n".join(text.splitlines()[-lines:]) or f"({path} is empty)"


def ensure_installed(timeout: float = 600.0) -> None:
    """Install the Ceph packages through scripts/install-rgw.sh unless radosgw is on PATH."""
    if shutil.which("radosgw"):
        return
    try:
        proc = subprocess.run(
            ["bash", str(INSTALL_SCRIPT)],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as e:
        raise RGWInstallError(f"{INSTALL_SCRIPT} did not finish in {timeout:.0f} s") from e
    if proc.returncode != 0 or not shutil.which("radosgw"):
        raise RGWInstallError(
            f"cannot install Ceph RGW with {INSTALL_SCRIPT} (exit {proc.returncode}):\n"
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        )


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    # Linux prctl(PR_SET_PDEATHSIG, SIGTERM): the daemon gets SIGTERM if this process dies
    # without cleaning up (SIGKILL, crash), so no daemon outlives its test run.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


class _Cluster:
    def __init__(self, root: Path, mon_port: int, rgw_port: int, memstore_bytes: int):
        self.root = root
        self.mon_port = mon_port
        self.rgw_port = rgw_port
        self.memstore_bytes = memstore_bytes
        self.conf = root / "ceph.conf"
        self.logs = root / "log"
        self.procs: dict[str, subprocess.Popen] = {}
        self.fsid = str(uuid.uuid4())

    # -- files -----------------------------------------------------------------
    def write_config(self) -> None:
        r = self.root
        for d in ("run", "log", "mon", "osd/ceph-0", "rgw/ceph-rgw.0"):
            (r / d).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            f"""[global]
fsid = {self.fsid}
mon host = 127.0.0.1:{self.mon_port}
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
run dir = {r}/run
log file = {r}/log/$name.log
admin socket = {r}/run/$name.$pid.asok
pid file = {r}/run/$name.pid
keyring = {r}/keyring
log to stderr = false
err to stderr = true
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0

[mon]
mon data = {r}/mon/$cluster-$id
# One monitor: commit map changes at once instead of batching them for 1 s each. RGW creates
# its pools one by one at startup, so this takes startup from ~13 s to a few seconds.
paxos propose interval = 0.05
paxos min wait = 0.01

[osd]
osd data = {r}/osd/$cluster-$id
osd objectstore = memstore
memstore device bytes = {self.memstore_bytes}
osd crush update on start = true

[client.rgw.0]
# radosgw defaults this to "secure", which auth "none" cannot do: it never reaches the monitor.
ms mon client mode = crc secure
# tcp_nodelay: without it every GET waits ~40 ms for a delayed ACK (48 ms -> 4 ms per GET).
rgw frontends = beast endpoint=127.0.0.1:{self.rgw_port} tcp_nodelay=1
rgw data = {r}/rgw/$cluster-rgw.0
rgw thread pool size = 64
rgw enable usage log = false
"""
        )

    # -- processes -------------------------------------------------------------
    def run(self, *args: str, timeout: float = 30.0, log: str | None = None) -> str:
        """Run a ceph tool to completion; raise RGWError with its output (and a log tail)."""
        cmd = [args[0], "-c", str(self.conf), *args[1:]]
        try:
            p = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as e:
            raise RGWError(
                f"{' '.join(cmd)} did not finish in {timeout:.0f} s" + self._log_hint(log)
            ) from e
        if p.returncode != 0:
            raise RGWError(
                f"{' '.join(cmd)} failed (exit {p.returncode}):\n{p.stderr.strip()}"
                + self._log_hint(log)
            )
        return p.stdout

    def start(self, name: str, *args: str) -> None:
        out = open(self.logs / f"{name}.out", "wb")  # noqa: SIM115 - child keeps it
        try:
            self.procs[name] = subprocess.Popen(
                [args[0], "-c", str(self.conf), *args[1:]],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us, and we stop the daemons in order
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        finally:
            out.close()

    def check_alive(self, name: str) -> None:
        p = self.procs[name]
        if p.poll() is not None:
            raise RGWError(f"{name} exited with code {p.returncode}" + self._log_hint(name))

    # Seconds each daemon gets after SIGTERM before SIGKILL. radosgw takes ~9 s to exit
    # gracefully (it drains its frontend); the cluster is thrown away, so don't wait for that.
    GRACE = {"client.rgw.0": 2.0, "osd.0": 5.0, "mon.a": 5.0}

    def stop(self) -> None:
        """Stop the daemons by PID, newest first (RGW, OSD, then the monitor they talk to)."""
        for name in reversed(list(self.procs)):
            p = self.procs[name]
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)
                try:
                    p.wait(self.GRACE.get(name, 5.0))
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p.pid, signal.SIGKILL)
                    p.wait(5)

    def _log_hint(self, name: str | None) -> str:
        if name is None:
            return ""
        parts = []
        for path in (self.logs / f"{name}.log", self.logs / f"{name}.out"):
            if path.exists() and path.stat().st_size:
                parts.append(f"\n--- tail of {path} ---\n{_tail(path)}")
        return "".join(parts)

    def wait(self, what: str, check, timeout: float, log: str, alive: tuple[str, ...] = ()):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            for name in alive:
                self.check_alive(name)
            try:
                if check():
                    return
            except Exception as e:  # keep polling; report the last error on timeout
                last = e
            time.sleep(0.2)
        raise RGWError(
            f"timed out after {timeout:.0f} s waiting for {what}"
            + (f" (last error: {last})" if last else "")
            + self._log_hint(log)
        )

    # -- steps -----------------------------------------------------------------
    def start_mon(self, timeout: float) -> None:
        r = self.root
        self.run(
            "ceph-authtool",
            "--create-keyring",
            str(r / "mon.keyring"),
            "--gen-key",
            "-n",
            "mon.",
            "--cap",
            "mon",
            "allow *",
        )
        self.run(
            "monmaptool",
            "--create",
            "--fsid",
            self.fsid,
            "--add",
            "a",
            f"127.0.0.1:{self.mon_port}",
            str(r / "monmap"),
        )
        self.run(
            "ceph-mon",
            "--mkfs",
            "-i",
            "a",
            "--monmap",
            str(r / "monmap"),
            "--keyring",
            str(r / "mon.keyring"),
            log="mon.a",
        )
        self.start("mon.a", "ceph-mon", "-f", "-i", "a")
        self.wait(
            "the monitor",
            lambda: self.ceph("mon", "stat", timeout=5) is not None,
            timeout,
            "mon.a",
            alive=("mon.a",),
        )

    def ceph(self, *args: str, timeout: float = 15.0) -> str:
        return self.run(
            "ceph", "--connect-timeout", str(int(timeout)), *args, timeout=timeout + 5, log="mon.a"
        )

    def start_osd(self, timeout: float) -> None:
        osd_uuid = str(uuid.uuid4())
        osd_id = self.ceph("osd", "new", osd_uuid).strip()
        if osd_id != "0":
            raise RGWError(f"expected OSD id 0, the monitor gave {osd_id!r}")
        self.run("ceph-osd", "-i", "0", "--mkfs", "--osd-uuid", osd_uuid, log="osd.0")
        self.start("osd.0", "ceph-osd", "-f", "-i", "0")

        def osd_up() -> bool:
            dump = json.loads(self.ceph("osd", "dump", "--format", "json", timeout=5))
            return any(o["osd"] == 0 and o["up"] == 1 for o in dump["osds"])

        self.wait("OSD 0 to be up", osd_up, timeout, "osd.0", alive=("mon.a", "osd.0"))

    def start_rgw(self, timeout: float) -> RGW:
        self.start("client.rgw.0", "radosgw", "-f", "-n", "client.rgw.0")
        # The user lives in RADOS: create it once RGW has made its pools (radosgw-admin could
        # make them too, but then both race to create the same pools).
        handle = RGW(endpoint_url=f"http://127.0.0.1:{self.rgw_port}", root=self.root)

        def http_up() -> bool:
            with socket.create_connection(("127.0.0.1", self.rgw_port), timeout=1):
                return True

        alive = ("mon.a", "osd.0", "client.rgw.0")
        self.wait("RGW to listen", http_up, timeout, "client.rgw.0", alive=alive)
        self.run(
            "radosgw-admin",
            "user",
            "create",
            "--uid=test",
            "--display-name=test",
            f"--access-key={ACCESS_KEY}",
            f"--secret-key={SECRET_KEY}",
            timeout=timeout,
            log="client.admin",
        )
        s3 = handle.client(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=5)
        self.wait(
            "RGW to answer S3 requests",
            lambda: s3.list_buckets() is not None,
            timeout,
            "client.rgw.0",
            alive=alive,
        )
        handle.pids = {name: p.pid for name, p in self.procs.items()}
        return handle


@contextlib.contextmanager
def rgw_server(
    *,
    port: int | None = None,
    memstore_bytes: int = DEFAULT_MEMSTORE_BYTES,
    timeout: float = 60.0,
    keep_dir: bool = False,
) -> Iterator[RGW]:
    """Start a one-node Ceph cluster with RGW in a temp dir; stop it and remove the dir on exit.

    ``timeout`` bounds each wait (monitor, OSD, RGW) separately. On any failure the daemons
    started so far are stopped before the error (with the relevant log's tail) propagates.
    """
    t0 = time.monotonic()
    ensure_installed()
    phases = {"install": time.monotonic() - t0}
    root = Path(tempfile.mkdtemp(prefix="cirrus-rgw-"))
    cluster = _Cluster(root, free_port(), port or free_port(), memstore_bytes)
    try:
        t = time.monotonic()
        cluster.write_config()
        cluster.start_mon(timeout)
        phases["mon"] = time.monotonic() - t
        t = time.monotonic()
        cluster.start_osd(timeout)
        phases["osd"] = time.monotonic() - t
        t = time.monotonic()
        handle = cluster.start_rgw(timeout)
        phases["rgw"] = time.monotonic() - t
        handle.phase_seconds = phases
        handle.startup_seconds = time.monotonic() - t0
        yield handle
    finally:
        cluster.stop()
        if not keep_dir:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m tests.servers.rgw",
        description="Run a throwaway one-node Ceph RGW S3 server until Ctrl-C.",
    )
    ap.add_argument("--port", type=int, default=None, help="S3 port (default: a free one)")
    ap.add_argument(
        "--memstore-mib",
        type=int,
        default=DEFAULT_MEMSTORE_BYTES >> 20,
        help="RAM for object data, MiB (default: %(default)s)",
    )
    ap.add_argument("--timeout", type=float, default=60.0, help="bound for each startup wait")
    args = ap.parse_args(argv)

    # SIGTERM stops the daemons too, like Ctrl-C.
    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        with rgw_server(
            port=args.port, memstore_bytes=args.memstore_mib << 20, timeout=args.timeout
        ) as rgw:
            phases = ", ".join(f"{k} {v:.1f} s" for k, v in rgw.phase_seconds.items())
            rss = sum(rgw.rss_bytes().values()) / 2**20
            print(f"RGW ready in {rgw.startup_seconds:.1f} s ({phases}); daemons use {rss:.0f} MiB")
            print(f"endpoint_url = {rgw.endpoint_url}")
            print(f"access_key = {rgw.access_key}  secret_key = {rgw.secret_key}")
            for k, v in rgw.env().items():
                print(f"export {k}={v}")
            print("Ctrl-C to stop.", flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("stopped.")
        return 0
    except RGWError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
