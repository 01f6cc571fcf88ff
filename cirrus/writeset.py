"""What a session wrote to one layer: mips, merged bounding boxes, chunk and byte counts.

Tracking is append-only on the write path (a tuple per write); merging happens once, when the
record is built, so a session handle costs next to nothing per chunk.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

Box = tuple[int, int, int, int, int, int]  # x0, y0, z0, x1, y1, z1 (end exclusive)
MAX_BOXES = 1000  # beyond this a record keeps only each mip's bounds


@attrs.define
class WriteTracker:
    """Collects writes to one layer as they happen."""

    boxes: list[tuple[int, Box, int, int]] = attrs.field(factory=list)  # mip, box, chunks, bytes
    operations: Counter = attrs.field(factory=Counter)
    infos: list[str] = attrs.field(factory=list)

    def image(self, mip: int, box: Box, chunks: int, nbytes: int) -> None:
        self.boxes.append((mip, box, chunks, nbytes))
        self.operations["upload"] += 1

    def undo_image(self) -> None:
        """Take back the last image write: CloudVolume refused it before writing anything."""
        self.boxes.pop()
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
        mips: dict[int, dict[str, Any]] = {}
        for mip, box, chunks, nbytes in self.boxes:
            entry = mips.setdefault(mip, {"boxes": [], "chunks": 0, "bytes": 0})
            entry["boxes"].append(box)
            entry["chunks"] += chunks
            entry["bytes"] += nbytes
        return {
            "mips": {str(mip): _finish(entry) for mip, entry in sorted(mips.items())},
            "operations": {kind: n for kind, n in sorted(self.operations.items()) if n > 0},
            "info": list(self.infos),
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
    tracker = WriteTracker()
    for writes in writesets:
        for mip, entry in writes.get("mips", {}).items():
            boxes = [tuple(box) for box in entry.get("boxes") or [entry["bounds"]]]
            counts = [(entry["chunks"], entry["bytes"])] + [(0, 0)] * (len(boxes) - 1)
            for box, (chunks, nbytes) in zip(boxes, counts, strict=True):
                tracker.boxes.append((int(mip), box, chunks, nbytes))
        tracker.operations.update(writes.get("operations", {}))
        for info_digest in writes.get("info", []):
            tracker.info(info_digest)
    return tracker.to_json()
