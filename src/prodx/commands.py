"""What each CLI command does once its options are parsed: load, run, render, exit code.

Kept apart from ``cli.py`` (declarations only) so tests and the lab call the same code.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from prodx.model import LIKELY_PROBABILITY, ExitStatus, ProbeStatus




def _console(stream: Any = None) -> Any:
    from rich.console import Console

    return Console(file=stream or sys.stdout, highlight=False, soft_wrap=False)


def _fail(message: str, status: ExitStatus) -> int:
    print(f"prodx: {message}", file=sys.stderr)
    return int(status)


def run_diagnose(*, as_json: bool, as_markdown: bool = False, **options: Any) -> int:
    """Run ``prodx diagnose``; returns the exit code (SPEC §3)."""
    from prodx.diagnosis import DiagnoseOptions, diagnose
    from prodx.kb.loader import KBError
    from prodx.profile import ProfileError

    opts = DiagnoseOptions.from_cli(options)
    from prodx.capture import CaptureError, replay_diagnosis

    try:
        result = replay_diagnosis(options["from_archive"], opts) if options.get("from_archive") else diagnose(opts)
    except (KBError, ProfileError, CaptureError) as exc:
        return _fail(str(exc), ExitStatus.USAGE_ERROR)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: say so, exit 3
        return _fail(f"internal error: {type(exc).__name__}: {exc}", ExitStatus.INTERNAL_ERROR)
    if opts.as_user and result.target.user is None:
        print(f"prodx: warning: user {opts.as_user!r} is not in /etc/passwd; the write test was not run", file=sys.stderr)
    if as_json:
        from prodx.report.diagnosis_json import render_json

        sys.stdout.write(render_json(result) + "\n")
    elif as_markdown:
        from prodx.report.markdown import render_markdown

        sys.stdout.write(render_markdown(result))
    else:
        from prodx.report.terminal import render_terminal

        render_terminal(result, _console())
    # Not enough to go on: the ranking is the priors', so nothing is likely (exit 0).
    likely = result.differential.enough_to_go_on and result.differential.likely_probability >= LIKELY_PROBABILITY
    status = ExitStatus.CONDITION_LIKELY if likely else ExitStatus.NOTHING_LIKELY
    if any(r.status is ProbeStatus.TIMEOUT for r in result.probe_runs):
        # Hazard: an abandoned probe thread may sit in a /proc read; do not wait for it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(status))
    return int(status)


def run_init(output: str, *, force: bool, host: Any = None) -> int:
    """Run ``prodx init``: discover, write the profile (or print it with ``-``); exit code."""
    from prodx.discovery import discover, profile_text
    from prodx.host.local import LocalHost
    from prodx.profile import ProfileError, parse_profile

    if output != "-" and os.path.lexists(output) and not force:
        return _fail(f"{output} exists; use --force to overwrite it (or -o - to print)", ExitStatus.USAGE_ERROR)
    host = host or LocalHost()
    try:
        found = discover(host)
        text = profile_text(found, host.hostname())
        parse_profile(text, output)
    except ProfileError as exc:
        return _fail(f"internal error: the profile written would not load: {exc}", ExitStatus.INTERNAL_ERROR)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: say so, exit 3
        return _fail(f"internal error: {type(exc).__name__}: {exc}", ExitStatus.INTERNAL_ERROR)
    if output == "-":
        sys.stdout.write(text)
        return 0
    try:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        return _fail(f"cannot write {output}: {exc.strerror or exc}", ExitStatus.USAGE_ERROR)
    kinds = ", ".join(dict.fromkeys(s.kind for s in found.services)) or "no known server"
    print(f"prodx: wrote {output} ({kinds}; user {found.user[0] or 'not found'}, {len(found.writable)} writable, "
          f"{len(found.logs)} logs). Review it, then: prodx diagnose --profile {output}", file=sys.stderr)
    return 0


def run_kb_list(kb_dirs: tuple[str, ...]) -> int:
    from rich.table import Table

    from prodx.kb.loader import KBError, load_kb

    try:
        kb = load_kb(kb_dirs)
    except KBError as exc:
        return _fail(str(exc), ExitStatus.USAGE_ERROR)
    table = Table(show_edge=False, box=None, padding=(0, 1))
    table.add_column("condition", no_wrap=True)
    table.add_column("name", overflow="fold")
    table.add_column("prior", no_wrap=True)
    table.add_column("refines", no_wrap=True)
    table.add_column("findings", no_wrap=True)
    for cid, cond in sorted(kb.conditions.items()):
        table.add_row(cid, cond.name, f"{cond.prior:.3f}", cond.refines or "", str(len(cond.findings)))
    console = _console()
    console.print(table)
    console.print(f"{len(kb.conditions)} conditions, {len(kb.findings)} findings, {len(kb.signatures)} log signatures")
    return 0


def run_kb_lint(kb_dirs: tuple[str, ...]) -> int:
    from prodx.kb.lint import lint
    from prodx.kb.loader import KBError, load_kb
    from prodx.probes import load_all

    try:
        kb = load_kb(kb_dirs)
    except KBError as exc:
        return _fail(str(exc), ExitStatus.USAGE_ERROR)
    issues = lint(kb, {name: cls.findings for name, cls in load_all().items()})
    for issue in issues:
        print(issue)
    print(f"{len(issues)} problem(s) in {len(kb.conditions)} conditions, {len(kb.findings)} findings, {len(kb.signatures)} signatures")
    return int(ExitStatus.USAGE_ERROR) if issues else 0


def run_kb_show(item_id: str, *, as_json: bool, kb_dirs: tuple[str, ...] = ()) -> int:
    """``prodx kb show ID``: a condition or a finding explained; exit 2 naming the nearest ids."""
    import json

    from prodx.kb import docs
    from prodx.kb.loader import KBError, load_kb

    try:
        kb = load_kb(kb_dirs)
    except KBError as exc:
        return _fail(str(exc), ExitStatus.USAGE_ERROR)
    if item_id in kb.conditions:
        view = docs.condition_view(kb, item_id)
        text = docs.render_condition(view)
    elif item_id in kb.findings:
        view = docs.finding_view(kb, item_id)
        text = docs.render_finding(view)
    else:
        near = docs.nearest_ids(kb, item_id)
        hint = f"; nearest: {', '.join(near)}" if near else "; `prodx kb list` shows the conditions"
        return _fail(f"no condition or finding {item_id!r}{hint}", ExitStatus.USAGE_ERROR)
    if as_json:
        sys.stdout.write(json.dumps({"schema": "prodx.kb-show/1", **view}, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(text)
    return 0


def run_kb_docs(output: str, *, check: bool, kb_dirs: tuple[str, ...] = ()) -> int:
    """``prodx kb docs``: print or write the catalogue; with ``check`` exit 1 when FILE is stale."""
    from prodx.kb import docs
    from prodx.kb.loader import KBError, load_kb

    try:
        text = docs.catalogue(load_kb(kb_dirs))
    except KBError as exc:
        return _fail(str(exc), ExitStatus.USAGE_ERROR)
    if check:
        path = output or "docs/catalogue.md"
        try:
            with open(path, encoding="utf-8") as fh:
                current = fh.read()
        except OSError as exc:
            return _fail(f"cannot read {path}: {exc.strerror or exc} (run from the repository root, or pass -o FILE)",
                         ExitStatus.USAGE_ERROR)
        message = docs.stale_message(text, current, path)
        if message:
            print(message, file=sys.stderr)
            return 1
        print(f"{path} is up to date")
        return 0
    if not output or output == "-":
        sys.stdout.write(text)
        return 0
    try:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        return _fail(f"cannot write {output}: {exc.strerror or exc}", ExitStatus.USAGE_ERROR)
    print(f"prodx: wrote {output} ({text.count(chr(10) + '### ')} conditions)", file=sys.stderr)
    return 0


def run_explain(item_id: str, *, as_json: bool, kb_dirs: tuple[str, ...] = ()) -> int:
    """``prodx explain ID``: a condition or finding for people; exit 2 naming the nearest ids."""
    import json

    from prodx import explain
    from prodx.kb.loader import KBError, load_kb

    try:
        kb = load_kb(kb_dirs)
    except KBError as exc:
        return _fail(str(exc), ExitStatus.USAGE_ERROR)
    try:
        view = explain.explain_view(kb, item_id)
    except KeyError:
        near = explain.nearest_ids(kb, item_id)
        hint = f"; nearest: {', '.join(near)}" if near else "; `prodx kb list` shows the conditions"
        return _fail(f"no condition or finding {item_id!r}{hint}", ExitStatus.USAGE_ERROR)
    if as_json:
        sys.stdout.write(json.dumps({"schema": explain.SCHEMA, **view}, indent=2, sort_keys=True) + "\n")
    elif sys.stdout.isatty():
        explain.print_rich(view, _console())
    else:
        sys.stdout.write(explain.render_text(view))
    return 0
