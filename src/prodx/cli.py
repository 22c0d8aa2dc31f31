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


@cli.command("space")
@click.argument("path", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (schema prodx.space/1).")
@click.option("--top", "top_n", type=click.IntRange(1, 1000), default=20, show_default=True, help="Rows per list.")
@click.option(
    "--deadline", "deadline_s", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
    help="Stop after this many seconds and report what was seen (marked PARTIAL).",
)
@click.option("--inodes", "mode", flag_value="inodes", help="Count inodes only (fast: no stat per file).")
@click.option("--bytes", "mode", flag_value="bytes", help="Measure bytes only.")
def space(path: str, as_json: bool, top_n: int, deadline_s: float, mode: str | None) -> None:
    """What fills the filesystem holding PATH, by bytes and by inodes (stays on that filesystem)."""
    from prodx.report.space import space_command
    from prodx.scanners.space import ScanMode

    mode_enum = ScanMode(mode) if mode else ScanMode.BOTH
    raise SystemExit(space_command(path, as_json=as_json, top_n=top_n, deadline_s=deadline_s, mode=mode_enum))


def main() -> None:
    cli()
