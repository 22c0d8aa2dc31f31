"""`python -m prodx` runs the same CLI as the `prodx` console script."""

from prodx.cli import main

main()
