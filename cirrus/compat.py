"""The predecessors' call shapes: cirrus-volume's CloudVolume and provenance-toolbox's helpers.

Both log through cirrus's ledger: one record per session, never one commit per write.
"""

from __future__ import annotations

import atexit
import os
import sys
import uuid
import weakref
from typing import Any

from cirrus import termination
from cirrus.commit import commit_records
from cirrus.demands import validate_process
from cirrus.errors import Terminated
from cirrus.handles import RULES, Gate, track
from cirrus.ledger import Ledger, env_blobs
from cirrus.model import Note, Process, utcnow
from cirrus.reading import require_layer
from cirrus.records import make_record
from cirrus.session import Session
from cirrus.storage.paths import normalise_cloudpath, use_secrets
from cirrus.storage.s3 import session_token_explained
from cirrus.writeset import WriteTracker


class _Documentation:
    """cirrus-volume's three rules on one volume, with a session opened on the first write."""

    def __init__(self, volume: Any, layer: str):
        self.volume = weakref.proxy(volume)
        self.layer = layer
        self.session: Session | None = None
        self.key: tuple | None = None
        self.gate = Gate(layer, WriteTracker(), self.refusal, self.writing)
        self.sigterm = False  # whether the open session took SIGTERM over (`termination`)

    def refusal(self) -> str | None:
        volume = self.volume
        missing = [
            name
            for name in ("sources", "motivation", "process")
            if volume.__dict__.get(name) is None
        ]
        if missing:
            return (
                f"this volume has no {', '.join(missing)}: set them on it (vol.sources = [...], "
                "vol.motivation = '...', vol.process = cirrus.Process(...)) or pass them to "
                f"cirrus.CloudVolume(path, sources=..., motivation=..., process=...). {RULES}"
            )
        key = (tuple(volume.sources), volume.motivation, id(volume.process))
        session = self.session
        if session is not None and session.state == "open":
            reason = session._refusal()  # its commit failed: retry it before writing on
            if reason is not None:
                return f"{reason} (here: vol.commit())"
            if key == self.key:
                return None
        self.commit()  # the provenance changed, or the last commit stopped while publishing
        self.session = Session(volume.sources, volume.motivation, volume.process)
        self.session._finalizer.detach()  # this volume commits it itself, even at exit
        self.sigterm = termination.enter()  # SIGTERM raises, so the exit records the writes
        self.gate.tracker = self.session._trackers.setdefault(self.layer, WriteTracker())
        self.key = key
        return None

    def writing(self, layer: str) -> None:
        self.session._writing(layer)  # `refusal` has just opened it

    def commit(self) -> dict[str, str]:
        """Commit the open session; if that fails it stays open, so a retry reaches it."""
        return self._end(None)

    def at_end(self) -> None:
        """When the volume goes away or the program exits: committed, unless the program is
        ending on an exception (Ctrl-C, SIGTERM, a crash), which the records then name.

        Nothing in a forked child: its copy of the session is its parent's, which commits it."""
        if os.getpid() != self.gate.pid:
            return
        self._end(_EXIT.get("error"))

    def _end(self, error: BaseException | None) -> dict[str, str]:
        session, records = self.session, {}
        if session is not None and session.state == "open":
            records = session.commit() if error is None else session.fail(error)
        if self.sigterm:
            termination.leave()
            self.sigterm = False
        self.session, self.key = None, None
        return records


_EXIT: dict[str, BaseException | None] = {}


def _note_exit() -> None:
    """At exit, before the volumes' finalizers run: the exception that ends a script, if any
    (an interactive interpreter keeps the last one it printed, so it names none)."""
    interactive = hasattr(sys, "ps1") or "IPython" in sys.modules
    _EXIT["error"] = None if interactive else getattr(sys, "last_value", None)
    if termination.raised():
        _EXIT["error"] = Terminated()


def CloudVolume(  # noqa: N802 - a factory named like the class it returns, as cirrus-volume's
    cloudpath: str,
    *args: Any,
    sources: list[str] | None = None,
    motivation: str | None = None,
    process: Process | None = None,
    **kwargs: Any,
) -> Any:
    """A CloudVolume that refuses writes until sources, motivation and process are set.

    They may be passed here or set later as attributes (`vol.process = ...`). Writes are logged
    through one session, committed by `vol.commit()`, when the attributes change, or at exit.
    Without them, reads work and every write raises `ProvenanceRequired` naming the rules.

    At exit the session is recorded `failed` when an exception ends the program (a crash,
    Ctrl-C, SIGTERM) and `committed` otherwise, including `sys.exit(1)`: Python's exit hooks are
    not told the exit status. To record a failure, raise an exception (Python exits 1 too) or
    write inside `with cirrus.session(...)`, which records a non-zero `sys.exit` as failed.
    """
    import cloudvolume

    layer = normalise_cloudpath(cloudpath)
    if kwargs.get("secrets") is not None:
        use_secrets(layer, kwargs["secrets"])  # the provenance goes where the data goes
    with session_token_explained(cloudpath):
        volume = cloudvolume.CloudVolume(cloudpath, *args, **kwargs)
    documentation = _Documentation(volume, layer)
    track(volume, documentation.gate)
    volume.sources, volume.motivation, volume.process = sources, motivation, process
    volume.commit = documentation.commit
    # cirrus-volume had no explicit end: commit when the volume goes away or the program exits.
    weakref.finalize(volume, documentation.at_end)
    if not _EXIT:  # registered after weakref's own exit hook, so it runs before the finalizers
        atexit.register(_note_exit)
        _EXIT["error"] = None
    return volume


def _annotate(volume: Any, notes: list[Note], process: Process | None = None) -> str:
    """Record notes (and optionally a process) on a volume without writing data."""
    cloudpath = volume if isinstance(volume, str) else volume.cloudpath
    layer = normalise_cloudpath(cloudpath)
    secrets = getattr(getattr(volume, "config", None), "secrets", None)
    if secrets is not None:
        use_secrets(layer, secrets)  # a CloudVolume's own credentials
    summary = Ledger.open(layer).summary_blob()  # a malformed one is refused before staging
    if summary is None:
        require_layer(layer)  # a mistyped path would collect the notes meant for the volume
    record = make_record(
        session=uuid.uuid4().hex,
        layer=layer,
        process=process,
        sources=(),
        notes=notes,
        started=utcnow(),
    )
    blobs = env_blobs(process.env_documents()) if process is not None else []
    return commit_records({layer: record}, blobs, {layer: summary})[layer]


def log_process(volume: Any, process: Process) -> str:
    """provenance-toolbox's `logprocess`: record a process on a volume (a CloudVolume or path)."""
    return _annotate(volume, [], validate_process(process))


def add_motivation(volume: Any, text: str) -> str:
    return _annotate(volume, [Note("motivation", text)])


def add_result(volume: Any, text: str) -> str:
    return _annotate(volume, [Note("result", text)])


def add_note(volume: Any, text: str) -> str:
    return _annotate(volume, [Note("generic", text)])


# provenance-toolbox's spellings, so `ptb.addresult(vol, ...)` ports by changing the import
logprocess = log_process
addmotivation = add_motivation
addresult = add_result
addgeneric = add_note


def from_numpy(
    arr: Any,
    vol_path: str,
    resolution: tuple[float, float, float] = (4, 4, 40),
    voxel_offset: tuple[int, int, int] = (0, 0, 0),
    chunk_size: tuple[int, int, int] = (128, 128, 64),
    layer_type: str | None = None,
    max_mip: int = 0,
    encoding: str = "raw",
    compress: Any = None,
    progress: bool = False,
    *,
    sources: list[str],
    motivation: str,
    process: Process,
) -> Any:
    """`CloudVolume.from_numpy`, recorded: a new layer at `vol_path` holding `arr` at mip 0.

    The write is one cirrus session, committed before this returns, where CloudVolume's own
    overwrites the layer's `provenance` blindly. Refused before anything is written when the
    provenance is incomplete or `vol_path` is a layer already (write into it with
    `cirrus.CloudVolume(vol_path, ...)`). Returns `cirrus.CloudVolume(vol_path, ...)` with the
    same sources, motivation and process, so later writes are recorded too.
    """
    import cloudvolume
    import numpy as np

    from cirrus.errors import InvalidInput
    from cirrus.reading import has_info
    from cirrus.storage import open_store

    session = Session(sources, motivation, process)  # refuses incomplete provenance first
    if has_info(open_store(vol_path)):
        raise InvalidInput(
            f"{normalise_cloudpath(vol_path)} is a layer already (it has an info file); "
            "from_numpy makes a new one: write into this one with "
            "cirrus.CloudVolume(path, sources=..., motivation=..., process=...)"
        )
    arr = np.asarray(arr)
    if arr.ndim not in (3, 4):
        raise InvalidInput(f"arr must be 3 or 4 dimensional (x, y, z[, channel]), got {arr.shape}")
    if layer_type is None:  # as CloudVolume.from_numpy chooses
        segmentation = arr.dtype in (bool, np.uint16, np.uint32, np.uint64)
        layer_type = "segmentation" if segmentation else "image"
    info = cloudvolume.CloudVolume.create_new_info(
        arr.shape[3] if arr.ndim == 4 else 1,
        layer_type,
        np.dtype(arr.dtype).name,
        encoding,
        resolution,
        voxel_offset,
        arr.shape[:3],
        chunk_size=chunk_size,
        max_mip=max_mip,
    )
    _check_encoding(arr, info)  # before the info is stored: a refusal leaves no layer behind
    options = {"bounded": True, "compress": compress, "progress": progress}
    cloudvolume.CloudVolume(vol_path, info=info, **options).commit_info()
    with session:
        session.volume(vol_path, **options)[:, :, :] = arr
    return CloudVolume(vol_path, sources=sources, motivation=motivation, process=process, **options)


CloudVolume.from_numpy = from_numpy  # type: ignore[attr-defined]  # as cirrus-volume's had it


def _check_encoding(arr: Any, info: dict[str, Any]) -> None:
    """Encode one chunk's worth of `arr` as the layer will: CloudVolume refuses a dtype its
    encoding cannot take (jpeg and uint32, say) only at the first chunk it uploads."""
    from cloudvolume.chunks import encode

    from cirrus.errors import InvalidInput

    scale = info["scales"][0]
    size = scale["chunk_sizes"][0]
    sample = arr[: size[0], : size[1], : size[2]]
    sample = sample.reshape(*sample.shape[:3], info["num_channels"])
    try:
        encode(sample, scale["encoding"], scale.get("compressed_segmentation_block_size"))
    except ImportError as error:  # an optional codec; CloudVolume's message names its package
        raise InvalidInput(
            f"encoding={scale['encoding']!r} needs a codec that is not installed here: {error} "
            "(or choose another encoding, e.g. 'raw')"
        ) from None
    except Exception as error:  # CloudVolume's own: ValueError, NotImplementedError, ...
        raise InvalidInput(
            f"arr ({arr.dtype}) cannot be stored with encoding={scale['encoding']!r}: "
            f"{type(error).__name__}: {error}; choose an encoding for {arr.dtype} (e.g. 'raw')"
        ) from None
