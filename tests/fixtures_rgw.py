"""Fixtures for a real S3 server: Ceph RGW (tests/servers/rgw.py), started once per session.

The server starts lazily, only when a test asks for ``rgw_endpoint`` (or ``rgw_bucket``), and
installs the Debian packages through scripts/install-rgw.sh on a fresh machine. If it cannot be
installed or started, every test that needs it FAILS with the reason: a skip would hide the gap.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import uuid

import pytest

from tests.servers.rgw import RGW, rgw_server

_bucket_counter = itertools.count()


@pytest.fixture(scope="session")
def rgw_endpoint() -> RGW:
    """The running RGW server: ``endpoint_url``, ``access_key``, ``secret_key``, ``make_bucket``."""
    with contextlib.ExitStack() as stack:
        error = None
        try:
            rgw = stack.enter_context(rgw_server())
        except Exception as e:
            error = f"cannot start the Ceph RGW S3 server: {type(e).__name__}: {e}"
        if error is not None:  # outside the except: no chained traceback, just the reason
            pytest.fail(error, pytrace=False)
        rss = sum(rgw.rss_bytes().values()) / 2**20
        print(
            f"\nRGW at {rgw.endpoint_url} ready in {rgw.startup_seconds:.1f} s, "
            f"daemons {rss:.0f} MiB",
            file=sys.stderr,
        )
        yield rgw


@pytest.fixture
def rgw_bucket(rgw_endpoint: RGW) -> str:
    """A fresh, empty bucket on the RGW server (name unique per test); emptied and removed after."""
    name = f"t-{os.getpid()}-{next(_bucket_counter)}-{uuid.uuid4().hex[:8]}"
    rgw_endpoint.make_bucket(name)
    yield name
    # Best effort: memstore is RAM, so give the space back.
    s3 = rgw_endpoint.client()
    with contextlib.suppress(Exception):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
        s3.delete_bucket(Bucket=name)
