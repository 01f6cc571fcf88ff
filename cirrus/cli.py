"""The `cirrus` command: read, check, repair and export the provenance of CloudVolume layers.

Exit status, for every command:

    0  ok
    1  `cirrus verify` found problems
    2  usage error or bad input (a bad path, an unknown record id, a malformed step token)
    3  storage or provenance error (unreachable storage, a corrupt summary, a tampered object)

Errors are one line on stderr; `cirrus --debug ...` (or CIRRUS_DEBUG=1) shows the traceback.
Heavy modules (cloudvolume, rich, prov) are imported inside the commands that use them, so
`cirrus --help` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from cirrus.errors import plain_text

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_ERROR = 0, 1, 2, 3
EXIT_CODES = """\b
Exit status:
  0  ok
  1  verification found problems (cirrus verify)
  2  usage error or bad input
  3  storage or provenance error"""


def _exit_code(error: BaseException) -> int:
    from cirrus.errors import InvalidInput, StepError

    if isinstance(error, (InvalidInput, StepError)):
        return EXIT_USAGE
    return EXIT_ERROR


def _debug(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(root.params.get("debug")) or os.environ.get("CIRRUS_DEBUG", "") not in ("", "0")


class CirrusGroup(click.Group):
    """Turns any error into one line on stderr and an exit status (traceback with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("cirrus: interrupted", err=True)
            ctx.exit(130)
        except Exception as error:
            if _debug(ctx):
                raise
            text = plain_text(error)
            message = text.splitlines()[0].rstrip(": ") if text else ""
            from cirrus.errors import CirrusError

            if not isinstance(error, CirrusError):
                message = f"{type(error).__name__}: {message} (rerun with --debug for details)"
            click.echo(f"cirrus: error: {message}", err=True)
            ctx.exit(_exit_code(error))


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def _terminal() -> bool:
    return sys.stdout.isatty()


@click.group(cls=CirrusGroup, epilog=EXIT_CODES)
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="cirrus-provenance", prog_name="cirrus")
def cli(debug: bool) -> None:
    """Provenance of CloudVolume layers: history, verification, lineage, export.

    PATH is a layer's cloudpath: gs://, s3://, file://, mem:// (precomputed:// accepted).
    """


# -- log ------------------------------------------------------------------------------------------
def print_log(path: str, as_json: bool = False, limit: int | None = None) -> None:
    """Print a volume's history, newest first (what `cirrus log` and `cirrus demo` show)."""
    from cirrus.reading import history

    found = history(path)
    records = list(reversed(found))[:limit] if limit else list(reversed(found))
    if as_json:
        data = found.to_json()
        data["records"] = [record.to_json() for record in records]
        click.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))
        return
    from cirrus.display import history_text

    plain = [record.to_json() for record in reversed(records)]  # history_text wants oldest first
    if not _terminal():
        text = history_text(plain, found.volume, found.open_steps, len(found), found.open_sessions)
        click.echo(text)
        if not found and not found.open_steps and not found.open_sessions:
            click.echo("no provenance recorded here")
        return
    _log_table(plain, found, total=len(found))


def _log_table(records: list[dict], found: Any, total: int) -> None:
    from rich.table import Table

    from cirrus.display import COLUMNS, open_lines, row

    volume = found.volume

    console = _console()
    shown = f", newest {len(records)} shown" if len(records) != total else ""
    table = Table(title=f"{volume}: {total} record(s){shown}", show_lines=True)
    for column in COLUMNS:
        table.add_column(column, overflow="fold")
    for record in reversed(records):
        cells = row(record)
        style = "red" if record["status"] != "committed" else None
        table.add_row(*(cells[c] for c in COLUMNS), style=style)
    for line in open_lines(found.open_steps, found.open_sessions):
        console.print(f"[yellow]{line}[/yellow]")
    console.print(table)


@cli.command("log", epilog=EXIT_CODES)
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Records as JSON (newest first).")
@click.option("--limit", "-n", type=click.IntRange(min=1), help="Show only the newest N records.")
def log_command(path: str, as_json: bool, limit: int | None) -> None:
    """History of PATH, newest first: time, status, process, motivation, sources, writes, who.

    Open steps (opened, not finished yet) are listed first.
    """
    print_log(path, as_json, limit)


# -- show -----------------------------------------------------------------------------------------
@cli.command("show", epilog=EXIT_CODES)
@click.argument("path")
@click.argument("digest")
@click.option("--json", "as_json", is_flag=True, help="The record and its environments as JSON.")
def show_command(path: str, digest: str, as_json: bool) -> None:
    """One record of PATH in full, with its code environments (and their git diffs).

    DIGEST is a record id or a unique prefix of one (as `cirrus log` shows).
    """
    from cirrus.display import env_diff, record_text
    from cirrus.ledger import Ledger
    from cirrus.reading import record_envs, resolve_record_id

    ledger = Ledger.open(path)
    stored = ledger.read_record(resolve_record_id(ledger, digest))
    envs = record_envs(ledger, stored)
    if as_json:
        data = {
            "record": stored.to_json(),
            "envs": {eid: doc if doc is not None else {"error": err} for eid, doc, err in envs},
        }
        click.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))
        return
    if not _terminal():
        click.echo(record_text(stored.to_json(), envs, diffs=True))
        return
    from rich.syntax import Syntax

    console = _console()
    console.print(record_text(stored.to_json(), envs, diffs=False), markup=False)
    for env_id, document, _error in envs:
        diff = env_diff(document)
        if diff:
            console.print(f"\n[bold]diff of env {env_id[:12]}[/bold]")
            console.print(Syntax(diff, "diff", theme="ansi_dark", word_wrap=True))


# -- verify ---------------------------------------------------------------------------------------
@cli.command("verify", epilog=EXIT_CODES)
@click.argument("paths", metavar="PATH...", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="The findings as JSON.")
def verify_command(paths: tuple[str, ...], as_json: bool) -> None:
    """Re-hash every record and environment file of PATH and check the summary agrees.

    Finds tampered or missing objects, summary entries that do not match their records (a
    summary edited by hand), orphaned records (publish them with `cirrus recover`), and lists
    open steps and sessions that wrote without committing (yet). Exits 1 if anything does not
    match.
    """
    from cirrus.verify import verify

    reports = []
    for path in paths:
        with _progress(f"verifying {path}") as progress:
            reports.append(verify(path, progress=progress))
    if as_json:
        click.echo(json.dumps([r.to_json() for r in reports], indent=2, sort_keys=True))
    else:
        for report in reports:
            click.echo(
                f"{report.volume}: {report.records} record(s), {report.envs} environment "
                "file(s) re-hashed"
            )
            for problem in report.problems:
                click.echo(f"  PROBLEM: {problem}")
            for remark in report.remarks:
                click.echo(f"  note: {remark}")
            verdict = "ok" if report.ok else f"{len(report.problems)} problem(s)"
            click.echo(f"  {verdict}")
    if not all(report.ok for report in reports):
        click.get_current_context().exit(EXIT_PROBLEMS)


class _progress:
    """A rich progress bar on stderr for runs of many objects, only when stderr is a terminal."""

    THRESHOLD = 200

    def __init__(self, description: str):
        self.description = description
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> _progress:
        return self

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            if total < self.THRESHOLD or not sys.stderr.isatty():
                return
            from rich.progress import Progress

            self.bar = Progress(console=_console(stderr=True), transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.description, total=total)
        self.bar.update(self.task, completed=done)

    def __exit__(self, *_exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()


# -- lineage --------------------------------------------------------------------------------------
@cli.command("lineage", epilog=EXIT_CODES)
@click.argument("path")
@click.option("--depth", type=click.IntRange(min=0), default=10, show_default=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "dot", "mermaid", "json"]),
    default="text",
    show_default=True,
)
def lineage_command(path: str, depth: int, fmt: str) -> None:
    """Where PATH came from: its sources, and theirs, following cloudpath sources.

    Free-text sources, unreadable volumes, cycles and the depth limit end a branch and are
    shown as such; they are not errors.
    """
    from cirrus.lineage import RENDERERS, lineage

    root = lineage(path, depth=depth)
    if fmt == "json":
        click.echo(json.dumps(root.to_json(), indent=2, ensure_ascii=False))
    else:
        click.echo(RENDERERS[fmt](root))


# -- recover / repair -----------------------------------------------------------------------------
@cli.command("recover", epilog=EXIT_CODES)
@click.argument("path")
def recover_command(path: str) -> None:
    """Publish records of PATH (and its sibling volumes) that an interrupted commit staged.

    A volume such a session wrote to but never staged a record on gets an `interrupted` record
    (status failed, writes unknown) once the session is 10 minutes old. Safe to run at any
    time: records already published are left alone.
    """
    from cirrus.ledger import Ledger
    from cirrus.model import is_interrupted
    from cirrus.rollforward import recover

    done = recover(path)
    if not done:
        click.echo(f"{path}: nothing to recover; every staged record is published")
    interrupted = 0
    for layer, ids in done.items():
        click.echo(f"{layer}: published {len(ids)} record(s)")
        for rid in ids:
            cut = is_interrupted(Ledger.open(layer).read_record(rid).to_json())
            interrupted += cut
            click.echo(f"  {rid} (interrupted)" if cut else f"  {rid}")
    if interrupted:
        click.echo(
            f"{interrupted} interrupted record(s): a session died before recording its writes "
            "on that volume (status failed, writes unknown); re-run it to record them"
        )


@cli.command("repair", epilog=EXIT_CODES)
@click.argument("path")
def repair_command(path: str) -> None:
    """Set a malformed `provenance` summary of PATH aside and rebuild it from the records.

    The original is kept under provenance.d/corrupt/<sha256>; a summary that parses is left
    untouched.
    """
    from cirrus.ledger import Ledger

    ledger = Ledger.open(path)
    kept = ledger.repair()
    if kept is None:
        click.echo(f"{ledger.cloudpath}: the summary is well-formed; nothing to repair")
        return
    published = len(ledger.summary().get("cirrus", {}).get("records", []))
    click.echo(f"{ledger.cloudpath}: kept the malformed summary as {kept}")
    click.echo(f"  rebuilt the summary from {published} record(s); check it with `cirrus verify`")


# -- export ---------------------------------------------------------------------------------------
@cli.command("export", epilog=EXIT_CODES)
@click.argument("path")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["prov-json", "prov-jsonld"]),
    default="prov-json",
    show_default=True,
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="File.")
def export_command(path: str, fmt: str, output: str | None) -> None:
    """PATH's history as W3C PROV: the volume and sources as entities, sessions and steps as
    activities, processes as plans, users as agents, sources via wasDerivedFrom.

    Written to stdout unless -o FILE is given.
    """
    from cirrus.export import serialize
    from cirrus.reading import history

    text = serialize(history(path), fmt)
    if output:
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    else:
        click.echo(text)


# -- step -----------------------------------------------------------------------------------------
@cli.group("step", cls=CirrusGroup, epilog=EXIT_CODES)
def step_group() -> None:
    """Steps run as many tasks: check progress, or finish one.

    TOKEN is the step's token as `step.token` gives it (JSON), `@FILE` to read it from a file,
    or `-` to read it from stdin.
    """


def _token(token: str) -> str:
    if token == "-":
        return sys.stdin.read().strip()
    if token.startswith("@"):
        from cirrus.errors import InvalidInput

        try:
            with open(token[1:], encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError as error:
            raise InvalidInput(f"cannot read the step token from {token[1:]}: {error}") from None
    return token


@step_group.command("status", epilog=EXIT_CODES)
@click.argument("token")
@click.option("--json", "as_json", is_flag=True)
def step_status_command(token: str, as_json: bool) -> None:
    """Tasks recorded so far on each volume of the step, failures, open or finished."""
    from cirrus.step import status

    report = status(_token(token))
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    click.echo(f"step {report['step']}")
    for layer, info in report["volumes"].items():
        state = "finished" if info["finished"] else "open" if info["open"] else "not open"
        click.echo(
            f"  {layer}: {info['tasks']} task(s) recorded, {len(info['failed'])} failed, {state}"
        )
        for task in info["failed"][:20]:
            click.echo(f"    failed: {task}")


@step_group.command("finish", epilog=EXIT_CODES)
@click.argument("token")
def step_finish_command(token: str) -> None:
    """Fold the tasks' fragments into one record per volume and publish. Safe to repeat."""
    from cirrus.step import StepToken, finish

    parsed = StepToken.loads(_token(token))
    ids = finish(parsed)
    click.echo(f"step {parsed.id} finished")
    for layer in parsed.volumes:
        if layer in ids:
            click.echo(f"  {layer}: record {ids[layer]}")
        else:
            click.echo(f"  {layer}: no task wrote here; nothing recorded")


# -- demo -----------------------------------------------------------------------------------------
@cli.command("demo", epilog=EXIT_CODES)
@click.argument("directory", required=False, type=click.Path(file_okay=False))
def demo_command(directory: str | None) -> None:
    """Run the README example for real on small file:// volumes under DIRECTORY.

    A new temporary directory is used when none is given. Prints `cirrus log` of the
    segmentation, then commands to try next.
    """
    from cirrus.demo import run

    paths = run(directory)
    for name, path in paths.items():
        click.echo(f"{name:<13} {path}")
    click.echo(f"\n$ cirrus log {paths['segmentation']}")
    print_log(paths["segmentation"])
    click.echo("\nTry next:")
    for command in ("verify", "lineage", "export"):
        click.echo(f"  cirrus {command} {paths['segmentation']}")
    click.echo(f"  cirrus show {paths['segmentation']} <record id from the log>")


def main(argv: list[str] | None = None) -> None:
    """The console script `cirrus`."""
    cli.main(args=argv, prog_name="cirrus")


if __name__ == "__main__":
    main()
