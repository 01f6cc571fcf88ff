"""Shared by tests and benchmarks: empty precomputed layers and temporary environment variables."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

# Credentials for the local S3 servers (moto, Ceph RGW); CloudFiles needs AWS_SESSION_TOKEN set.
S3_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def make_layer(
    path: str,
    size: tuple[int, int, int] | list[int],
    chunk: int,
    *,
    layer_type: str = "image",
    dtype: str = "uint8",
) -> Any:
    """A new, empty precomputed layer (info only) written with plain CloudVolume; returns it."""
    from cloudvolume import CloudVolume

    segmentation = layer_type == "segmentation"
    info = CloudVolume.create_new_info(
        num_channels=1,
        layer_type=layer_type,
        data_type=dtype,
        encoding="raw",
        resolution=[4, 4, 40],
        voxel_offset=[0, 0, 0],
        volume_size=list(size),
        chunk_size=[chunk, chunk, chunk],
        mesh="mesh" if segmentation else None,
        skeletons="skeletons" if segmentation else None,
    )
    volume = CloudVolume(path, info=info, progress=False)
    volume.commit_info()
    return volume


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the block, restoring the previous values afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
