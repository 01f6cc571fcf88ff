"""`python -m cirrus`: the `cirrus` command, where the console script is not on PATH."""

from cirrus.cli import main

main()
