"""Write handles: real CloudVolumes whose every write path is gated and tracked.

Gates sit on the data sources (image, mesh, skeleton, their metadata), which every frontend
write path goes through, so `vol[...] = x`, `upload_from_shared_memory`, `image.upload`,
`delete`, `commit_info`, mesh and skeleton uploads are all covered once. Paths that would write
without provenance (`commit_provenance`, `transfer_to` into another layer) are refused.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import attrs

from cirrus.canonical import sha256_hex
from cirrus.errors import InvalidInput, ProvenanceRequired
from cirrus.writeset import WriteTracker

RULES = (
    "cirrus records provenance for every write, so a write needs three things: "
    "(1) sources, a list of cloudpaths or free-text origins; (2) a motivation, why the data is "
    "made; (3) a cirrus.Process (description, parameters, code environments). Write through "
    "`with cirrus.session(sources=[...], motivation='...', process=process) as s: "
    "vol = s.volume(path)`"
)
PARALLEL = (
    "cirrus write handles upload with parallel=1: CloudVolume's parallel upload pickles the "
    "volume into child processes, where writes can be lost. Run many tasks instead "
    "(cirrus.step / cirrus.join), each with its own handle"
)
ACROSS_PROCESSES = (
    "For many processes, open a step (cirrus.step(...)) and in each worker write through "
    "`with cirrus.join(step.token, task=...) as t: t.volume(path)`"
)

# (attribute path on the CloudVolume, method names, operation recorded)
GATES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("meta", ("commit_info",), "info"),
    ("mesh", ("put",), "mesh"),
    ("mesh", ("delete",), "mesh_delete"),
    ("mesh.meta", ("commit_info",), "mesh_info"),
    ("skeleton", ("upload", "upload_raw", "put"), "skeleton"),
    ("skeleton", ("delete",), "skeleton_delete"),
    ("skeleton.meta", ("commit_info",), "skeleton_info"),
)


@attrs.define
class Gate:
    """The link from one handle to its session: may it write, and where writes are tallied."""

    layer: str
    tracker: WriteTracker
    refusal: Callable[[], str | None]  # None while writes are allowed, else the reason
    writing: Callable[[str], None]  # told before each admitted write (a session marks itself open)
    pid: int = attrs.field(factory=os.getpid)  # the process whose session tallies the writes

    def admit(self) -> None:
        if os.getpid() != self.pid:
            raise ProvenanceRequired(
                f"{self.layer}: this write handle belongs to a session of process {self.pid}; "
                f"a forked worker's writes would be tallied in its own copy and never recorded. "
                f"{ACROSS_PROCESSES}"
            )
        reason = self.refusal()
        if reason is not None:
            raise ProvenanceRequired(f"{self.layer}: {reason}")
        self.writing(self.layer)


def track(volume: Any, gate: Gate) -> Any:
    """Gate and track every write path of `volume` (a CloudVolumePrecomputed) in place."""
    if volume.parallel not in (1, False, None):
        raise InvalidInput(f"{gate.layer}: parallel={volume.parallel!r}; {PARALLEL}")
    volume.__class__ = _handle_class(type(volume))
    volume._cirrus_gate = gate
    _gate_image_upload(volume, gate)
    _gate_image_delete(volume, gate)
    for path, names, operation in GATES:
        owner = _resolve(volume, path)
        for name in names:
            if owner is not None and callable(getattr(owner, name, None)):
                # the meta, not the volume: a volume -> wrapper -> volume cycle would keep
                # compat volumes alive until cyclic GC, delaying their commit
                _wrap(owner, name, functools.partial(_note_operation, volume.meta, gate, operation))
    _wrap(volume.meta, "commit_provenance", functools.partial(_refuse_provenance, gate))
    return volume


def _resolve(volume: Any, path: str) -> Any:
    owner = volume
    for part in path.split("."):
        owner = getattr(owner, part, None)
    return owner


def _refusal(error: Exception, *_args: Any, **_kwargs: Any) -> bool:
    return isinstance(error, _refused())


def _wrap(
    owner: Any,
    name: str,
    before: Callable[..., Callable[[], Any] | None],
    refused: Callable[..., bool] = _refusal,
) -> None:
    """Run `before` ahead of the method; if it returns an undo and CloudVolume refuses the call
    outright (nothing written: `refused(error, *args, **kwargs)`, by default one of CloudVolume's
    refusal errors), the undo takes the tally back."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def gated(*args: Any, **kwargs: Any) -> Any:
        undo = before(*args, **kwargs)
        try:
            return original(*args, **kwargs)
        except Exception as error:
            if undo is not None and refused(error, *args, **kwargs):
                undo()
            raise

    setattr(owner, name, gated)


@functools.cache
def _refused() -> tuple[type[BaseException], ...]:
    """CloudVolume's errors for writes it refuses before touching storage."""
    from cloudvolume import exceptions

    return (exceptions.AlignmentError, exceptions.OutOfBoundsError, exceptions.ReadOnlyException)


def info_digest(info: Any) -> str:
    """The sha256 of an info as CloudVolume serialises it (numpy values included)."""
    from cloudvolume.lib import jsonify

    return sha256_hex(jsonify(info, sort_keys=True, separators=(",", ":")).encode("utf-8"))


def _note_operation(
    meta: Any, gate: Gate, operation: str, *_args: Any, **_kwargs: Any
) -> Callable[[], None]:
    gate.admit()
    tracker = gate.tracker
    if operation == "info":
        tracker.info(info_digest(meta.info))
    tracker.operation(operation)
    return lambda: tracker.operation(operation, -1)


def _refuse_provenance(gate: Gate, *_args: Any, **_kwargs: Any) -> None:
    raise ProvenanceRequired(
        f"{gate.layer}: commit_provenance() overwrites the provenance file blindly and loses "
        "concurrent updates; cirrus writes it when the session commits. Add notes with "
        "s.note(...) / s.result(...) instead"
    )


def _gate_image_upload(volume: Any, gate: Gate) -> None:
    meta = volume.meta

    def before(image: Any, offset: Any, mip: int, *_args: Any, **kwargs: Any) -> Callable:
        # lean: this runs on every chunk written, between writes that evict the CPU's caches,
        # so it only appends what CloudVolume passed (the tracker works out boxes at commit).
        # Bad input is refused first: admitting the write lists the session on the layer.
        if kwargs.get("parallel", 1) not in (1, False, None):
            raise InvalidInput(f"{gate.layer}: parallel={kwargs['parallel']!r}; {PARALLEL}")
        try:
            offset = offset.tolist()  # a Vec: a copy in plain ints
        except AttributeError:
            offset = list(offset)
        shape = image.shape
        if len(offset) < 3 or len(shape) < 3:
            raise InvalidInput(
                f"{gate.layer}: an image upload needs an x, y, z offset and an image of 3 or 4 "
                f"axes, got offset {offset} and shape {shape}"
            )
        scale = meta.info["scales"][mip]
        gate.admit()
        tracker = gate.tracker  # read after admit: a compat volume may open a new session
        if not tracker.infos:
            tracker.info(info_digest(meta.info))
        return tracker.image(mip, offset, shape, image.nbytes, scale)

    def refused(error: Exception, image: Any, *_args: Any, **_kwargs: Any) -> bool:
        """CloudVolume's refusals, and its ValueError for an image of another dtype than the
        layer's, raised before anything is written (checked only once the upload failed)."""
        if _refusal(error):
            return True
        if not isinstance(error, ValueError):
            return False
        import numpy as np

        return not np.issubdtype(image.dtype, np.dtype(meta.dtype).type)

    _wrap(volume.image, "upload", before, refused)


def _gate_image_delete(volume: Any, gate: Gate) -> None:
    """Deletes are recorded with their mip and box (as CloudVolume will realise it)."""
    image, meta = volume.image, volume.meta

    def delete(bbox: Any, mip: int | None = None) -> Callable:
        from cloudvolume.lib import Bbox

        mip = image.config.mip if mip is None else mip
        if isinstance(bbox, Bbox):
            bbox = bbox.convert_units("vx", meta.resolution(mip))
        box = Bbox.create(bbox, meta.bounds(mip), bounded=True)  # raises as CloudVolume would
        gate.admit()
        return gate.tracker.delete(int(mip), (*box.minpt.tolist(), *box.maxpt.tolist()))

    def delete_all(mip: int) -> Callable:
        gate.admit()
        return gate.tracker.delete(int(mip), None)

    _wrap(image, "delete", delete)
    _wrap(image, "delete_all", delete_all)


@functools.cache
def _handle_class(base: type) -> type:
    """A subclass of the volume's own class that refuses writes that bypass provenance."""

    def commit_provenance(self: Any) -> None:
        _refuse_provenance(self._cirrus_gate)

    def add_scale(self: Any, *args: Any, **kwargs: Any) -> Any:
        self._cirrus_gate.admit()
        self._cirrus_gate.tracker.operation("add_scale")
        return base.add_scale(self, *args, **kwargs)

    def transfer_to(self: Any, cloudpath: str, *args: Any, **kwargs: Any) -> Any:
        raise ProvenanceRequired(
            f"{self._cirrus_gate.layer}: transfer_to writes {cloudpath} without provenance; "
            "open the destination in the session (s.volume(dest)) and write the data through it"
        )

    def __reduce_ex__(self: Any, _protocol: Any) -> Any:
        raise InvalidInput(
            f"{self._cirrus_gate.layer}: a cirrus write handle cannot be pickled or copied: "
            f"writes through a copy would be tallied apart from its session. {ACROSS_PROCESSES}"
        )

    return type(
        f"Cirrus{base.__name__}",
        (base,),
        {
            "commit_provenance": commit_provenance,
            "add_scale": add_scale,
            "transfer_to": transfer_to,
            "__reduce_ex__": __reduce_ex__,
            "__module__": __name__,
        },
    )
