"""The `prodx` command line: option declarations and wiring only, no logic."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="prodx")
def cli() -> None:
    """Differential diagnosis for sick production servers.

    Start with `prodx diagnose`: it examines the host read-only, ranks every known
    failure condition by probability, names the next test and prints the remedy.
    """


def main() -> None:
    cli()
