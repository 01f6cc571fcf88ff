"""What a session wrote to one layer: mips, merged bounding boxes, chunk and byte counts.

Tracking is append-only on the write path (a tuple per write, as CloudVolume passed it); boxes,
chunk counts and merging are worked out once, when the record is built, so a session handle
costs next to nothing per chunk.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

Box = tuple[int, int, int, int, int, int]  # x0, y0, z0, x1, y1, z1 (end exclusive)
MAX_BOXES = 1000  # beyond this a record keeps only each mip's bounds


Write = tuple[int, Any, tuple[int, ...], int, Mapping[str, Any]]  # as CloudVolume passed it


@attrs.define
class WriteTracker:
    """Collects writes to one layer as they happen."""

    # image writes: mip, offset, shape, bytes and the info's scale, kept as CloudVolume passed
    # them; boxes and chunk counts are worked out once, in `to_json`
    writes: list[Write] = attrs.field(factory=list)
    operations: Counter = attrs.field(factory=Counter)
    infos: list[str] = attrs.field(factory=list)

    def image(
        self, mip: int, offset: Any, shape: tuple[int, ...], nbytes: int, scale: Mapping[str, Any]
    ) -> None:
        self.writes.append((mip, offset, shape, nbytes, scale))
        self.operations["upload"] += 1

    def undo_image(self) -> None:
        """Take back the last image write: CloudVolume refused it before writing anything."""
        self.writes.pop()
        self.operations["upload"] -= 1

    def operation(self, kind: str, count: int = 1) -> None:
        self.operations[kind] += count

    def info(self, info_digest: str) -> None:
        if info_digest not in self.infos:
            self.infos.append(info_digest)

    @property
    def touched(self) -> bool:
        """Whether anything was written (reads never count)."""
        return any(count > 0 for count in self.operations.values())

    def to_json(self) -> dict[str, Any]:
        return writes_json(map(_written, self.writes), self.operations, self.infos)


def _written(write: Write) -> tuple[int, Box, int, int]:
    """(mip, box, chunk files touched, bytes) of an image write."""
    mip, offset, shape, nbytes, scale = write
    lo = tuple(int(start) for start in offset[:3])
    hi = tuple(start + int(extent) for start, extent in zip(lo, shape, strict=False))
    return int(mip), lo + hi, chunk_count(scale, lo, hi), int(nbytes)  # type: ignore[return-value]


def chunk_count(scale: Mapping[str, Any], lo: tuple[int, ...], hi: tuple[int, ...]) -> int:
    """How many chunk files a write of [lo, hi) touches on a scale's chunk grid."""
    size, origin = scale["chunk_sizes"][0], scale["voxel_offset"]
    count = 1
    for axis in range(3):
        first = (lo[axis] - origin[axis]) // size[axis]
        last = -(-(hi[axis] - origin[axis]) // size[axis])
        count *= max(0, int(last - first))
    return count


def writes_json(
    entries: Iterable[tuple[int, Box, int, int]],
    operations: Mapping[str, int],
    infos: Iterable[str],
) -> dict[str, Any]:
    """The JSON of a write set: per mip, coalesced boxes, bounds, chunk and byte totals."""
    mips: dict[int, dict[str, Any]] = {}
    for mip, box, chunks, nbytes in entries:
        entry = mips.setdefault(mip, {"boxes": [], "chunks": 0, "bytes": 0})
        entry["boxes"].append(box)
        entry["chunks"] += chunks
        entry["bytes"] += nbytes
    return {
        "mips": {str(mip): _finish(entry) for mip, entry in sorted(mips.items())},
        "operations": {kind: n for kind, n in sorted(operations.items()) if n > 0},
        "info": list(infos),
    }


def _finish(entry: dict[str, Any]) -> dict[str, Any]:
    boxes = coalesce(entry["boxes"])
    out = {"bounds": list(bounds(boxes)), "chunks": entry["chunks"], "bytes": entry["bytes"]}
    if len(boxes) <= MAX_BOXES:
        out["boxes"] = [list(box) for box in boxes]
    else:
        out["boxes_truncated"] = len(boxes)
    return out


def bounds(boxes: Iterable[Box]) -> Box:
    boxes = list(boxes)
    lows = [min(box[axis] for box in boxes) for axis in range(3)]
    highs = [max(box[axis + 3] for box in boxes) for axis in range(3)]
    return (*lows, *highs)  # type: ignore[return-value]


def coalesce(boxes: Iterable[Box]) -> list[Box]:
    """Merge boxes that abut or overlap along one axis and match on the other two; sorted."""
    current = sorted(set(map(tuple, boxes)))
    while True:
        before = len(current)
        for axis in range(3):
            current = _coalesce_axis(current, axis)
        if len(current) == before:
            return current


def _coalesce_axis(boxes: list[Box], axis: int) -> list[Box]:
    others = [a for a in range(3) if a != axis]
    groups: dict[tuple[int, ...], list[Box]] = {}
    for box in boxes:
        key = tuple(v for a in others for v in (box[a], box[a + 3]))
        groups.setdefault(key, []).append(box)
    merged: list[Box] = []
    for group in groups.values():
        group.sort(key=lambda box: box[axis])
        run = list(group[0])
        for box in group[1:]:
            if box[axis] <= run[axis + 3]:
                run[axis + 3] = max(run[axis + 3], box[axis + 3])
            else:
                merged.append(tuple(run))  # type: ignore[arg-type]
                run = list(box)
        merged.append(tuple(run))  # type: ignore[arg-type]
    return sorted(merged)


def combine(writesets: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge the write sets (JSON) of a step's tasks into one."""
    entries: list[tuple[int, Box, int, int]] = []
    operations: Counter = Counter()
    infos: dict[str, None] = {}
    for writes in writesets:
        for mip, entry in writes.get("mips", {}).items():
            boxes = [tuple(box) for box in entry.get("boxes") or [entry["bounds"]]]
            counts = [(entry["chunks"], entry["bytes"])] + [(0, 0)] * (len(boxes) - 1)
            for box, (chunks, nbytes) in zip(boxes, counts, strict=True):
                entries.append((int(mip), box, chunks, nbytes))  # type: ignore[arg-type]
        operations.update(writes.get("operations", {}))
        infos.update(dict.fromkeys(writes.get("info", [])))
    return writes_json(entries, operations, infos)
