"""`cirrus log | show | verify | lineage | export`: read and check a layer's provenance."""

from __future__ import annotations

import json
from typing import Any

import click

from cirrus.cli.common import (
    EXIT_CODES,
    EXIT_PROBLEMS,
    ProgressBar,
    is_terminal,
    require_layer,
    rich_console,
)


# -- log ------------------------------------------------------------------------------------------
def print_log(path: str, as_json: bool = False, limit: int | None = None) -> None:
    """Print a volume's history, newest first (what `cirrus log` and `cirrus demo` show).

    Damaged records are shown in place, marked DAMAGED; after everything else is printed,
    they raise IntegrityError: one line on stderr, exit status 3.
    """
    from cirrus.reading import history

    found = history(path, newest=limit)  # refuses a mistyped PATH; reads the newest records
    if as_json:
        data = found.to_json()
        data["records"].reverse()  # newest first, as shown
        data["damaged"].reverse()
        click.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))
    elif is_terminal():
        _log_table(found)
    else:
        click.echo(str(found))
        shown = (found.entries, found.open_steps, found.open_sessions, found.unpublished)
        if not (any(shown) or found.other_tools):
            click.echo("no provenance recorded here")
    found.raise_if_damaged()


def _log_table(found: Any) -> None:
    from rich.table import Table
    from rich.text import Text

    from cirrus.display import COLUMNS, open_lines, other_tools_lines, record_count, row

    entries = [entry.to_json() for entry in found.entries]
    console = rich_console()
    count = record_count(len(entries), found.total, len(found.damaged))
    table = Table(title=f"{found.volume}: {count}", show_lines=True)
    for column in COLUMNS:
        table.add_column(column, overflow="fold")
    for record in reversed(entries):
        cells = row(record)
        style = "red" if record.get("damaged") or record["status"] != "committed" else None
        table.add_row(*(Text(cells[c]) for c in COLUMNS), style=style)  # stored text, not markup
    for line in open_lines(found.open_steps, found.open_sessions, found.unpublished):
        console.print(Text(line, style="yellow"))
    console.print(table)
    if found.other_tools:
        console.print(Text("\n".join(other_tools_lines(found.other_tools))))


@click.command("log", epilog=EXIT_CODES)
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Records as JSON (newest first).")
@click.option("--limit", "-n", type=click.IntRange(min=1), help="Show only the newest N records.")
def log_command(path: str, as_json: bool, limit: int | None) -> None:
    """History of PATH, newest first: time, status, process, motivation, sources, writes, who.

    Open steps (opened, not finished yet) are listed first. A damaged record (missing, or
    changed after it was written) is shown in its place marked DAMAGED, with what the summary
    says of it and how to fix it; the others are all shown, then the command exits 3.
    """
    print_log(path, as_json, limit)


# -- show -----------------------------------------------------------------------------------------
@click.command("show", epilog=EXIT_CODES)
@click.argument("path")
@click.argument("record_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="The record and its environments as JSON.")
def show_command(path: str, record_id: str, as_json: bool) -> None:
    """One record of PATH in full, with its code environments (and their git diffs).

    ID is a record id or a unique prefix of one (as `cirrus log` shows). The full error of a
    failed record is here; `cirrus log` shows its first line.
    """
    from cirrus.display import record_text
    from cirrus.display_env import env_diff, env_script
    from cirrus.ledger import Ledger
    from cirrus.reading import record_envs, resolve_record_id

    require_layer(path)
    ledger = Ledger.open(path)
    stored = ledger.read_record(resolve_record_id(ledger, record_id))
    envs = record_envs(ledger, stored)
    if as_json:
        data = {
            "record": stored.to_json(),
            "envs": {eid: doc if doc is not None else {"error": err} for eid, doc, err in envs},
        }
        click.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))
        return
    if not is_terminal():
        click.echo(record_text(stored.to_json(), envs, diffs=True))
        return
    from rich.syntax import Syntax

    console = rich_console()
    console.print(record_text(stored.to_json(), envs, diffs=False), markup=False)
    for env_id, document, _error in envs:
        diff, script = env_diff(document), env_script(document)
        if diff:
            console.print(f"\n[bold]diff of env {env_id[:12]}[/bold]")
            console.print(Syntax(diff, "diff", theme="ansi_dark", word_wrap=True))
        if script:  # kept because git does not hold it
            console.print(f"\n[bold]script of env {env_id[:12]}[/bold]")
            console.print(Syntax(script, "python", theme="ansi_dark", word_wrap=True))


# -- verify ---------------------------------------------------------------------------------------
@click.command("verify", epilog=EXIT_CODES)
@click.argument("paths", metavar="PATH...", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="The findings as JSON.")
def verify_command(paths: tuple[str, ...], as_json: bool) -> None:
    """Re-hash every record and environment file of PATH and check the summary agrees.

    Finds tampered or missing objects, summary entries that do not match their records (a
    summary edited by hand), orphaned records (publish them with `cirrus recover`), tasks that
    ran after their step was finished (here, or cut short before filing here, as the step's
    other volumes show), and lists open steps and sessions that wrote without committing
    (yet). Exits 1 if anything does not match.
    """
    from cirrus.verify import verify

    for path in paths:
        require_layer(path)  # every PATH, before any report: a typo is not an empty layer
    reports = []
    for path in paths:
        with ProgressBar(f"verifying {path}") as progress:
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


# -- lineage --------------------------------------------------------------------------------------
@click.command("lineage", epilog=EXIT_CODES)
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
    """Where PATH came from: its sources, and theirs, following sources that name layers.

    Free-text sources, cycles and the depth limit end a branch and are shown as such; they are
    not errors. Sessions that wrote without committing are shown with their sources, marked as
    not recorded yet. Damaged records are counted on their volume and skipped, records stored
    that the summary does not name are marked UNPUBLISHED, and a source that cannot be read is
    a leaf with its fix: all is shown, then the command exits 3, as `cirrus log` does. PATH's
    own provenance failing to read is an error (exit 3).
    """
    from cirrus.lineage import lineage, raise_if_incomplete
    from cirrus.lineage_render import RENDERERS

    require_layer(path)  # its sources may be unreadable; PATH itself must be a layer
    root = lineage(path, depth=depth)
    if fmt == "json":
        click.echo(json.dumps(root.to_json(), indent=2, ensure_ascii=False))
    else:
        click.echo(RENDERERS[fmt](root))
    raise_if_incomplete(root)  # shown, marked; exit 3 all the same


# -- export ---------------------------------------------------------------------------------------
@click.command("export", epilog=EXIT_CODES)
@click.argument("path")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["prov-json", "prov-jsonld"]),
    default="prov-json",
    show_default=True,
)
@click.option("-o", "--output", metavar="FILE", help="Write to FILE (its directory must exist).")
def export_command(path: str, fmt: str, output: str | None) -> None:
    """PATH's history as W3C PROV: the volume and sources as entities, sessions and steps as
    activities, processes as plans, users as agents, sources via wasDerivedFrom.

    Written to stdout unless -o FILE is given. A damaged record is exported as an activity
    marked `cirrus:damaged`, and the command then exits 3.
    """
    from cirrus.export import serialize
    from cirrus.reading import history

    if output:
        _check_output(output)  # before reading: a typo in FILE should not cost a history read
    found = history(path)  # refuses a mistyped PATH
    text = serialize(found, fmt)
    if not output:
        click.echo(text)
    else:
        try:
            with open(output, "w", encoding="utf-8") as handle:
                handle.write(text + "\n")
        except OSError as error:
            raise _unwritable(output, error.strerror or str(error)) from None
    found.raise_if_damaged()  # exported, marked `cirrus:damaged`; exit 3 all the same


def _check_output(output: str) -> None:
    import os

    directory = os.path.dirname(os.path.abspath(output))
    if os.path.isdir(output):
        raise _unwritable(output, "it is a directory; name a file in it")
    if not os.path.isdir(directory):
        raise _unwritable(output, f"directory {directory} does not exist; create it first")
    if not os.access(directory, os.W_OK) or (
        os.path.exists(output) and not os.access(output, os.W_OK)
    ):
        raise _unwritable(output, "permission denied")


def _unwritable(output: str, reason: str) -> Exception:
    from cirrus.errors import InvalidInput

    return InvalidInput(f"cannot write the export to -o {output}: {reason}")
