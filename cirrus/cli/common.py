"""What every `cirrus` command shares: exit statuses, one-line errors, `--debug`, logging,
the check that a PATH is a layer, terminal output."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Any

import click

from cirrus.errors import plain_text
from cirrus.reading import require_layer as require_layer  # one check for the library and CLI

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_ERROR = 0, 1, 2, 3
EXIT_CODES = """\b
Exit status:
  0  ok
  1  problems found (cirrus verify), or failed tasks recorded (cirrus step finish)
  2  usage error or bad input (a mistyped PATH, an unknown record id or step)
  3  storage or provenance error"""
ENVIRONMENT = """\b
Environment:
  CIRRUS_STORAGE_DEADLINE  seconds to retry a storage call that fails transiently
                           (timeouts, throttling, 5xx, unreachable endpoint); default 60
  CIRRUS_DEBUG=1           as --debug"""
DEBUG_HELP = "Show tracebacks instead of one-line errors, and log every storage retry."
_DEBUG = "cirrus.debug"  # ctx.meta key, shared by a command's context and its parents'
_HANDLER = "cirrus.log_handler"


def exit_code(error: BaseException) -> int:
    from cirrus.errors import InvalidInput, StepError

    if isinstance(error, (InvalidInput, StepError)):
        return EXIT_USAGE
    return EXIT_ERROR


def _debug(ctx: click.Context) -> bool:
    return bool(ctx.meta.get(_DEBUG)) or os.environ.get("CIRRUS_DEBUG", "") not in ("", "0")


def _set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """`--debug`, before or after the subcommand: tracebacks, and DEBUG logs of cirrus."""
    if value:
        ctx.meta[_DEBUG] = True
        handler = ctx.meta.get(_HANDLER)
        if handler is not None:
            handler.setLevel(logging.DEBUG)
            logging.getLogger("cirrus").setLevel(logging.DEBUG)


def debug_option() -> click.Option:
    return click.Option(
        ["--debug"],
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_set_debug,
        help=DEBUG_HELP,
    )


class _EchoHandler(logging.Handler):
    """cirrus's log lines on the command's stderr, as `cirrus: warning: ...`."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = plain_text(record.getMessage())
            click.echo(f"cirrus: {record.levelname.lower()}: {message}", err=True)
        except Exception:  # pragma: no cover - logging must never break the command
            self.handleError(record)


class CirrusGroup(click.Group):
    """Turns any error into one line on stderr and an exit status (traceback with --debug).

    Every command added gets `--debug` too, so `cirrus log --debug PATH` works as well as
    `cirrus --debug log PATH`.
    """

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not any(param.name == "debug" for param in cmd.params):
            cmd.params.append(debug_option())
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context) -> Any:
        if ctx.parent is not None:  # a nested group (`cirrus step`): the root handles errors
            return super().invoke(ctx)
        logger = logging.getLogger("cirrus")
        handler, level = _EchoHandler(logging.WARNING), logger.level
        ctx.meta[_HANDLER] = handler
        logger.addHandler(handler)
        if _debug(ctx):
            _set_debug(ctx, None, True)  # type: ignore[arg-type]
        try:
            return self._invoke_reporting_errors(ctx)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)

    def _invoke_reporting_errors(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("cirrus: interrupted", err=True)
            ctx.exit(130)
        except Exception as error:
            if _debug(ctx):  # the traceback, and the exit status scripts rely on
                traceback.print_exc()
            else:
                click.echo(f"cirrus: error: {error_line(error, ctx)}", err=True)
            ctx.exit(exit_code(error))


def error_line(error: BaseException, ctx: click.Context) -> str:
    """The one line an error becomes; how to see more when that line is not enough."""
    from cirrus.errors import CirrusError, TransientStorageError

    text = plain_text(error)
    message = text.splitlines()[0].rstrip(": ") if text else ""
    if isinstance(error, TransientStorageError):
        from cirrus.storage.retry import storage_deadline

        message += (
            f" (gave up after retrying for {storage_deadline():g}s, as CIRRUS_STORAGE_DEADLINE "
            "allows; check the endpoint and the network)"
        )
    elif not isinstance(error, CirrusError):
        message = f"{type(error).__name__}: {message} (rerun as `{_rerun(ctx)}` for details)"
    return message


def _rerun(ctx: click.Context) -> str:
    """`cirrus --debug log ...`: the command line to rerun for the traceback."""
    sub = ctx.invoked_subcommand
    return " ".join(["cirrus", "--debug", *([sub] if sub else []), "..."])


def rich_console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def is_terminal() -> bool:
    return sys.stdout.isatty()


class ProgressBar:
    """A rich progress bar on stderr for runs of many objects, only when stderr is a terminal."""

    THRESHOLD = 200

    def __init__(self, description: str):
        self.description = description
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> ProgressBar:
        return self

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            if total < self.THRESHOLD or not sys.stderr.isatty():
                return
            from rich.progress import Progress

            self.bar = Progress(console=rich_console(stderr=True), transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.description, total=total)
        self.bar.update(self.task, completed=done)

    def __exit__(self, *_exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()
