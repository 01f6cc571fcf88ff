"""`cirrus recover | repair | step | demo`: finish what crashed, repair, run steps, try it out."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from cirrus.cli.common import EXIT_CODES, EXIT_PROBLEMS, CirrusGroup, exit_code, require_layer
from cirrus.cli.volumes import print_log

if TYPE_CHECKING:
    from cirrus.steptoken import StepToken


# -- recover / repair -----------------------------------------------------------------------------
@click.command("recover", epilog=EXIT_CODES)
@click.argument("paths", metavar="PATH...", nargs=-1, required=True)
@click.option(
    "--abandon",
    metavar="SESSION",
    help="Record a dead session each PATH still lists as writing (`cirrus log`) as interrupted.",
)
@click.option(
    "--abandon-dead",
    is_flag=True,
    help="Record as interrupted every session a PATH lists as writing from this host whose pid "
    "no longer runs.",
)
@click.option("--force", is_flag=True, help="With --abandon: even if its pid runs here.")
@click.pass_context
def recover_command(
    ctx: click.Context, paths: tuple[str, ...], abandon: str | None, abandon_dead: bool, force: bool
) -> None:
    """Publish records of each PATH (and its sibling volumes) that an interrupted commit staged.

    A session killed after its commit point (its journal) is completed on every volume it wrote,
    with the records its commit would have published. Without a journal (deleted or damaged),
    a volume it wrote but never staged a record on gets an `interrupted` record (status failed,
    writes unknown) once the session is 10 minutes old. Safe to run at any time: records
    already published are left alone. A session killed before it committed
    stays listed as writing on every volume it wrote; `--abandon SESSION` (an id or its
    prefix) records it as interrupted from that listing on each PATH given, and
    `--abandon-dead` every one listed from this host whose process is gone. Every PATH is
    tried; the exit status is then the worst any PATH had alone (2 refused, 3 storage).
    """
    from cirrus.errors import CirrusError

    if abandon is not None and abandon_dead:
        raise click.UsageError("--abandon names one session, --abandon-dead finds them: use one")
    if force and abandon is None:
        raise click.UsageError("--force only applies to --abandon")
    for path in paths:
        require_layer(path)
    refused = []
    for path in paths:
        try:
            _recover_one(path, abandon, abandon_dead, force)
        except CirrusError as error:
            if len(paths) == 1:
                raise
            refused.append((path, error))
    for path, error in refused:
        click.echo(f"cirrus: error: {path}: {error}", err=True)
    if refused:  # a storage or provenance error outranks a refused argument, as for one PATH
        ctx.exit(max(exit_code(error) for _, error in refused))


def _recover_one(path: str, abandon: str | None, abandon_dead: bool, force: bool) -> None:
    from cirrus.ledger import Ledger
    from cirrus.model import is_interrupted
    from cirrus.rollforward import recover

    if abandon is not None:
        from cirrus.abandon import abandon as abandon_session

        rid = abandon_session(path, abandon, force=force)
        session = Ledger.open(path).read_record(rid).record.session
        click.echo(f"{path}: session {session} recorded as interrupted")
        click.echo(f"  {rid} (interrupted: its writes were never tallied; re-run to record them)")
        return
    if abandon_dead:
        from cirrus.abandon import abandon_dead as abandon_all_dead

        dead = abandon_all_dead(path)
        for session, rid in dead.items():
            click.echo(f"{path}: session {session} recorded as interrupted ({rid})")
        left = Ledger.open(path).summary().get("cirrus", {}).get("open_sessions", {})
        click.echo(
            f"{path}: {len(dead)} dead session(s) of this host recorded as interrupted; "
            f"{len(left)} still listed as writing (alive, or on another host: `cirrus log`)"
        )
        return
    done = recover(path)
    if not done:
        click.echo(f"{path}: nothing to recover; every staged record is published")
        listed = Ledger.open(path).summary().get("cirrus", {}).get("open_sessions", {})
        if listed:  # a session killed before it staged anything has only its listing
            click.echo(
                f"{path}: {len(listed)} session(s) still listed as writing "
                f"({', '.join(sorted(listed)[:3])}{', ...' if len(listed) > 3 else ''}): if "
                "a process is gone, `cirrus recover PATH --abandon-dead` on its host, or "
                "`--abandon SESSION`, records it as interrupted"
            )
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


@click.command("repair", epilog=EXIT_CODES)
@click.argument("path")
def repair_command(path: str) -> None:
    """Set a malformed `provenance` summary of PATH aside and rebuild it from the records.

    Malformed: not JSON, or not the shape CloudVolume and cirrus read (a record pointer of the
    wrong type, say). What other tools wrote in it (description, owners, sources, processing)
    is carried over where it fits, and what does not is named. The original is kept under
    provenance.d/corrupt/<sha256>; a well-formed summary is left untouched.
    """
    from cirrus.ledger import Ledger
    from cirrus.repair import repair_summary

    require_layer(path)
    ledger = Ledger.open(path)
    repaired = repair_summary(path)
    if repaired is None:
        click.echo(f"{ledger.cloudpath}: the summary is well-formed; nothing to repair")
        return
    summary = ledger.summary()
    published = len(summary.get("cirrus", {}).get("records", []))
    click.echo(f"{ledger.cloudpath}: kept the malformed summary as {repaired.kept}")
    click.echo(
        f"  rebuilt the summary from {published} record(s) and what other tools wrote in it "
        f"({len(summary['sources'])} source(s), {len(summary['processing'])} processing "
        "entries in all); check it with `cirrus verify`"
    )
    if repaired.dropped:
        click.echo(
            f"  not carried over, as it does not fit CloudVolume's shape: "
            f"{'; '.join(repaired.dropped)} (see {repaired.kept})"
        )


# -- step -----------------------------------------------------------------------------------------
TOKEN_HELP = (
    "a step token is the JSON string `step.token` gives the step's opener, like "
    '{"cirrus_step": 1, "id": "<32 hex digits>", "volumes": ["gs://bucket/layer", ...]}; '
    "pass it unchanged, as @FILE or on stdin with -"
)
TOKEN_KEYS = ("cirrus_step", "id", "volumes")


@click.group("step", cls=CirrusGroup, epilog=EXIT_CODES)
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


def _parse_token(token: str) -> StepToken:
    """The step token TOKEN stands for, with an error that says what is wrong with it and what
    a token looks like (the library's own check only names a missing key)."""
    from cirrus.errors import StepError
    from cirrus.steptoken import StepToken

    text = _token(token)
    try:
        data = json.loads(text)
    except ValueError:
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise StepError(f"not a cirrus step token: {shown!r} is not JSON; {TOKEN_HELP}") from None
    if isinstance(data, dict):
        missing = [key for key in TOKEN_KEYS if key not in data]
        if missing:
            keys = " and ".join(repr(key) for key in missing)
            raise StepError(f"not a cirrus step token: it has no {keys} key; {TOKEN_HELP}")
    try:
        return StepToken.loads(data)
    except StepError as error:
        raise StepError(f"{str(error).split('; ')[0]}; {TOKEN_HELP}") from None


def _step_token(token: str, undo: bool = False) -> StepToken:
    """The token TOKEN stands for, with the step's volumes as its manifest names them: an
    unknown step, a token whose volumes are not the step's, or a step whose opening failed
    (undone first where it was not, with `undo`: `stepfinish.opened_step`) is refused (exit
    status 2)."""
    from cirrus.stepfinish import opened_step

    return opened_step(_parse_token(token), undo=undo)[0]


@step_group.command("status", epilog=EXIT_CODES)
@click.argument("token")
@click.option("--json", "as_json", is_flag=True, help="The progress report as JSON.")
def step_status_command(token: str, as_json: bool) -> None:
    """Tasks recorded so far on each volume of the step, failures, open or finished.

    A step that none of the token's volumes knows, or a token whose volumes are not the
    step's (edited by hand: `cirrus step token PATH STEP` prints the real one), is an error
    (exit status 2).
    """
    from cirrus.stepfinish import status

    report = status(_step_token(token))
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    click.echo(f"step {report['step']}")
    for layer, info in report["volumes"].items():
        state = "finished" if info["finished"] else "open" if info["open"] else "not open"
        if info["late"]:
            state = f"finished before tasks that ran since ({info['late']}): finish it again"
        click.echo(
            f"  {layer}: {info['tasks']} task(s) recorded, {len(info['failed'])} failed, {state}"
        )
        for task in info["failed"][:20]:
            click.echo(f"    failed: {task}")
        short = info.get("incomplete", [])
        if short:
            click.echo(
                f"    cut short while filing here: {', '.join(short[:20])}"
                f"{', ...' if len(short) > 20 else ''} (their writes here are unrecorded: "
                "re-run them under their ids, then finish again)"
            )
        for task in info.get("failed_after_commit", [])[:20]:
            click.echo(
                f"    failed after committing (its chunks may be overwritten; re-run it): {task}"
            )
    if "expected" in report:
        named = report["missing_tasks"]
        shown = f": {', '.join(named[:20])}{', ...' if len(named) > 20 else ''}" if named else ""
        click.echo(f"  expected {report['expected']} task(s), {report['missing']} missing{shown}")
        if report["unexpected_tasks"]:
            named = report["unexpected_tasks"]
            shown = f"{', '.join(named[:20])}{', ...' if len(named) > 20 else ''}"
            click.echo(f"  filed under ids the step does not expect: {shown}")


@step_group.command("token", epilog=EXIT_CODES)
@click.argument("path")
@click.argument("step_id", metavar="STEP")
def step_token_command(path: str, step_id: str) -> None:
    """Print the token of a step opened on PATH: STEP is its id or a unique prefix of it.

    For a step whose token was lost (a notebook restarted, a queue purged): the token is the
    step's id and volumes, which its manifest on each volume holds. `cirrus log PATH` shows
    the ids of open steps. A step whose opening failed has none (exit status 2).
    """
    from cirrus.errors import InvalidInput
    from cirrus.stepfiles import NOT_OPENED, StepFiles, marked_not_opened, never_opened
    from cirrus.steptoken import StepToken

    require_layer(path)
    files = StepFiles.open(path)
    known = sorted(files.step_ids())
    matches = [sid for sid in known if sid.startswith(step_id)] if step_id else []
    if len(matches) != 1:
        problem = "matches several" if matches else "is not one"
        shown = ", ".join(sid[:12] for sid in (matches or known)[:10]) or "none"
        raise InvalidInput(
            f"{step_id!r} {problem} of the steps opened on {files.cloudpath} ({shown}); "
            "`cirrus log PATH` shows open steps"
        )
    manifest = files.manifest(matches[0])  # a damaged one raises, naming the fix
    if NOT_OPENED in manifest:
        raise never_opened(manifest)
    marked = marked_not_opened(matches[0], manifest["volumes"])  # an undo part way
    if marked is not None:
        raise never_opened(marked)
    click.echo(StepToken(matches[0], tuple(manifest["volumes"])).dumps())


@step_group.command("finish", epilog=EXIT_CODES)
@click.argument("token")
def step_finish_command(token: str) -> None:
    """Fold the tasks' fragments into one record per volume and publish. Safe to repeat.

    Prints each volume's record with its status and task counts. Exits 1 when a record is
    `failed` (some tasks failed: their errors are listed; re-run them, then finish again),
    2 when the step is unknown, TOKEN is not a step token or its volumes are not the step's
    (then nothing is written; `cirrus step token PATH STEP` prints the step's own token).
    """
    from cirrus.display import first_line, status_text, tasks_counts
    from cirrus.ledger import Ledger
    from cirrus.stepfinish import finish

    parsed = _step_token(token, undo=True)
    ids = finish(parsed)
    lines, failed = [], 0
    for layer in parsed.volumes:
        if layer not in ids:
            lines.append(f"  {layer}: no task wrote here; nothing recorded")
            continue
        record = Ledger.open(layer).read_record(ids[layer]).to_json()
        tasks = record.get("tasks") or {}
        failed += record["status"] != "committed"
        status = status_text(record, full=False)
        if status != status_text(record, full=True):  # cut: `cirrus show` has all of it
            status += f" (full error: `cirrus show {layer} {ids[layer][:12]}`)"
        lines.append(
            f"  {layer}: {status}, record {ids[layer]}\n"
            f"    tasks: {tasks.get('count', 0)} ({tasks_counts(tasks)})"
        )
        listed = tasks.get("failures") or []
        for failure in listed[:20]:
            error = failure.get("error") or {}
            reason = first_line(f"{error.get('type', '?')}: {error.get('message', '')}")
            lines.append(f"    failed: {failure.get('task')}: {reason}")
        for failure in (tasks.get("failures_after_commit") or [])[:20]:
            error = failure.get("error") or {}
            reason = first_line(f"{error.get('type', '?')}: {error.get('message', '')}")
            lines.append(f"    failed after committing: {failure.get('task')}: {reason}")
        more = tasks.get("failed", 0) - min(len(listed), 20)
        if more > 0:
            lines.append(f"    ... {more} more: `cirrus show {layer} {ids[layer][:12]}`")
    verdict = f": {failed} record(s) failed" if failed else ""
    click.echo(f"step {parsed.id} finished{verdict}")
    for line in lines:
        click.echo(line)
    if failed:
        click.get_current_context().exit(EXIT_PROBLEMS)


# -- demo -----------------------------------------------------------------------------------------
@click.command("demo", epilog=EXIT_CODES)
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
