"""The `cirrus` command: read, check, repair and export the provenance of CloudVolume layers.

Exit status, for every command:

    0  ok
    1  `cirrus verify` found problems, or `cirrus step finish` recorded failed tasks
    2  usage error or bad input (a bad or mistyped path, an unknown record id or step, a
       malformed step token, an output file that cannot be written)
    3  storage or provenance error (unreachable storage, a corrupt summary, a tampered object)

Errors are one line on stderr; `--debug` (before or after the subcommand, or CIRRUS_DEBUG=1)
shows the traceback and logs every storage retry.
Heavy modules (cloudvolume, rich, prov) are imported inside the commands that use them, so
`cirrus --help` stays fast.
"""

from __future__ import annotations

import click

from cirrus.cli import maintenance, volumes
from cirrus.cli.common import ENVIRONMENT, EXIT_CODES, CirrusGroup, debug_option


@click.group(cls=CirrusGroup, epilog=f"{EXIT_CODES}\n\n{ENVIRONMENT}")
@click.version_option(package_name="cirrus-provenance", prog_name="cirrus")
def cli() -> None:
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
cli.params.append(debug_option())


def main(argv: list[str] | None = None) -> None:
    """The console script `cirrus`."""
    cli.main(args=argv, prog_name="cirrus")


if __name__ == "__main__":
    main()
