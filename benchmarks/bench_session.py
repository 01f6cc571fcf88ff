"""Sessions against plain CloudVolume, against the predecessors, and against the volume count.

1. Write overhead: what does a session handle add to `vol[...] = chunk`? 1,000 chunk-aligned
   64^3 uint8 writes, each to a distinct chunk of a volume chunked 64^3, through `s.volume(path)`
   and through a plain `cloudvolume.CloudVolume`, on mem:// and file://, side by side in one run:
   the two interleaved write by write, in rounds; the row is the round with the median ratio
   (both sides of a round are timed over the same seconds, so machine drift cancels).
   Opening and committing the session are outside the per-write figure; the commit is its own row.
   Beside it: what a session keeps per chunk written, and the time to build its record's write
   set, for 1,000,000 writes fed to a handle's tracker (no chunk data written).
2. Storage requests and bytes per step on provenance objects, 3 volumes x 1,000 writes: cirrus vs
   cirrus-volume 0.1.10 (its CloudVolume documents the volume on every write) vs provenance-toolbox
   0.1.5 `logprocess` called by every task (guarded, as cirrus-volume guards it). A cirrus session
   also runs with 100 writes per volume: its requests must depend on the volumes only. Against
   the per-task baselines, cirrus runs as a chunked pipeline does: a step, a task per chunk
   position, its finish; each task files a fragment per volume, so that side grows with tasks.
3. Commit latency vs the number of volumes in one session (1, 10, 100), on file:// and on a real
   S3 server (Ceph RGW, started here through tests/servers/rgw.py).

Run with the others: `python -m benchmarks.run --only session [--quick]` from the repository root.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.metadata
import statistics
import sys
import tempfile
import threading
import time
import types
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from tests import layers
from tests.layers import environment

BENCHMARK = "session"
CHUNK = 64
GRID = 10  # 10 x 10 x 10 chunks: 1,000 distinct chunk positions per volume
VOLUMES_PER_STEP = 3
SOURCES = ["gs://lab/bench/affinities"]
MOTIVATION = "benchmark the cost of recording provenance"
DESCRIPTION = "benchmark step"
PARAMETERS = {"chunk": CHUNK, "threshold": 0.3}
IMAGE = ("lab/bench", "v1", "sha256:" + "ab" * 32)  # a code environment both sides can record


@dataclasses.dataclass(frozen=True)
class Sizes:
    writes: int  # write-overhead writes per round
    rounds: int  # alternating rounds per side
    step_writes: int  # writes per volume in the request-count step
    fewer_writes: int  # ... and the smaller step that must cost cirrus the same requests
    tasks: int  # predecessor tasks (each touches every volume of the step)
    volumes: tuple[int, ...]  # sessions of this many volumes, for commit latency
    commit_rounds: int
    rgw: bool
    bookkept: int  # chunk writes in the bookkeeping-at-scale row


FULL = Sizes(1000, 7, 1000, 100, 1000, (1, 10, 100), 5, True, 1_000_000)
QUICK = Sizes(100, 3, 40, 10, 40, (1, 10, 30), 2, False, 20_000)


def run(quick: bool = False) -> list[dict]:
    """All rows of this module; a section that fails becomes an error row, the rest still run."""
    sizes = QUICK if quick else FULL
    rows: list[dict] = []
    sections: list[Callable[[str, Sizes], list[dict]]] = [
        write_overhead,
        bookkeeping_at_scale,
        step_traffic,
        file_commit_latency,
        cloud_latency_commit_latency,
        rgw_commit_latency,
    ]
    with tempfile.TemporaryDirectory(prefix="cirrus-bench-session-") as root:
        for section in sections:
            _progress(f"{section.__name__} ...")
            started = time.perf_counter()
            try:
                rows += section(root, sizes)
            except Exception as error:  # one broken section must not hide the others
                rows.append(row(section.__name__, f"error: {type(error).__name__}: {error}"))
            _progress(f"{section.__name__} done in {time.perf_counter() - started:.1f} s")
    return rows


# -- rows and helpers ----------------------------------------------------------------------------
def row(
    case: str,
    cirrus: Any,
    baseline: Any = None,
    unit: str = "",
    goal: str = "",
    ratio: float | None = None,
    **detail: Any,
) -> dict:
    numeric = all(isinstance(v, (int, float)) for v in (cirrus, baseline))
    if ratio is None and numeric and baseline:
        ratio = cirrus / baseline
    result = {
        "benchmark": BENCHMARK,
        "case": case,
        "cirrus": _round(cirrus),
        "baseline": _round(baseline),
        "ratio": None if ratio is None else round(ratio, 4),
        "unit": unit,
        "goal": goal,
    }
    if detail:
        result["detail"] = detail
    return result


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def _progress(message: str) -> None:
    print(f"[bench_session] {message}", file=sys.stderr, flush=True)


def make_layer(path: str, grid: int = GRID) -> None:
    """A new, empty image layer of grid^3 chunks of 64^3 uint8, written with plain CloudVolume."""
    layers.make_layer(path, [grid * CHUNK] * 3, CHUNK)


def make_layers(paths: list[str], grid: int = GRID) -> list[str]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(functools.partial(make_layer, grid=grid), paths))
    return paths


def positions(count: int) -> list[tuple[slice, slice, slice]]:
    """`count` distinct chunk-aligned 64^3 boxes of a GRID^3-chunk volume."""
    if count > GRID**3:
        raise ValueError(f"a volume has {GRID**3} chunks, asked for {count}")
    boxes = []
    for i in range(count):
        x, y, z = i % GRID, (i // GRID) % GRID, i // (GRID * GRID)
        boxes.append(tuple(slice(c * CHUNK, (c + 1) * CHUNK) for c in (x, y, z)))
    return boxes


def chunk_data() -> np.ndarray:
    """A 64^3 uint8 gradient: gzip (CloudVolume's default) handles it fast, which keeps the
    plain write cheap and so makes any per-write overhead as visible as it can be."""
    x, y, z = np.indices((CHUNK, CHUNK, CHUNK))
    return ((x + 2 * y + 3 * z) % 256).astype(np.uint8)


def write_all(volume: Any, boxes: list[tuple[slice, ...]], data: np.ndarray) -> float:
    start = time.perf_counter()
    for box in boxes:
        volume[box] = data
    return time.perf_counter() - start


def cirrus_process() -> Any:
    import cirrus

    env = cirrus.DockerEnv(*IMAGE, include_packages=True)
    return cirrus.Process(DESCRIPTION, PARAMETERS, env)


def predecessors() -> tuple[types.ModuleType, types.ModuleType, str]:
    """(cirrusvolume, provenancetoolbox, a note on how they were imported).

    provenance-toolbox imports `pkg_resources`, which setuptools dropped in release 81. When it is
    missing, a stand-in offering the one thing provenance-toolbox uses (`working_set` entries with
    `project_name` and `version`, from importlib.metadata) is put in place for the import only.
    It changes no request and no byte the predecessors send to storage.
    """
    note = "imported as installed"
    if "provenancetoolbox" not in sys.modules:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import pkg_resources  # noqa: F401
        except ModuleNotFoundError:
            sys.modules["pkg_resources"] = _pkg_resources_standin()
            note = "pkg_resources missing (setuptools>=81): a stand-in was used to import them"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import cirrusvolume
            import provenancetoolbox
    finally:
        if getattr(sys.modules.get("pkg_resources"), "_cirrus_standin", False):
            del sys.modules["pkg_resources"]  # provenance-toolbox keeps its own reference
    return cirrusvolume, provenancetoolbox, note


def _pkg_resources_standin() -> types.ModuleType:
    module = types.ModuleType("pkg_resources")
    module._cirrus_standin = True
    module.working_set = [
        types.SimpleNamespace(project_name=dist.metadata["Name"], version=dist.version)
        for dist in importlib.metadata.distributions()
    ]
    return module


def ptb_process(ptb: types.ModuleType) -> Any:
    return ptb.Process(DESCRIPTION, dict(PARAMETERS), ptb.DockerEnv(*IMAGE, include_packages=True))


# -- 1. write overhead ---------------------------------------------------------------------------
def write_overhead(root: str, sizes: Sizes) -> list[dict]:
    rows = []
    bucket = f"cirrus-bench-{uuid.uuid4().hex[:12]}"
    targets = [("mem://", f"mem://{bucket}/overhead"), ("file://", f"file://{root}/overhead")]
    try:
        for label, base in targets:
            rows += _write_overhead_on(label, base, sizes)
    finally:
        _forget_mem_bucket(bucket)
    return rows


def _write_overhead_on(label: str, base: str, sizes: Sizes) -> list[dict]:
    """Rounds of `sizes.writes` writes per side, the two sides interleaved write by write.

    A plain CloudVolume and a session handle, each on its own layer of the same geometry, take
    turns chunk by chunk (which goes first alternates), each write timed on its own. Load that
    comes and goes (this machine is shared) then hits both sides alike: each round's two totals
    are measured over the same seconds. Each round is one session, opened before its first write
    and committed after its last, both outside the per-write figures.
    """
    from cloudvolume import CloudVolume

    import cirrus

    plain_path, session_path = make_layers([f"{base}-plain", f"{base}-session"])
    process = cirrus_process()
    data = chunk_data()
    clock = time.perf_counter

    def one_round(boxes: list) -> tuple[float, float, float]:
        plain = CloudVolume(plain_path, progress=False)
        s = cirrus.session(SOURCES, MOTIVATION, process)
        handle = s.volume(session_path, progress=False)
        plain_s = session_s = 0.0
        for index, box in enumerate(boxes):
            for side in (plain, handle) if index % 2 == 0 else (handle, plain):
                start = clock()
                side[box] = data
                took = clock() - start
                if side is plain:
                    plain_s += took
                else:
                    session_s += took
        start = clock()
        s.commit()
        return plain_s, session_s, clock() - start

    boxes = positions(sizes.writes)
    one_round(boxes[:20])  # warm-up: imports, codecs, first-use caches
    rounds = [one_round(boxes) for _ in range(sizes.rounds)]
    plain_t, session_t, commits = (list(column) for column in zip(*rounds, strict=True))
    n = len(boxes)
    ratios = [s / p for s, p in zip(session_t, plain_t, strict=True)]
    # the median round (an odd number of them): its two sides ran over the same seconds
    middle = sorted(range(len(ratios)), key=ratios.__getitem__)[len(ratios) // 2]
    per_write = [t[middle] / n * 1000 for t in (session_t, plain_t)]
    writes = f"{n:,} x 64^3 uint8 chunk writes"
    return [
        row(
            f"write overhead, {writes}, {label}: session handle vs plain CloudVolume",
            *per_write,
            "ms/write",
            "<= 1.02",
            ratio=ratios[middle],
            rounds=sizes.rounds,
            session_rounds_s=[round(t, 4) for t in session_t],
            plain_rounds_s=[round(t, 4) for t in plain_t],
            round_ratios=[round(r, 4) for r in ratios],
        ),
        row(
            f"session commit after {n:,} writes, {label} (baseline: the {n:,} plain writes)",
            statistics.median(commits) * 1000,
            statistics.median(plain_t) * 1000,
            "ms",
            "info: share of the step",
            commit_rounds_s=[round(t, 4) for t in commits],
        ),
    ]


def _forget_mem_bucket(bucket: str) -> None:
    with contextlib.suppress(Exception):
        from cloudfiles import interfaces

        with interfaces.MEM_BUCKET_POOL_LOCK:
            pool = interfaces.MEM_POOL[interfaces.MemoryPoolParams(bucket)]
        pool.get_connection(None, None).clear()


def bookkeeping_at_scale(root: str, sizes: Sizes) -> list[dict]:
    """What a session keeps per chunk written, and the time to build its record's write set,
    for a long session: `sizes.bookkept` chunk writes in shuffled order over a cube of chunks,
    fed to a handle's tracker exactly as its write hook feeds it (no chunk data is written)."""
    import gc
    import random
    import tracemalloc

    from cloudvolume.lib import Vec

    from cirrus.writeset import WriteTracker

    side = round(sizes.bookkept ** (1 / 3))
    cells = [(x, y, z) for x in range(side) for y in range(side) for z in range(side)]
    random.Random(0).shuffle(cells)
    scale = {"chunk_sizes": [[CHUNK] * 3], "voxel_offset": [0, 0, 0]}
    shape, nbytes = (CHUNK, CHUNK, CHUNK), CHUNK**3
    tracker = WriteTracker()
    gc.collect()
    tracemalloc.start()
    try:
        for x, y, z in cells:
            tracker.image(0, Vec(x * CHUNK, y * CHUNK, z * CHUNK).tolist(), shape, nbytes, scale)
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    start = time.perf_counter()
    writes = tracker.to_json()
    built = time.perf_counter() - start
    assert writes["mips"]["0"]["boxes"] == [[0, 0, 0, *[side * CHUNK] * 3]]
    return [
        row(
            f"session bookkeeping for {len(cells):,} chunk writes: record write set built in",
            built * 1000,
            None,
            "ms",
            "info",
            bytes_kept_per_write=round(kept / len(cells)),
            merged_into_boxes=len(writes["mips"]["0"]["boxes"]),
        )
    ]


# -- 2. requests and bytes per step --------------------------------------------------------------
class ProvenanceTraffic:
    """Requests to, and bytes written into, provenance objects, counted where they hit storage.

    Method. The predecessors reach storage only through CloudFiles, and CloudFiles reaches it only
    through one storage interface per protocol, one method call per object request (`put_file`,
    `get_file`, `head`, `size`, `exists`, `delete_file`; the batch forms of the file and mem
    interfaces loop over these). Wrapping those methods counts every request, whichever API sent it
    (put, put_json, puts, get, exists) and every retry, and adds only a counter. CloudVolume and
    provenance-toolbox root CloudFiles at the layer, so the key names the object: a key at the
    layer's root other than `info` is a provenance object (`provenance` itself, and
    provenance-toolbox's code-environment files, `<image>_<id>` or `<repo>_<commit>`); chunks
    live under their scale's directory (`4_4_40/0-64_0-64_0-64`) and `info` is the layer's
    geometry. cirrus's own objects (`provenance`, `provenance.d/...`) go through its conditional
    backends, counted with CountingBackend via `cirrus.storage.wrap_backends`; the reads of
    `provenance` that constructing any CloudVolume does go through CloudFiles and count for cirrus
    as much as for the others.
    """

    OPERATIONS = ("put_file", "get_file", "head", "size", "exists", "delete_file")

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()  # CloudFiles requests on provenance objects
        self.backend_requests: Counter[str] = Counter()  # cirrus backend calls (CountingBackend)
        self.bytes_written = 0
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        return sum(self.requests.values()) + sum(self.backend_requests.values())

    def wrote(self, data: Any) -> None:
        size = len(data.encode("utf-8") if isinstance(data, str) else data)
        with self._lock:
            self.bytes_written += size

    def saw(self, operation: str) -> None:
        with self._lock:
            self.requests[operation] += 1

    @contextlib.contextmanager
    def counting(self) -> Iterator[ProvenanceTraffic]:
        from cloudfiles import interfaces

        from cirrus.storage import wrap_backends

        saved = []
        for cls in (interfaces.FileInterface, interfaces.MemoryInterface):
            for name in self.OPERATIONS:
                original = cls.__dict__[name]
                saved.append((cls, name, original))
                setattr(cls, name, self._counted(name, original))
        try:
            with wrap_backends(self._backend):
                yield self
        finally:
            for cls, name, original in saved:
                setattr(cls, name, original)

    def _counted(self, name: str, original: Callable) -> Callable:
        traffic = self

        @functools.wraps(original)
        def counted(interface: Any, *args: Any, **kwargs: Any) -> Any:
            key = args[0] if args else kwargs.get("file_path")
            if is_provenance_key(key):
                traffic.saw(f"cloudfiles.{name}")
                if name == "put_file":
                    traffic.wrote(args[1] if len(args) > 1 else kwargs["content"])
            return original(interface, *args, **kwargs)

        return counted

    def _backend(self, backend: Any) -> Any:
        from cirrus.storage.faults import CountingBackend

        traffic = self

        class Counted(CountingBackend):
            def put_new(self, key: str, data: bytes) -> str:
                traffic.wrote(data)
                return super().put_new(key, data)

            def put_if_match(self, key: str, data: bytes, token: str) -> str:
                traffic.wrote(data)
                return super().put_if_match(key, data, token)

        return Counted(backend, self.backend_requests)

    def summary(self) -> dict[str, Any]:
        requests = {f"cirrus.{name}": n for name, n in self.backend_requests.items()}
        requests.update(self.requests)
        return {"requests": dict(sorted(requests.items())), "bytes": self.bytes_written}


def is_provenance_key(key: Any) -> bool:
    return isinstance(key, str) and "/" not in key.strip("/") and key.strip("/") != "info"


def step_traffic(root: str, sizes: Sizes) -> list[dict]:
    from cloudvolume import CloudVolume

    data = chunk_data()
    cirrus_process_ = cirrus_process()
    counter = iter(range(1_000_000))

    def layers() -> list[str]:
        step = next(counter)
        paths = [f"file://{root}/step{step}/v{i}" for i in range(VOLUMES_PER_STEP)]
        return make_layers(paths)

    def measure(body: Callable[[list[str]], None]) -> tuple[ProvenanceTraffic, float]:
        paths = layers()  # creating the layers is not part of the step
        traffic = ProvenanceTraffic()
        start = time.perf_counter()
        with traffic.counting(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # cirrus-volume warns on every write after the first
            body(paths)
        return traffic, time.perf_counter() - start

    def cirrus_step(writes: int) -> Callable[[list[str]], None]:
        def body(paths: list[str]) -> None:
            import cirrus

            with cirrus.session(SOURCES, MOTIVATION, cirrus_process_) as s:
                volumes = [s.volume(path, progress=False) for path in paths]
                for box in positions(writes):
                    for volume in volumes:
                        volume[box] = data

        return body

    def cirrus_tasks(paths: list[str]) -> None:
        # A chunked pipeline as the README runs it: one step, a task per chunk position, each
        # joining with its id and writing its chunk to every volume; then the finish.
        import cirrus

        step = cirrus.step(SOURCES, MOTIVATION, cirrus_process_, volumes=paths)
        for index, box in enumerate(positions(sizes.tasks)):
            with cirrus.join(step.token, task=f"t{index}") as task:
                for path in paths:
                    task.volume(path, progress=False)[box] = data
        step.finish()

    results: dict[str, tuple[ProvenanceTraffic, float]] = {}
    results["cirrus"] = measure(cirrus_step(sizes.step_writes))
    results["cirrus fewer"] = measure(cirrus_step(sizes.fewer_writes))
    results["cirrus tasks"] = measure(cirrus_tasks)

    rows = []
    n, fewer, tasks, v = sizes.step_writes, sizes.fewer_writes, sizes.tasks, VOLUMES_PER_STEP
    step = f"{v} volumes x {n:,} writes"
    mine, mine_s = results["cirrus"]
    small, small_s = results["cirrus fewer"]
    rows.append(
        row(
            f"cirrus provenance requests per step: {step} vs {v} x {fewer:,} writes",
            mine.total,
            small.total,
            "requests",
            "ratio = 1.00 (depends on volumes only)",
            cirrus_detail=mine.summary(),
            fewer_detail=small.summary(),
        )
    )
    rows.append(
        row(
            f"cirrus provenance bytes written per step: {step} vs {v} x {fewer:,} writes",
            mine.bytes_written,
            small.bytes_written,
            "bytes",
            "ratio ~ 1.00 (write sets differ only in counts)",
        )
    )

    try:
        cirrusvolume, ptb, how = predecessors()
    except Exception as error:
        reason = f"not measured: predecessors do not import: {type(error).__name__}: {error}"
        return [*rows, row("requests per step vs cirrus-volume / provenance-toolbox", reason)]
    process = ptb_process(ptb)

    def cirrusvolume_handles(paths: list[str]) -> None:
        # As its README shows: one CloudVolume per layer, every write documented through it.
        volumes = [
            cirrusvolume.CloudVolume(
                path, sources=list(SOURCES), motivation=MOTIVATION, process=process, progress=False
            )
            for path in paths
        ]
        for box in positions(n):
            for volume in volumes:
                volume[box] = data

    def cirrusvolume_per_task(paths: list[str]) -> None:
        # A chunked pipeline: each task opens its own CloudVolume and writes its chunk.
        for box in positions(tasks):
            for path in paths:
                volume = cirrusvolume.CloudVolume(
                    path,
                    sources=list(SOURCES),
                    motivation=MOTIVATION,
                    process=process,
                    progress=False,
                )
                volume[box] = data

    def toolbox_per_task(paths: list[str]) -> None:
        # What a task does with provenance-toolbox alone: open the layer, log the process and
        # the motivation, each guarded as cirrus-volume guards them (`logprocess` raises once
        # the process is logged; an unguarded `addmotivation` would append the note again on
        # every task). The chunk writes themselves send nothing to provenance objects and are
        # left out.
        for _ in range(tasks):
            for path in paths:
                volume = CloudVolume(path, progress=False)
                if ptb.process_absent(volume, process):
                    ptb.logprocess(volume, process)
                if ptb.note_absent(volume, MOTIVATION, ptb.NoteType.MOTIVATION):
                    ptb.addmotivation(volume, MOTIVATION)

    per_task = f"{tasks:,} tasks x {v} volumes"
    tasks_goal = "info: a fragment per task and volume, by design"
    baselines = [
        ("cirrus-volume 0.1.10, one handle per volume", step, cirrusvolume_handles, "cirrus"),
        ("cirrus-volume 0.1.10, a handle per task", per_task, cirrusvolume_per_task, "tasks"),
        (
            "provenance-toolbox 0.1.5 logprocess per task (guarded, as cirrus-volume does)",
            per_task,
            toolbox_per_task,
            "tasks",
        ),
    ]
    for name, shape, body, compared in baselines:
        try:
            traffic, seconds = measure(body)
        except Exception as error:
            rows.append(
                row(f"requests per step vs {name}", f"error: {type(error).__name__}: {error}")
            )
            continue
        if compared == "cirrus":
            ours, ours_s, how_cirrus, goal = mine, mine_s, f"a session, {step}", "info"
        else:
            ours, ours_s = results["cirrus tasks"]
            how_cirrus, goal = f"a step, {per_task} and its finish", tasks_goal
        detail = {
            "cirrus_traffic": ours.summary(),
            "baseline_traffic": traffic.summary(),
            "cirrus_wall_s_not_interleaved": round(ours_s, 3),
            "baseline_wall_s_not_interleaved": round(seconds, 3),
            "import": how,
        }
        for what, unit, mine_n, theirs_n, extra in (
            ("requests", "requests", ours.total, traffic.total, detail),
            ("bytes written", "bytes", ours.bytes_written, traffic.bytes_written, {}),
        ):
            rows.append(
                row(
                    f"provenance {what} per step, cirrus ({how_cirrus}) vs {name} ({shape})",
                    mine_n,
                    theirs_n,
                    unit,
                    goal,
                    **extra,
                )
            )
    return rows


# -- 3. commit latency vs volumes ----------------------------------------------------------------
def file_commit_latency(root: str, sizes: Sizes) -> list[dict]:
    return commit_latency(f"file://{root}/commit", "file://", sizes)


CLOUD_LATENCY = 0.05  # seconds added to every provenance request: a cloud round trip


def cloud_latency_commit_latency(root: str, sizes: Sizes) -> list[dict]:
    """file:// with 50 ms added to each provenance request, as on GCS or S3 from a worker.

    On a local server the client's CPU is the limit; in the cloud each volume's few requests
    are round trips that a commit overlaps across volumes.
    """
    from cirrus.storage import wrap_backends
    from cirrus.storage.faults import FaultyBackend

    with wrap_backends(lambda backend: FaultyBackend(backend, latency=CLOUD_LATENCY)):
        label = f"file:// + {CLOUD_LATENCY * 1000:.0f} ms per request (cloud round trips)"
        # the latency is on provenance requests only, so no plain CloudVolume side here
        return commit_latency(f"file://{root}/cloud", label, sizes, goal=False, with_plain=False)


def rgw_commit_latency(_root: str, sizes: Sizes) -> list[dict]:
    label = "Ceph RGW s3://"
    if not sizes.rgw:
        return _not_measured(label, sizes, "skipped by --quick (starting Ceph RGW takes ~15 s)")
    try:
        from tests.servers.rgw import rgw_server
    except ImportError as error:
        return _not_measured(label, sizes, f"tests/servers/rgw.py cannot be imported: {error}")
    from cloudfiles.interfaces import reset_connection_pools

    with contextlib.ExitStack() as stack:
        try:
            rgw = stack.enter_context(rgw_server())
        except Exception as error:
            reason = f"Ceph RGW did not start: {type(error).__name__}: {error}"
            return _not_measured(label, sizes, reason[:300])
        _progress(f"RGW at {rgw.endpoint_url}, up in {rgw.startup_seconds:.1f} s")
        stack.enter_context(environment(rgw.env()))
        stack.callback(reset_connection_pools)
        reset_connection_pools()
        bucket = rgw.make_bucket(f"bench-{uuid.uuid4().hex[:12]}")
        return commit_latency(f"s3://{bucket}/commit", label, sizes)


def _not_measured(label: str, sizes: Sizes, reason: str) -> list[dict]:
    return [
        row(_commit_case(count, label), f"not measured: {reason}", unit="ms")
        for count in sizes.volumes[1:]
    ]


def _commit_case(count: int, label: str) -> str:
    return f"commit latency, one session over {count} volumes vs 1 volume, {label}"


def commit_latency(
    base: str, label: str, sizes: Sizes, goal: bool = True, with_plain: bool = True
) -> list[dict]:
    """Median time of `s.commit()` for sessions that wrote one chunk to each of N volumes.

    The session's listing of itself on each volume (a swap before its first write there) is
    part of the writes, not of this time; the commit starts from the summary it stored. So
    `with_plain`, the whole session (handles, writes, commit) is also timed against the same
    handles and writes through plain CloudVolume, in the same rounds.

    Beside it, in the same rounds, the storage's floor for the same N volumes: the two durable
    writes any layout with provenance on each volume needs (a create and a compare-and-swap per
    volume), made with cirrus's own backend and overlapped the way a commit overlaps volumes.
    """
    import cirrus

    process = cirrus_process()
    data = chunk_data()
    box = positions(1)[0]
    paths = make_layers([f"{base}/v{i:03d}" for i in range(max(sizes.volumes))], grid=1)
    floor = StorageFloor(paths)

    from cloudvolume import CloudVolume

    def once(count: int) -> tuple[float, float]:
        """(handles and writes, commit) of one session over `count` volumes."""
        start = time.perf_counter()
        s = cirrus.session(SOURCES, MOTIVATION, process)
        for path in paths[:count]:
            s.volume(path, progress=False)[box] = data
        wrote = time.perf_counter()
        s.commit()
        return wrote - start, time.perf_counter() - wrote

    def plain(count: int) -> float:
        """The same handles and writes through plain CloudVolume, nothing recorded."""
        start = time.perf_counter()
        for path in paths[:count]:
            CloudVolume(path, progress=False)[box] = data
        return time.perf_counter() - start

    once(1)  # warm-up: clients, connection pools
    plain(1)
    floor.once(1)
    times: dict[int, list[float]] = {count: [] for count in sizes.volumes}
    whole: dict[int, list[float]] = {count: [] for count in sizes.volumes}
    plains: dict[int, list[float]] = {count: [] for count in sizes.volumes}
    floors: dict[int, list[float]] = {count: [] for count in sizes.volumes}
    for index in range(sizes.commit_rounds):
        order = sizes.volumes if index % 2 == 0 else tuple(reversed(sizes.volumes))
        for count in order:
            writes, commit = once(count)
            times[count].append(commit)
            whole[count].append(writes + commit)
            plains[count].append(plain(count))
            floors[count].append(floor.once(count))
    median = {count: statistics.median(t) * 1000 for count, t in times.items()}
    least = {count: statistics.median(t) * 1000 for count, t in floors.items()}
    one, most = sizes.volumes[0], sizes.volumes[-1]
    goal_of_100 = "<= 3.0" if goal else "info: the goal is for real storage"
    rows = [
        row(
            _commit_case(count, label),
            median[count],
            median[one],
            "ms",
            goal_of_100 if count == 100 else "info",
            rounds_ms={str(c): [round(t * 1000, 2) for t in times[c]] for c in (one, count)},
        )
        for count in sizes.volumes[1:]
    ]
    if with_plain:  # the whole session, where each volume's first write also lists the session
        for count in (one, most):
            ratios = [w / p for w, p in zip(whole[count], plains[count], strict=True)]
            rows.append(
                row(
                    f"whole session (handles, a chunk per volume, commit), {count} volume(s) vs "
                    f"plain CloudVolume handles and writes, {label}",
                    statistics.median(whole[count]) * 1000,
                    statistics.median(plains[count]) * 1000,
                    "ms",
                    "info",
                    ratio=statistics.median(ratios),
                    round_ratios=[round(r, 3) for r in ratios],
                )
            )
    rows.append(
        row(
            f"storage floor (a create + a swap per volume), {most} volumes vs 1, {label}",
            least[most],
            least[one],
            "ms",
            "info: no per-volume layout beats this",
            rounds_ms={str(c): [round(t * 1000, 2) for t in floors[c]] for c in (one, most)},
        )
    )
    rows.append(
        row(
            f"commit of {most} volumes vs the storage floor for {most}, {label}",
            median[most],
            least[most],
            "ms",
            "info",
        )
    )
    return rows


class StorageFloor:
    """Per volume, one create-only write of a record's size and one swap of a summary's size."""

    RECORD = b"r" * 2_000
    SUMMARY = b"s" * 4_000

    def __init__(self, paths: list[str]):
        from cirrus.overlap import THREADS
        from cirrus.storage.paths import open_backend

        self.backends = [open_backend(path) for path in paths]
        self.keys = [f"floor/summary-{uuid.uuid4().hex}" for _ in paths]
        self.tokens = [
            backend.put_new(key, self.SUMMARY)
            for backend, key in zip(self.backends, self.keys, strict=True)
        ]
        self.threads = THREADS

    def once(self, count: int) -> float:
        def volume(index: int) -> None:
            backend = self.backends[index]
            backend.put_new(f"floor/record-{uuid.uuid4().hex}", self.RECORD)
            self.tokens[index] = backend.put_if_match(
                self.keys[index], self.SUMMARY, self.tokens[index]
            )

        start = time.perf_counter()
        if count == 1:
            volume(0)
        else:
            with ThreadPoolExecutor(max_workers=min(self.threads, count)) as pool:
                list(pool.map(volume, range(count)))
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    from benchmarks import run as runner

    return runner.main(["--only", BENCHMARK, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
