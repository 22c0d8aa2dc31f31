"""The `prodx` command line: option declarations and wiring only, no logic."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from typing import Any

import click

EPILOG_DIAGNOSE = """\b
Examples:
  prodx diagnose                                  examine this host, no configuration
  prodx diagnose --profile /etc/prodx/shop.toml   with the app's user, paths, logs
  prodx diagnose --symptom "login silently fails" --symptom "register returns 503"
  prodx diagnose --no-probes --symptom "No space left on device"   reason from words alone
  prodx diagnose --json | jq '.differential[0]'

\b
Exit codes: 0 no condition is likely, 1 a condition is likely (P >= 0.5),
            2 usage or configuration error, 3 prodx itself failed.
"""


# Paths given on the command line are plain strings, never click.Path: click stats them while
# parsing, and a stat on a dead network mount blocks in the kernel for good. The commands
# check them themselves, after the mount they sit on has answered.


def _not_empty(_ctx: click.Context, _param: click.Parameter, path: str) -> str:
    """An empty PATH would silently mean the current directory."""
    if not path:
        raise click.BadParameter("is empty: name the folder or file whose filesystem to measure")
    return path


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from importlib.metadata import version

    from prodx.scanners.logscan import engine_name

    click.echo(f"prodx {version('prodx')} (log engine: {engine_name()})")
    ctx.exit()


#: A symptom is a sentence or a log line; reading costs grow with its length.
MAX_SYMPTOM_CHARS = 4000


def _short_symptoms(_ctx: click.Context, _param: click.Parameter, symptoms: tuple[str, ...]) -> tuple[str, ...]:
    for i, text in enumerate(symptoms, 1):
        if len(text) > MAX_SYMPTOM_CHARS:
            raise click.BadParameter(f"symptom {i} has {len(text):,} characters; a symptom is a sentence or a log line "
                                     f"(at most {MAX_SYMPTOM_CHARS:,}): put long text in a file and give it to `prodx logs`")
    return symptoms


class Seconds(click.FloatRange):
    """A number of seconds within bounds; NaN and infinity are refused (every comparison with
    NaN is false, so a plain range lets it through)."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return number


def diagnosing_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options every diagnosing command takes (SPEC §3), declared once."""
    options = [
        click.option("--profile", "profile_path", type=str, metavar="FILE", default="", help="Site profile (TOML): app user, writable paths, logs, services, URLs, dependencies, certificates (see `prodx init`)."),
        click.option("--symptom", "symptoms", multiple=True, metavar="TEXT", callback=_short_symptoms, help='What people see, in plain words (repeatable): "login silently fails".'),
        click.option("--no-probes", is_flag=True, help="Do not examine the host: reason from symptoms alone."),
        click.option("--as", "as_user", default="", metavar="USER", help="Whose write access to test (default: the profile's user, else www-data)."),
        click.option("--deadline", "deadline_s", type=Seconds(min=0.2, max=120), default=3.0, show_default=True, help="Seconds the probes may take in all; a hung probe is abandoned."),
        click.option("--kb", "kb_dirs", multiple=True, type=click.Path(file_okay=False), metavar="DIR", help="Extra knowledge-base directory (findings/, signatures/, conditions/ as YAML)."),
        click.option("--no-write-test", is_flag=True, help="Skip what writes: the write test (a temp file created, fsynced and removed) and the profile's login journey (its POST makes the app create a session)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version and which log engine runs here, and exit.")
def cli() -> None:
    """Differential diagnosis for sick production servers.

    Start with `prodx diagnose`: it examines the host read-only, ranks every known
    failure condition by probability, names the next test and prints the remedy.
    """


@cli.command("space")
@click.argument("path", type=str, callback=_not_empty)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (schema prodx.space/1).")
@click.option("--top", "top_n", type=click.IntRange(1, 1000), default=20, show_default=True, help="Rows per list.")
@click.option(
    "--deadline", "deadline_s", type=Seconds(min=0.1), default=30.0, show_default=True,
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


@cli.command("capture")
@diagnosing_options
@click.option("-o", "--output", "output", required=True, metavar="FILE.tar.gz",
              help="Where to write the archive ('-' streams it to stdout, e.g. into ssh); nothing else is written.")
def capture_cmd(output: str, **options: Any) -> None:
    """Examine this host as `diagnose` does and save what the probes saw, secrets masked, to
    one archive; `prodx diagnose --from FILE.tar.gz` replays it on another machine."""
    from prodx.capture import run_capture

    raise SystemExit(run_capture(output, **options))


@cli.command("diagnose", epilog=EPILOG_DIAGNOSE)
@diagnosing_options
@click.option("--from", "from_archive", type=str, default=None, metavar="FILE.tar.gz|DIR",
              help="Diagnose a capture instead of this host: a `prodx capture` archive, the same extracted, "
                   "or another tool's tree of a host's files (proc/, etc/, var/log/ at the top).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (schema prodx.diagnosis/1).")
@click.option("--markdown", "as_markdown", is_flag=True, help="Print the diagnosis as a Markdown incident note, for a ticket or a postmortem.")
def diagnose_cmd(as_json: bool, as_markdown: bool, **options: Any) -> None:
    """Examine this host read-only and rank what is wrong with it.

    Probes examine every organ in about a second: filesystems (space, inodes, root reserve,
    read-only, what fills them, deleted files still open, a write test as the app's user),
    logs and the kernel log, memory and OOM kills, CPU, processes and their limits, network
    and dependencies (PostgreSQL, MySQL, Redis), HTTP endpoints and a login journey, TLS
    certificates, the clock, and what changed recently. With no profile the running stack is
    discovered. A Bayesian engine ranks every known condition, names the next test that best
    separates the leaders, and prints the remedy, safe steps first.
    """
    from prodx.commands import run_diagnose

    if as_json and as_markdown:
        raise click.UsageError("--json and --markdown are mutually exclusive")
    raise SystemExit(run_diagnose(as_json=as_json, as_markdown=as_markdown, **options))


@cli.command("ask")
@diagnosing_options
@click.option("--confidence", type=click.FloatRange(0.05, 0.999), default=0.8, show_default=True, metavar="P",
              help="Stop asking once the leading condition reaches this probability.")
@click.option("--max-questions", type=click.IntRange(min=0), default=None, metavar="N", help="Ask at most N questions.")
def ask_cmd(confidence: float, max_questions: int | None, **options: Any) -> None:
    """Guided diagnosis: examine the host, then ask the question that best separates the
    leading conditions, re-rank after each answer, and end with the remedy.

    Answer y (yes), n (no), ? (don't know); q (or closing the input) leaves with the
    current differential.
    """
    from prodx.ask import run_ask

    raise SystemExit(run_ask(confidence=confidence, max_questions=max_questions, **options))


@cli.command("init")
@click.option("-o", "--output", "output", default="prodx.toml", show_default=True, metavar="FILE",
              help="Where to write the profile; '-' prints it to stdout.")
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
def init_cmd(output: str, force: bool) -> None:
    """Discover the running stack and write it as a commented profile for you to review.

    Finds nginx, Apache, PHP-FPM, gunicorn, uWSGI, Node, Java, PostgreSQL, MySQL, Redis and
    cron from the running processes, their users, ports, logs, app folders and the writable
    folders of known frameworks. Every value says where it came from.
    """
    from prodx.commands import run_init

    raise SystemExit(run_init(output, force=force))


@cli.command("explain")
@click.argument("item_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (schema prodx.explain/1).")
@click.option("--kb", "kb_dirs", multiple=True, type=click.Path(file_okay=False), metavar="DIR", help="Extra knowledge-base directory.")
def explain_cmd(item_id: str, as_json: bool, kb_dirs: tuple[str, ...]) -> None:
    """What a condition or finding ID is, how prodx observes it, what it explains, and how to
    rule it in or out. An unknown ID exits 2 naming the nearest ones."""
    from prodx.commands import run_explain

    raise SystemExit(run_explain(item_id, as_json=as_json, kb_dirs=kb_dirs))


@cli.group("kb")
def kb_group() -> None:
    """The knowledge base: conditions, findings, log signatures."""


@kb_group.command("list")
@click.option("--kb", "kb_dirs", multiple=True, type=click.Path(file_okay=False), metavar="DIR", help="Extra knowledge-base directory.")
def kb_list(kb_dirs: tuple[str, ...]) -> None:
    """List every condition with its prior and what it refines."""
    from prodx.commands import run_kb_list

    raise SystemExit(run_kb_list(kb_dirs))


@kb_group.command("lint")
@click.option("--kb", "kb_dirs", multiple=True, type=click.Path(file_okay=False), metavar="DIR", help="Extra knowledge-base directory.")
def kb_lint(kb_dirs: tuple[str, ...]) -> None:
    """Check the whole KB: unknown ids, probabilities, conditions no finding tells apart."""
    from prodx.commands import run_kb_lint

    raise SystemExit(run_kb_lint(kb_dirs))


@kb_group.command("show")
@click.argument("item_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (schema prodx.kb-show/1).")
@click.option("--kb", "kb_dirs", multiple=True, type=click.Path(file_okay=False), metavar="DIR", help="Extra knowledge-base directory.")
def kb_show(item_id: str, as_json: bool, kb_dirs: tuple[str, ...]) -> None:
    """Everything the KB knows about a condition or a finding ID.

    A condition: summary, prior, refinement chain, findings with P(f|c) against their leak
    (most telling first), nearest competitors, what it explains, confirm and rule-out tests,
    remedy (safe first), what not to do, references. A finding: how it is observed, cost,
    leak, the conditions that list it, its log signatures.
    """
    from prodx.commands import run_kb_show

    raise SystemExit(run_kb_show(item_id, as_json=as_json, kb_dirs=kb_dirs))


@kb_group.command("docs")
@click.option("-o", "--output", "output", default="", metavar="FILE",
              help="Write the catalogue to FILE (default: print it; with --check: docs/catalogue.md).")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 with a diff if FILE is not what the KB generates.")
@click.option("--kb", "kb_dirs", multiple=True, type=click.Path(file_okay=False), metavar="DIR", help="Extra knowledge-base directory.")
def kb_docs(output: str, check: bool, kb_dirs: tuple[str, ...]) -> None:
    """Generate the Markdown catalogue of every condition, grouped by organ, with an index."""
    from prodx.commands import run_kb_docs

    raise SystemExit(run_kb_docs(output, check=check, kb_dirs=kb_dirs))


@cli.command("logs")
@click.argument("files", nargs=-1, type=str)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (schema prodx.logs/1).")
@click.option(
    "--deadline", "deadline_s", type=Seconds(min=0.1), default=None,
    help="Stop after this many seconds and report what was seen (marked PARTIAL).",
)
def logs(files: tuple[str, ...], as_json: bool, deadline_s: float | None) -> None:
    """Known failure signatures in whole log FILEs (.gz/.bz2/.xz rotations too), with counts."""
    from prodx.report.logs import logs_command

    raise SystemExit(logs_command(files, as_json=as_json, deadline_s=deadline_s))


@cli.group("lab")
def lab_group() -> None:
    """Fault scenarios reproduced for real in a sandbox (root: loop mounts, throwaway users)."""


@lab_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (schema prodx.lab-list/1).")
def lab_list(as_json: bool) -> None:
    """Every scenario: the condition it reproduces, what it injects, whether it can run here."""
    from prodx.lab.commands import list_command

    raise SystemExit(list_command(as_json=as_json))


@lab_group.command("run")
@click.argument("name")
@click.option("--keep", is_flag=True, help="Leave the fault in place; `prodx lab cleanup` removes it.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (schema prodx.lab-run/1).")
@click.option("--no-profile", is_flag=True, help="Diagnose without the scenario's profile, as on a host with no config.")
def lab_run(name: str, keep: bool, as_json: bool, no_profile: bool) -> None:
    """Reproduce scenario NAME, show what a user would see and prodx's diagnosis, tear down."""
    from prodx.lab.commands import run_command

    raise SystemExit(run_command(name, keep=keep, as_json=as_json, use_profile=not no_profile))


@lab_group.command("cleanup")
@click.argument("paths", nargs=-1)
def lab_cleanup(paths: tuple[str, ...]) -> None:
    """Remove kept sandboxes (all, or those at PATHS) and any a killed run left behind."""
    from prodx.lab.commands import cleanup_command

    raise SystemExit(cleanup_command(paths))


def main() -> None:
    """Run the command line; an unexpected error in any command is a one-line message and
    exit 3 (SPEC: prodx itself failed), never a traceback. PRODX_DEBUG=1 shows it."""
    # A file name or log line with bytes that are not UTF-8 must print (as \\xNN) even where
    # the output encoding is strict.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    try:
        cli()
    except Exception as exc:  # noqa: BLE001 - the last line of defence for every command
        if os.environ.get("PRODX_DEBUG"):
            raise
        print(f"prodx: internal error: {type(exc).__name__}: {exc} (PRODX_DEBUG=1 shows where)", file=sys.stderr)
        raise SystemExit(3) from None
