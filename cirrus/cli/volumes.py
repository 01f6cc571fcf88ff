"""`cirrus log | show | verify | lineage | export`: read and check a layer's provenance."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from cirrus.cli.common import (
    EXIT_CODES,
    EXIT_PROBLEMS,
    ProgressBar,
    is_terminal,
    require_layer,
    rich_console,
)

if TYPE_CHECKING:
    from cirrus.reading import DamagedRecord


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
    opened = open_lines(
        found.open_steps, found.open_sessions, found.unpublished, found.commits_json()
    )
    for line in opened:
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
    failed record is here; `cirrus log` shows its first line. A record the summary points to
    that is missing or damaged is shown as `cirrus log` shows it, DAMAGED, with how to restore
    it, and the command exits 3.
    """
    from cirrus.display import clean, record_text
    from cirrus.display_env import env_diff, env_script
    from cirrus.errors import IntegrityError
    from cirrus.ledger import Ledger
    from cirrus.reading import (
        DamagedRecord,
        entry_by_id,
        record_envs,
        resolve_record_id,
        standing,
        summary_pointers,
    )

    require_layer(path)
    ledger = Ledger.open(path)
    pointers = summary_pointers(ledger)  # one read for the id, a damaged record, its standing
    stored = entry_by_id(ledger, resolve_record_id(ledger, record_id, pointers), pointers)
    if isinstance(stored, DamagedRecord):  # as `cirrus log` shows it, then exit status 3
        _print_damaged(stored, as_json)
        raise IntegrityError(stored.problem, stored.remedy)
    envs = record_envs(ledger, stored)
    stands = standing(pointers, stored.id)
    if as_json:
        data = {
            "record": stored.to_json(),
            "standing": stands,
            "envs": {eid: doc if doc is not None else {"error": err} for eid, doc, err in envs},
        }
        click.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))
        return
    if stands and stands["superseded_by"]:
        later = stands["superseded_by"][:12]
        click.echo(
            f"SUPERSEDED by record {later}, a later finish of its step, which stands instead: "
            f"`cirrus show {path} {later}`\n"
        )
    elif stands and not stands["published"]:
        click.echo(
            "NOT PUBLISHED: the summary does not name this record, so `cirrus log` does not "
            f"show it: a record a crash left staged (`cirrus recover {path}` publishes it), or "
            "one of a session whose published record here stands for it\n"
        )
    if not is_terminal():
        click.echo(record_text(stored.to_json(), envs, diffs=True))
        return
    from rich.syntax import Syntax

    console = rich_console()
    console.print(record_text(stored.to_json(), envs, diffs=False), markup=False)
    for env_id, document, _error in envs:
        diff, script = clean(env_diff(document)), clean(env_script(document))  # never obeyed
        if diff:
            console.print(f"\n[bold]diff of env {env_id[:12]}[/bold]")
            console.print(Syntax(diff, "diff", theme="ansi_dark", word_wrap=True))
        if script:  # kept because git does not hold it
            console.print(f"\n[bold]script of env {env_id[:12]}[/bold]")
            console.print(Syntax(script, "python", theme="ansi_dark", word_wrap=True))


def _print_damaged(entry: DamagedRecord, as_json: bool) -> None:
    """A record the summary points to that is missing or damaged: what the summary says of
    it, the problem and the remedy (`--json`: under `damaged`, as `cirrus log --json` has it)."""
    from cirrus.display import damaged_lines

    if as_json:
        data = {"damaged": entry.to_json()}
        click.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))
    else:
        click.echo("\n".join(damaged_lines(entry.to_json())))


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
@click.option(
    "-o", "--output", metavar="FILE", help="Write to FILE, a new file in a directory that exists."
)
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
def export_command(path: str, fmt: str, output: str | None, force: bool) -> None:
    """PATH's history as W3C PROV: the volume and sources as entities, sessions and steps as
    activities, processes as plans, users as agents, sources via wasDerivedFrom.

    Written to stdout unless -o FILE is given: FILE appears whole or not at all, and one that
    exists is kept (refused) unless --force. A damaged record is exported as an activity marked
    `cirrus:damaged`, and the command then exits 3.
    """
    from cirrus.export import serialize
    from cirrus.reading import history

    if output:
        _check_output(output, force)  # before reading: a typo in FILE costs no history read
    found = history(path)  # refuses a mistyped PATH
    text = serialize(found, fmt)
    if not output:
        click.echo(text)
    else:
        _write_whole(output, (text + "\n").encode("utf-8"), force)
    found.raise_if_damaged()  # exported, marked `cirrus:damaged`; exit 3 all the same


def _check_output(output: str, force: bool) -> None:
    import os

    directory = os.path.dirname(os.path.abspath(output))
    if os.path.isdir(output):
        raise _unwritable(output, "it is a directory; name a file in it")
    if not os.path.isdir(directory):
        raise _unwritable(output, f"directory {directory} does not exist; create it first")
    if os.path.lexists(output) and not force:
        raise _exists(output)
    if not os.access(directory, os.W_OK):
        raise _unwritable(output, "permission denied")


def _write_whole(output: str, data: bytes, force: bool) -> None:
    """Write a temporary file beside FILE, then link it in (refused if FILE appeared since) or,
    with --force, rename it over FILE: a reader never sees half an export."""
    import os
    import tempfile

    directory = os.path.dirname(os.path.abspath(output))
    try:
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".cirrus-export-")
    except OSError as error:
        raise _unwritable(output, error.strerror or str(error)) from None
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        replaced = os.stat(output).st_mode & 0o777 if force and os.path.isfile(output) else None
        os.chmod(temporary, replaced if replaced is not None else 0o666 & ~_umask())
        if force:
            os.replace(temporary, output)
        else:
            _link_new(temporary, output)
    except FileExistsError:
        raise _exists(output) from None
    except OSError as error:
        raise _unwritable(output, error.strerror or str(error)) from None
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


def _link_new(temporary: str, output: str) -> None:
    """Put `temporary` in place as `output`, refused if `output` exists: a hard link, or where
    the file system has none (some FUSE and SMB mounts), an exclusive create then a rename."""
    import os

    from cirrus.storage.file import NO_HARD_LINKS

    try:
        os.link(temporary, output)
    except OSError as error:
        if error.errno not in NO_HARD_LINKS:
            raise
        os.close(os.open(output, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        os.replace(temporary, output)


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def _exists(output: str) -> Exception:
    return _unwritable(output, "it exists, and is kept; name a new file, or pass --force")


def _unwritable(output: str, reason: str) -> Exception:
    from cirrus.errors import InvalidInput

    return InvalidInput(f"cannot write the export to -o {output}: {reason}")
