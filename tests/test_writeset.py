"""Write sets: a record's boxes cover exactly the voxels written, merged as far as they go."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from cirrus.writeset import MAX_BOXES, WriteTracker, coalesce, combine

SCALE = {"chunk_sizes": [[4, 4, 4]], "voxel_offset": [0, 0, 0]}
GRID = 12


def voxels(boxes) -> np.ndarray:
    covered = np.zeros((GRID, GRID, GRID), dtype=bool)
    for x0, y0, z0, x1, y1, z1 in np.asarray(boxes).reshape(-1, 6).tolist():
        covered[x0:x1, y0:y1, z0:z1] = True
    return covered


def mergeable(a, b) -> bool:
    """Whether two boxes match on two axes and touch or overlap on the third."""
    for axis in range(3):
        others = [i for j in range(3) if j != axis for i in (j, j + 3)]
        if all(a[i] == b[i] for i in others) and a[axis] <= b[axis + 3] and b[axis] <= a[axis + 3]:
            return True
    return False


def random_box(rng: random.Random, max_side: int = 5) -> tuple[int, ...]:
    lo = [rng.randrange(GRID - 1) for _ in range(3)]
    hi = [min(GRID, start + rng.randint(1, max_side)) for start in lo]
    return (*lo, *hi)


@pytest.mark.parametrize("seed", range(40))
def test_coalesce_keeps_exactly_the_voxels_and_leaves_nothing_mergeable(seed):
    rng = random.Random(seed)
    boxes = [random_box(rng) for _ in range(rng.randint(1, 60))]
    merged = coalesce(boxes).tolist()
    assert (voxels(merged) == voxels(boxes)).all()
    assert merged == sorted(merged)
    assert len(merged) == len({tuple(box) for box in merged})
    for i, a in enumerate(merged):
        for b in merged[i + 1 :]:
            assert not mergeable(a, b), (a, b)


def test_coalesce_merges_a_filled_grid_written_in_any_order_into_one_box():
    cells = [
        (x, y, z, x + 4, y + 4, z + 4)
        for x in range(0, GRID, 4)
        for y in range(0, GRID, 4)
        for z in range(0, GRID, 4)
    ]
    random.Random(1).shuffle(cells)
    assert coalesce(cells).tolist() == [[0, 0, 0, GRID, GRID, GRID]]
    assert coalesce(cells + cells[:5]).tolist() == [[0, 0, 0, GRID, GRID, GRID]]


def test_tracker_counts_chunks_and_bytes_and_takes_back_a_refused_write():
    tracker = WriteTracker()
    tracker.image(0, [0, 0, 0], (4, 4, 4), 64, SCALE)
    tracker.image(0, np.array([2, 0, 0]), (4, 4, 4, 1), 64, SCALE)  # a Vec, a channel axis
    tracker.image(1, [0, 0, 0], (4, 4, 4), 64, SCALE)
    tracker.image(1, [4, 0, 0], (4, 4, 4), 64, SCALE)
    refused = tracker.image(1, [8, 8, 8], (4, 4, 4), 64, SCALE)
    refused()
    writes = tracker.to_json()
    assert writes["operations"] == {"upload": 4}
    assert writes["mips"]["0"] == {
        "bounds": [0, 0, 0, 6, 4, 4],
        "boxes": [[0, 0, 0, 6, 4, 4]],
        "chunks": 3,  # the second write straddles two chunks
        "bytes": 128,
    }
    assert writes["mips"]["1"]["boxes"] == [[0, 0, 0, 8, 4, 4]]


def test_beyond_max_boxes_a_record_keeps_bounds_and_counts():
    tracker = WriteTracker()
    for i in range(MAX_BOXES + 1):  # every other cell of a row: nothing merges
        tracker.image(0, [i * 8, 0, 0], (4, 4, 4), 64, SCALE)
    (mip,) = tracker.to_json()["mips"].values()
    assert mip == {
        "bounds": [0, 0, 0, MAX_BOXES * 8 + 4, 4, 4],
        "chunks": MAX_BOXES + 1,
        "bytes": 64 * (MAX_BOXES + 1),
        "boxes_truncated": MAX_BOXES + 1,
    }


def test_combine_merges_tasks_write_sets_including_truncated_ones():
    left, right = WriteTracker(), WriteTracker()
    left.image(0, [0, 0, 0], (4, 4, 4), 64, SCALE)
    right.image(0, [4, 0, 0], (4, 4, 4), 64, SCALE)
    right.info("abc")
    truncated = {
        "mips": {"0": {"bounds": [0, 4, 0, 8, 8, 4], "chunks": 2, "bytes": 128}},
        "operations": {"upload": 2},
        "info": ["abc"],
    }
    combined = combine([left.to_json(), right.to_json(), truncated])
    assert combined == {
        "mips": {
            "0": {
                "bounds": [0, 0, 0, 8, 8, 4],
                "boxes": [[0, 0, 0, 8, 8, 4]],
                "chunks": 4,
                "bytes": 256,
            }
        },
        "operations": {"upload": 4},
        "info": ["abc"],
    }


def test_packing_a_long_session_changes_nothing_in_the_record(monkeypatch):
    from cirrus import writeset

    rng = random.Random(7)
    writes = [(rng.randrange(2), [rng.randrange(0, GRID, 2) for _ in range(3)]) for _ in range(49)]

    def record(pack_every: int) -> tuple[dict, WriteTracker]:
        monkeypatch.setattr(writeset, "PACK_EVERY", pack_every)
        tracker = WriteTracker()
        for mip, offset in writes:
            tracker.image(mip, offset, (2, 2, 2), 8, SCALE)
        refused = tracker.image(0, [0, 0, 0], (GRID, GRID, GRID), 0, SCALE)
        (mine,) = tracker._threads
        assert len(mine.raw) == 1 or pack_every > 49  # a pack came just before it
        refused()  # taken back, even right after a pack
        return tracker.to_json(), tracker

    unpacked, _ = record(10_000)
    packed, tracker = record(7)
    assert packed == unpacked and tracker._threads[0].packed
    assert unpacked["operations"] == {"upload": 49}


def test_threads_writing_through_one_tracker_lose_and_double_nothing(monkeypatch):
    from cirrus import writeset

    monkeypatch.setattr(writeset, "PACK_EVERY", 64)
    tracker = WriteTracker()
    per_thread, threads = 3000, 4

    def write(row: int) -> None:
        for i in range(per_thread):
            undo = tracker.image(0, [i * 4, row * 4, 0], (4, 4, 4), 64, SCALE)
            if i % 10 == 9:
                undo()  # refused: CloudVolume wrote nothing

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(write, range(threads)))
    kept = per_thread * threads - per_thread // 10 * threads
    (mip,) = tracker.to_json()["mips"].values()
    assert (mip["chunks"], mip["bytes"]) == (kept, 64 * kept)
    assert tracker.to_json()["operations"] == {"upload": kept}
    assert mip["bounds"] == [0, 0, 0, (per_thread - 1) * 4, threads * 4, 4]  # the last refused
    assert len(mip["boxes"]) == per_thread // 10  # rows merge; a gap at each refused write


def test_a_refusal_takes_back_its_own_threads_write_not_the_latest():
    tracker = WriteTracker()
    tallied, other_wrote = threading.Event(), threading.Event()

    def refused_writer() -> None:
        undo = tracker.image(0, [0, 0, 0], (4, 4, 4), 64, SCALE)
        tallied.set()
        other_wrote.wait(5)
        undo()  # CloudVolume refused it after another thread's write was tallied

    def other_writer() -> None:
        tallied.wait(5)
        tracker.image(0, [8, 0, 0], (4, 4, 4), 64, SCALE)
        other_wrote.set()

    threads = [threading.Thread(target=refused_writer), threading.Thread(target=other_writer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writes = tracker.to_json()
    assert writes["mips"]["0"]["boxes"] == [[8, 0, 0, 12, 4, 4]]
    assert writes["operations"] == {"upload": 1} and tracker.touched


def test_writes_kept_raw_stay_bounded_however_many_threads_write(monkeypatch):
    from cirrus import writeset

    monkeypatch.setattr(writeset, "PACK_EVERY", 64)
    tracker = WriteTracker()

    def write(start: int, together: threading.Barrier) -> None:
        together.wait(5)  # four threads alive at once in each pool
        for i in range(start, start + 100):
            tracker.image(0, [4 * (i % 50), 4 * (i // 50), 0], (4, 4, 4), 64, SCALE)

    for batch in range(5):  # a new thread pool per batch, as some pipelines make them
        together = threading.Barrier(4)
        with ThreadPoolExecutor(4) as pool:
            starts = range(batch * 400, (batch + 1) * 400, 100)
            list(pool.map(write, starts, [together] * 4))
    raw = sum(len(thread.raw) for thread in tracker._threads)
    # ended threads are packed, live ones share PACK_EVERY (each alone would keep 36 here)
    assert len(tracker._threads) == 20 and raw <= 4 * 64
    (mip,) = tracker.to_json()["mips"].values()
    assert (mip["chunks"], mip["boxes"]) == (2000, [[0, 0, 0, 200, 160, 4]])


def test_combine_keeps_each_tasks_deletes():
    a, b = WriteTracker(), WriteTracker()
    a.delete(0, (0, 0, 0, 64, 64, 64))
    b.delete(0, (64, 0, 0, 128, 64, 64))
    b.delete(1, None)
    undo = b.delete(2, (0, 0, 0, 8, 8, 8))
    undo()  # refused: taken back
    combined = combine([a.to_json(), b.to_json()])
    assert combined["deleted"] == {
        "0": {"bounds": [0, 0, 0, 128, 64, 64], "boxes": [[0, 0, 0, 128, 64, 64]]},
        "1": {"all": True},
    }
    assert combined["operations"] == {"delete": 3}
    assert "deleted" not in WriteTracker().to_json()  # no key where nothing was deleted
