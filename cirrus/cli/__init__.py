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

import click

from cirrus.cli import maintenance, volumes
from cirrus.cli.common import EXIT_CODES, CirrusGroup


@click.group(cls=CirrusGroup, epilog=EXIT_CODES)
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="cirrus-provenance", prog_name="cirrus")
def cli(debug: bool) -> None:
    """Provenance of CloudVolume layers: history, verification, lineage, export.

    PATH is a layer's cloudpath: gs://, s3://, file://, mem:// (precomputed:// accepted).
    """


for command in (
    volumes.log_command,
    volumes.show_command,
    volumes.verify_command,
    volumes.lineage_command,
    maintenance.recover_command,
    maintenance.repair_command,
    volumes.export_command,
    maintenance.step_group,
    maintenance.demo_command,
):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """The console script `cirrus`."""
    cli.main(args=argv, prog_name="cirrus")


if __name__ == "__main__":
    main()
