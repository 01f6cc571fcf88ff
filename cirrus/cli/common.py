"""What every `cirrus` command shares: exit statuses, one-line errors, terminal output."""

from __future__ import annotations

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


def exit_code(error: BaseException) -> int:
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
            ctx.exit(exit_code(error))


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
