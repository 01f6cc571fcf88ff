"""Every benchmark in one command, one table, one JSON file.

    python -m benchmarks.run [--quick] [--only session,steps] [--json FILE]

Runs `run()` of each `benchmarks/bench_*.py` present (with `quick=` when it takes it), in this
order: session, storage, steps, startup, then any other. A module that fails to import or to run
becomes an `error: ...` row and the others still run. Prints the machine, then one table
(benchmark, case, cirrus, baseline, ratio, goal, met), and writes the machine and all rows to
JSON (default benchmarks/results/latest.json). Starting servers is each module's business: nothing
is started here. Exit status 1 when any row is an error, or, in a full run, not measured.

A goal is checked here, not by hand: `<= X` and `= X` on the ratio, `~ X` (within 5%) on the
ratio, `none lost` on the cirrus figure; anything else (`info: ...`) has no verdict.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
import re
import sys
import time
import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from benchmarks import machine as machine_info

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "latest.json"
ORDER = ("session", "storage", "steps", "startup")
COLUMNS = ("benchmark", "case", "cirrus", "baseline", "ratio", "goal", "met")
FIELDS = ("benchmark", "case", "cirrus", "baseline", "ratio", "unit", "goal", "met")
_BOUND = re.compile(r"(?:ratio\s*)?(<=|=|~)\s*([0-9]+(?:\.[0-9]+)?)")


def discover() -> list[str]:
    """Short names of the bench_*.py modules present (bench_session.py -> "session")."""
    names = [path.stem.removeprefix("bench_") for path in HERE.glob("bench_*.py")]
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def run_module(name: str, quick: bool) -> tuple[list[dict], dict[str, Any]]:
    """The module's rows (or one error row) and how its run went."""
    started = time.perf_counter()
    status: dict[str, Any] = {"status": "ok"}
    try:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        run = getattr(module, "run", None)
        if not callable(run):
            raise TypeError(f"benchmarks/bench_{name}.py has no run() function")
        rows = run(quick=quick) if _takes_quick(run) else run()
        if quick and not _takes_quick(run):
            status["note"] = "run() takes no quick flag: ran at full size"
        if isinstance(rows, Mapping) or not isinstance(rows, Iterable):
            raise TypeError(f"run() returned {type(rows).__name__}, not a list of rows")
        rows = [normalise(name, raw) for raw in rows]
    except BaseException as error:  # a benchmark's crash is a result to report
        if isinstance(error, KeyboardInterrupt):
            raise
        status = {"status": "error", "traceback": traceback.format_exc()}
        rows = [error_row(name, f"{type(error).__name__}: {error}")]
    status["seconds"] = round(time.perf_counter() - started, 2)
    return rows, status


def _takes_quick(run: Any) -> bool:
    try:
        parameters = inspect.signature(run).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "quick" or p.kind is p.VAR_KEYWORD for p in parameters)


def error_row(name: str, message: str) -> dict:
    return {
        "benchmark": name,
        "case": "(module)",
        "cirrus": f"error: {message}",
        "baseline": None,
        "ratio": None,
        "unit": "",
        "goal": "",
    }


def normalise(name: str, raw: Any) -> dict:
    """A row with every field; accepts `cirrus_<unit>` / `baseline_<unit>` keys too."""
    if not isinstance(raw, Mapping):
        return error_row(name, f"run() yielded a {type(raw).__name__}, not a dict: {raw!r}"[:300])
    result = dict(raw)
    result.setdefault("benchmark", name)
    unit = result.get("unit") or ""
    for side in ("cirrus", "baseline"):
        if side in result:
            continue
        for key in list(result):
            if key.startswith(f"{side}_"):
                result[side] = result.pop(key)
                unit = unit or key[len(side) + 1 :]
                break
    result["unit"] = unit
    cirrus, baseline = result.get("cirrus"), result.get("baseline")
    if "ratio" not in result and _number(cirrus) and _number(baseline) and baseline:
        result["ratio"] = round(cirrus / baseline, 4)
    if isinstance(result.get("ratio"), float) and not math.isfinite(result["ratio"]):
        result["ratio"] = None
    result["met"] = goal_met(result)
    for field in FIELDS:
        result.setdefault(field, "" if field in ("case", "unit", "goal") else None)
    ordered = {field: result.pop(field) for field in FIELDS}
    return {**ordered, **result}


def goal_met(result: Mapping[str, Any]) -> bool | None:
    """Whether the row meets its goal; None when the goal is no bound or a side is missing."""
    goal, ratio = str(result.get("goal") or ""), result.get("ratio")
    if goal.startswith("none lost"):
        return result.get("cirrus") == 0 if _number(result.get("cirrus")) else None
    bound = _BOUND.match(goal)
    if bound is None or not _number(ratio):
        return None
    op, limit = bound.group(1), float(bound.group(2))
    if op == "<=":
        return ratio <= limit
    if op == "=":
        return round(ratio, 4) == limit
    return abs(ratio - limit) <= 0.05 * limit


def is_unmeasured(row: Mapping[str, Any]) -> bool:
    return isinstance(row.get("cirrus"), str) and row["cirrus"].startswith("not measured")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_error(row: Mapping[str, Any]) -> bool:
    return isinstance(row.get("cirrus"), str) and row["cirrus"].startswith("error")


# -- the table -----------------------------------------------------------------------------------
def fmt_value(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if not _number(value):
        return str(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1000:
        text = f"{int(value):,}"
    elif abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    elif abs(value) >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".rstrip()


def fmt_ratio(value: Any) -> str:
    if not _number(value):
        return "-" if value is None else str(value)
    return f"{value:.3f}" if abs(value) < 100 else f"{value:,.0f}"


def table(rows: list[dict]) -> str:
    """Plain text, aligned; a row whose result is text (an error, `not measured: ...`) prints it
    across the value columns so the numbers stay aligned."""
    cells = []
    for r in rows:
        if _number(r["cirrus"]) or r["cirrus"] is None:
            cells.append(
                [
                    str(r["benchmark"]),
                    str(r["case"]),
                    fmt_value(r["cirrus"], r["unit"]),
                    fmt_value(r["baseline"], r["unit"]),
                    fmt_ratio(r["ratio"]),
                    str(r["goal"] or ""),
                    {True: "yes", False: "NO", None: ""}[r.get("met")],
                ]
            )
        else:
            cells.append([str(r["benchmark"]), str(r["case"]), str(r["cirrus"])])
    header = list(COLUMNS)
    full = [c for c in cells if len(c) == len(COLUMNS)]
    widths = [max([len(h)] + [len(c[i]) for c in full]) for i, h in enumerate(header)]
    widths[0] = max([widths[0]] + [len(c[0]) for c in cells])
    widths[1] = max([widths[1]] + [len(c[1]) for c in cells])
    right = {2, 3, 4}

    def line(values: list[str]) -> str:
        parts = []
        for i, value in enumerate(values):
            last = i == len(values) - 1
            if last and len(values) < len(COLUMNS):
                parts.append(value)
            elif i in right:
                parts.append(value.rjust(widths[i]))
            else:
                parts.append(value if last else value.ljust(widths[i]))
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(c) for c in cells)])


# -- the command ---------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Run every benchmarks/bench_*.py; print one table; write rows to JSON.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAMES",
        help="run only these modules, e.g. --only session,steps (bench_ prefix optional)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        metavar="FILE",
        help=f"where to write the results (default: {DEFAULT_JSON.relative_to(HERE.parent)})",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    present = discover()
    wanted = [n.strip().removeprefix("bench_") for o in args.only for n in o.split(",")]
    wanted = [n for n in wanted if n]
    names = [n for n in present if n in wanted] if wanted else present
    missing = [n for n in wanted if n not in present]

    machine = machine_info.describe()
    rows: list[dict] = [error_row(n, f"no module benchmarks/bench_{n}.py") for n in missing]
    modules: dict[str, Any] = {}
    for name in names:
        print(f"[run] bench_{name}{' (quick)' if args.quick else ''} ...", file=sys.stderr)
        module_rows, status = run_module(name, args.quick)
        print(f"[run] bench_{name}: {status['status']} in {status['seconds']} s", file=sys.stderr)
        if status["status"] == "error":
            print(status["traceback"], file=sys.stderr)
        rows += module_rows
        modules[name] = status

    print("\n".join(machine_info.summary(machine)))
    if args.quick:
        print("sizes:   --quick (smoke test; figures are not comparable with a full run)")
    print()
    print(table(rows))

    document = {"machine": machine, "quick": args.quick, "modules": modules, "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=1, default=str) + "\n")
    print(f"\nresults: {args.json}")
    unmeasured = [] if args.quick else [r for r in rows if is_unmeasured(r)]
    for r in unmeasured:
        print(f"[run] not measured in a full run: {r['benchmark']}: {r['case']}", file=sys.stderr)
    return 1 if unmeasured or any(is_error(r) for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
