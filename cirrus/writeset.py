"""What a session wrote to one layer: mips, merged bounding boxes, chunk and byte counts.

Tracking is append-only on the write path (a tuple per write, as CloudVolume passed it); boxes,
chunk counts and merging are worked out once, when the record is built, with numpy, so a
session handle costs next to nothing per chunk and a commit after 100,000 writes takes a
fraction of a second.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

Box = tuple[int, int, int, int, int, int]  # x0, y0, z0, x1, y1, z1 (end exclusive)
MAX_BOXES = 1000  # beyond this a record keeps only each mip's bounds
PACK_EVERY = 65536  # raw writes kept before they are packed into int64 boxes
Write = tuple[int, Any, tuple[int, ...], int, Mapping[str, Any]]  # as CloudVolume passed it


@attrs.frozen
class MipWrites:
    """Writes at one mip: their boxes (an n x 6 int64 array), chunk files touched, bytes."""

    mip: int
    boxes: Any
    chunks: int
    nbytes: int


@attrs.define
class _ThreadWrites:
    """One thread's image writes. Only that thread appends or packs while it runs, so the write
    path takes no lock, and the write a refusal takes back is always that thread's last
    (CloudVolume never uploads from inside an upload)."""

    thread: threading.Thread
    raw: list[Write] = attrs.field(factory=list)
    packed: list[MipWrites] = attrs.field(factory=list)  # boxes not merged: one row per write
    pack_at: int = attrs.field(factory=lambda: PACK_EVERY)  # the threads share PACK_EVERY

    def pack(self) -> None:
        """Turn the raw writes into int64 boxes (~260 bytes a write down to 48), so a session
        of millions of chunk writes keeps tens of MB, not hundreds. Merging waits for
        `to_json`: merging parts first could leave pieces that no longer merge."""
        self.packed += _image_writes(self.raw)
        self.raw = []


@attrs.define(eq=False)
class WriteTracker:
    """Collects writes to one layer as they happen, from any number of threads."""

    operations: Counter = attrs.field(factory=Counter)  # besides image uploads
    infos: list[str] = attrs.field(factory=list)
    deletes: list[tuple[int, tuple[int, ...] | None]] = attrs.field(factory=list)  # None: all
    # image writes per writing thread: mip, offset, shape, bytes and the info's scale, as
    # CloudVolume passed them; boxes and chunk counts are worked out in `to_json`
    _threads: list[_ThreadWrites] = attrs.field(factory=list, repr=False)
    _local: threading.local = attrs.field(factory=threading.local, repr=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, repr=False)

    def image(
        self, mip: int, offset: Any, shape: tuple[int, ...], nbytes: int, scale: Mapping[str, Any]
    ) -> Callable[[], Any]:
        """Tally an image write before it is made; returns what takes it back if CloudVolume
        refuses it (nothing written)."""
        try:
            mine = self._local.writes
        except AttributeError:
            mine = self._join()
        if len(mine.raw) >= mine.pack_at:
            with self._lock:  # `to_json` must not see the writes both raw and packed
                mine.pack()
        mine.raw.append((mip, offset, shape, nbytes, scale))
        return mine.raw.pop

    def _join(self) -> _ThreadWrites:
        """Start this thread's list; pack the lists of threads that have ended (thread pools
        made per batch), and share PACK_EVERY among the threads still writing."""
        mine = self._local.writes = _ThreadWrites(threading.current_thread())
        with self._lock:
            for other in self._threads:
                if other.raw and not other.thread.is_alive():
                    other.pack()
            self._threads.append(mine)
            alive = [other for other in self._threads if other.thread.is_alive()]
            for other in alive:  # at most 64 shares: 1,024 writes a pack by default
                other.pack_at = max(1, PACK_EVERY // min(len(alive), 64))
        return mine

    def operation(self, kind: str, count: int = 1) -> None:
        with self._lock:
            self.operations[kind] += count

    def delete(self, mip: int, box: tuple[int, ...] | None) -> Callable[[], Any]:
        """Tally a delete of `box` (x0, y0, z0, x1, y1, z1; None: every chunk of the mip)
        before it is made; returns what takes it back if CloudVolume refuses it."""
        entry = (mip, box)
        with self._lock:
            self.deletes.append(entry)
            self.operations["delete"] += 1

        def undo() -> None:
            with self._lock:
                self.deletes.remove(entry)
                self.operations["delete"] -= 1

        return undo

    def info(self, info_digest: str) -> None:
        with self._lock:
            if info_digest not in self.infos:
                self.infos.append(info_digest)

    @property
    def touched(self) -> bool:
        """Whether anything was written (reads never count)."""
        with self._lock:
            threads = list(self._threads)
        return any(t.raw or t.packed for t in threads) or any(
            count > 0 for count in self.operations.values()
        )

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            raw = [write for thread in self._threads for write in list(thread.raw)]
            packed = [batch for thread in self._threads for batch in thread.packed]
            operations, infos = Counter(self.operations), list(self.infos)
            deletes = list(self.deletes)
        operations["upload"] += len(raw) + sum(len(batch.boxes) for batch in packed)
        return writes_json([*packed, *_image_writes(raw)], operations, infos, deletes)


def _image_writes(writes: list[Write]) -> list[MipWrites]:
    """The writes' boxes and chunk counts, one batch per mip and scale geometry."""
    import numpy as np

    batches: dict[tuple[int, int], list[Write]] = {}
    for write in writes:
        batches.setdefault((write[0], id(write[4])), []).append(write)
    found = []
    for batch in batches.values():
        lo = _first_three([write[1] for write in batch])
        hi = lo + _first_three([write[2] for write in batch])
        scale = batch[0][4]
        size = np.array(scale["chunk_sizes"][0][:3], dtype=np.int64)
        origin = np.array(scale.get("voxel_offset", (0, 0, 0))[:3], dtype=np.int64)
        first, last = (lo - origin) // size, -(-(hi - origin) // size)
        chunks = int(np.prod(np.maximum(last - first, 0), axis=1).sum())
        nbytes = sum(int(write[3]) for write in batch)
        found.append(MipWrites(int(batch[0][0]), np.hstack([lo, hi]), chunks, nbytes))
    return found


def _first_three(rows: list[Any]) -> Any:
    """The first three values of each row, as an n x 3 int64 array.

    Rows usually all have one length; slicing each into a new list would make a million small
    objects for a million writes, and the garbage collector's passes over them cost more than
    the rest of the commit.
    """
    import numpy as np

    try:
        return np.array(rows, dtype=np.int64)[:, :3]
    except ValueError:  # ragged: image shapes with and without a channel axis
        return np.array([row[:3] for row in rows], dtype=np.int64)


def writes_json(
    batches: Iterable[MipWrites],
    operations: Mapping[str, int],
    infos: Iterable[str],
    deletes: Iterable[tuple[int, Sequence[int] | None]] = (),
) -> dict[str, Any]:
    """The JSON of a write set: per mip, coalesced boxes, bounds, chunk and byte totals; and,
    if any, per mip the boxes deleted (or `all`)."""
    mips: dict[int, list[MipWrites]] = {}
    for batch in batches:
        mips.setdefault(batch.mip, []).append(batch)
    out = {
        "mips": {str(mip): _mip_json(mips[mip]) for mip in sorted(mips)},
        "operations": {kind: n for kind, n in sorted(operations.items()) if n > 0},
        "info": list(infos),
    }
    deleted = _deleted_json(deletes)
    if deleted:
        out["deleted"] = deleted
    return out


def _deleted_json(deletes: Iterable[tuple[int, Sequence[int] | None]]) -> dict[str, Any]:
    """Per mip, the coalesced boxes deleted and their bounds, or `{"all": true}`."""
    import numpy as np

    boxes: dict[int, list[Sequence[int]]] = {}
    everything: set[int] = set()
    for mip, box in deletes:
        if box is None:
            everything.add(mip)
        else:
            boxes.setdefault(mip, []).append(box)
    out: dict[str, Any] = {}
    for mip in sorted(everything | set(boxes)):
        merged = None if mip in everything else coalesce(np.array(boxes[mip], dtype=np.int64))
        out[str(mip)] = {"all": True} if merged is None else _boxes_json(merged)
    return out


def _mip_json(batches: list[MipWrites]) -> dict[str, Any]:
    import numpy as np

    boxes = coalesce(np.vstack([batch.boxes for batch in batches]))
    return {
        **_boxes_json(boxes),
        "chunks": sum(batch.chunks for batch in batches),
        "bytes": sum(batch.nbytes for batch in batches),
    }


def _boxes_json(boxes: Any) -> dict[str, Any]:
    """Coalesced boxes (n x 6) as JSON: their bounds, and the boxes unless there are too many."""
    out: dict[str, Any] = {
        "bounds": [*boxes[:, :3].min(axis=0).tolist(), *boxes[:, 3:].max(axis=0).tolist()]
    }
    if len(boxes) <= MAX_BOXES:
        out["boxes"] = boxes.tolist()
    else:
        out["boxes_truncated"] = len(boxes)
    return out


def coalesce(boxes: Any) -> Any:
    """Merge boxes (n x 6) that abut or overlap along one axis and match on the other two,
    until no two do; returns them sorted, as an n x 6 int64 array."""
    import numpy as np

    current = np.asarray(boxes, dtype=np.int64).reshape(-1, 6)
    if len(current) < 2:  # a session that wrote one box per volume: nothing to merge
        return current
    current = np.unique(current, axis=0)
    while True:
        before = len(current)
        for axis in range(3):
            current = _coalesce_axis(current, axis)
        if len(current) == before:
            return np.unique(current, axis=0)


def _coalesce_axis(boxes: Any, axis: int) -> Any:
    """One pass along `axis`: boxes with the same extent on the other two axes whose intervals
    on `axis` touch or overlap become one."""
    import numpy as np

    if len(boxes) < 2:
        return boxes
    others = [a for b in range(3) if b != axis for a in (b, b + 3)]
    order = np.lexsort((boxes[:, axis], *(boxes[:, a] for a in reversed(others))))
    boxes = boxes[order]
    start, end = boxes[:, axis], boxes[:, axis + 3]
    new_group = np.ones(len(boxes), dtype=bool)
    new_group[1:] = (boxes[1:, others] != boxes[:-1, others]).any(axis=1)
    # the running maximum of `end` within each group, in one pass: coordinates become ranks and
    # each group is shifted above the one before, so groups never mix
    _, ranks = np.unique(np.concatenate([start, end]), return_inverse=True)
    shift = (np.cumsum(new_group) - 1) * (len(boxes) * 2)
    reach = np.maximum.accumulate(ranks[len(boxes) :] + shift)
    new_run = new_group.copy()
    new_run[1:] |= ranks[1 : len(boxes)] + shift[1:] > reach[:-1]
    firsts = np.flatnonzero(new_run)
    merged = boxes[firsts].copy()
    merged[:, axis + 3] = np.maximum.reduceat(end, firsts)
    return merged


def check_writes(writes: Mapping[str, Any]) -> None:
    """Raise ValueError unless `writes` has the shape `combine` reads (a stored write set)."""

    def is_box(box: Any) -> bool:
        return isinstance(box, list) and len(box) == 6 and all(type(n) is int for n in box)

    for section in ("mips", "deleted"):
        entries = writes.get(section, {})
        if not isinstance(entries, dict):
            raise ValueError(f"writes.{section} is not an object")
        for mip, entry in entries.items():
            if not (mip.isascii() and mip.isdigit()) or not isinstance(entry, dict):
                raise ValueError(f"writes.{section}[{mip!r}] is not a mip's entry")
            if section == "deleted" and entry.get("all") is True:
                continue
            boxes = entry.get("boxes") or [entry.get("bounds")]
            counts = [entry.get("chunks"), entry.get("bytes")] if section == "mips" else []
            if not all(map(is_box, boxes)) or not all(type(n) is int for n in counts):
                raise ValueError(f"writes.{section}[{mip!r}] has no boxes, bounds or counts")
    operations = writes.get("operations", {})
    if not isinstance(operations, dict) or not all(type(n) is int for n in operations.values()):
        raise ValueError("writes.operations is not a count per operation")
    info = writes.get("info", [])
    if not isinstance(info, list) or not all(isinstance(name, str) for name in info):
        raise ValueError("writes.info is not a list of names")


def combine(writesets: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge the write sets (JSON) of a step's tasks into one."""
    import numpy as np

    batches = []
    operations: Counter = Counter()
    infos: dict[str, None] = {}
    deletes: list[tuple[int, Sequence[int] | None]] = []
    for writes in writesets:
        for mip, entry in writes.get("deleted", {}).items():
            if entry.get("all"):
                deletes.append((int(mip), None))
            else:
                deletes += [(int(mip), box) for box in entry.get("boxes") or [entry["bounds"]]]
        for mip, entry in writes.get("mips", {}).items():
            boxes = np.array(entry.get("boxes") or [entry["bounds"]], dtype=np.int64)
            batches.append(MipWrites(int(mip), boxes, entry["chunks"], entry["bytes"]))
        operations.update(writes.get("operations", {}))
        infos.update(dict.fromkeys(writes.get("info", [])))
    return writes_json(batches, operations, infos, deletes)
