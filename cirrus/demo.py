"""`cirrus demo`: the README's example, run for real on small local `file://` volumes.

Two sessions: the first writes a synthetic image; the second reads it and writes a segmentation
and a boundary map in one multi-volume session, with a code environment of the current directory
when it is a git repository (when it is not, the session says so in a note).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

SIZE = (128, 128, 64)
CHUNK = (64, 64, 64)


def _info(layer_type: str, dtype: str) -> dict[str, Any]:
    from cloudvolume import CloudVolume

    return CloudVolume.create_new_info(
        num_channels=1,
        layer_type=layer_type,
        data_type=dtype,
        encoding="raw",
        resolution=[8, 8, 40],
        voxel_offset=[0, 0, 0],
        volume_size=list(SIZE),
        chunk_size=list(CHUNK),
    )


def _git_root(path: str) -> str | None:
    try:
        import git

        with git.Repo(path, search_parent_directories=True) as repo:
            return repo.working_tree_dir if repo.head.is_valid() else None
    except Exception:  # not a repository, no git binary: the demo records that instead
        return None


def run(directory: str | None = None) -> dict[str, str]:
    """Create the demo volumes under `directory` (a new temporary one by default).

    Returns {"image": ..., "segmentation": ..., "boundaries": ...} as file:// cloudpaths.
    """
    import numpy as np
    from cloudvolume import CloudVolume

    import cirrus
    from cirrus.errors import InvalidInput

    root = os.path.abspath(directory or tempfile.mkdtemp(prefix="cirrus-demo-"))
    names = ("image", "segmentation", "boundaries")
    taken = [name for name in names if os.path.lexists(os.path.join(root, name))]
    if taken:  # the demo makes new volumes: it must not paint over a layer of the same name
        raise InvalidInput(
            f"{', '.join(os.path.join(root, name) for name in taken)} exist(s) already, and "
            "the demo only makes new volumes: name a new or empty directory, or none for a "
            "temporary one"
        )
    os.makedirs(root, exist_ok=True)
    paths = {name: f"file://{os.path.join(root, name)}" for name in names}
    rng = np.random.default_rng(0)

    acquire = cirrus.Process("synthesise a test image", {"seed": 0, "size": list(SIZE)})
    with cirrus.session(
        sources=["synthetic noise from numpy (seed 0)"],
        motivation="a small image to run the cirrus demo on",
        process=acquire,
    ) as s:
        image = s.volume(paths["image"], info=_info("image", "uint8"), progress=False)
        image.commit_info()
        image[:, :, :] = rng.integers(0, 255, size=SIZE, dtype=np.uint8)
        s.result(f"{SIZE[0]}x{SIZE[1]}x{SIZE[2]} voxels of noise")

    here = _git_root(os.getcwd())
    envs = [cirrus.PythonGithubEnv(here)] if here else []
    threshold = 128
    segment = cirrus.Process(
        "threshold and label", {"threshold": threshold, "connectivity": 6}, *envs
    )
    with cirrus.session(
        sources=[paths["image"]],
        motivation="bootstrap a segmentation for proofreading",
        process=segment,
    ) as s:
        if not here:
            s.note(f"{os.getcwd()} is not a git repository: no code environment recorded")
        data = CloudVolume(paths["image"], progress=False)[:, :, :]  # reads need nothing
        seg = s.volume(paths["segmentation"], info=_info("segmentation", "uint32"), progress=False)
        edges = s.volume(paths["boundaries"], info=_info("image", "uint8"), progress=False)
        seg.commit_info()
        edges.commit_info()
        labels = (np.asarray(data) > threshold).astype(np.uint32)
        for z in range(0, SIZE[2], CHUNK[2]):  # chunk by chunk, as a pipeline would
            for x in range(0, SIZE[0], CHUNK[0]):
                seg[x : x + CHUNK[0], :, z : z + CHUNK[2]] = labels[
                    x : x + CHUNK[0], :, z : z + CHUNK[2]
                ]
        edges[:, :, :] = (np.abs(np.diff(labels, axis=0, prepend=0)) * 255).astype(np.uint8)
        s.result(f"{int(labels.sum())} voxels above {threshold}")
    return paths
