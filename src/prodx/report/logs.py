"""`prodx logs`: scan log files for known failure signatures and render the result.

Terminal output (rich, imported lazily) lists per file its size, lines, truncated-tail flag
and the signatures found sorted by count, each with first/last time and a redacted example.
``--json`` prints one document, schema ``prodx.logs/1``::

    {"schema": "prodx.logs/1", "started_at": ISO-8601, "duration_s": float,
     "backend": "hyperscan|re", "signatures": int,
     "files": [FileScan.to_json(), ...]}
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import IO, Any

from prodx.model import ExitStatus
from prodx.scanners.logscan import FileScan, Matcher, engine_name, load_signatures, scan_paths

SCHEMA = "prodx.logs/1"
# Files smaller than this scan in well under a second: no progress bar.
_PROGRESS_MIN_BYTES = 64 << 20


def logs_command(paths: Sequence[str], *, as_json: bool, deadline_s: float | None,
                 out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """Run `prodx logs`: scan ``paths`` whole and print the report.

    Args:
        paths: log files (plain or compressed rotations).
        as_json: print the ``prodx.logs/1`` document instead of text.
        deadline_s: total time budget; files not finished in time are marked partial.
        out: where the report goes (stdout by default).
        err: where usage errors and progress go (stderr by default).

    Returns:
        The exit status: 0, or 2 when no path is given or none exists.
    """
    out, err = out or sys.stdout, err or sys.stderr
    if not paths:
        print("prodx logs: give at least one log FILE", file=err)
        return ExitStatus.USAGE_ERROR
    from prodx.host.local import hung_paths

    # Before anything touches them: a lookup on a dead mount blocks in the kernel for good.
    hung = hung_paths(list(paths))
    for path in sorted(hung):
        print(f"prodx logs: {path} is on a mount that does not answer (statvfs hung): not read", file=err)
    paths = [p for p in paths if p not in hung]
    if not any(os.path.lexists(p) for p in paths):
        if paths:
            print(f"prodx logs: none of the files exist: {', '.join(paths)}", file=err)
        return ExitStatus.USAGE_ERROR
    started = datetime.now(timezone.utc)
    t0 = time.monotonic()
    matcher = Matcher(load_signatures())
    scans = _scan_with_progress(paths, matcher, deadline_s, err)
    duration_s = time.monotonic() - t0
    if as_json:
        out.write(render_json(scans, matcher, started, duration_s) + "\n")
    else:
        render_text(scans, out)
        print(f"{len(matcher.signatures)} signatures, log engine: {engine_name()}, {duration_s:.2f} s", file=out)
    return ExitStatus.NOTHING_LIKELY


def _scan_with_progress(paths: Sequence[str], matcher: Matcher, deadline_s: float | None,
                        err: IO[str]) -> list[FileScan]:
    if not _isatty(err) or not any(_size(p) >= _PROGRESS_MIN_BYTES for p in paths):
        return scan_paths(paths, matcher, deadline_s=deadline_s)
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.console import Console

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(file=err), transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(path: str, done: int, size: int) -> None:
            if path not in tasks:
                tasks[path] = bar.add_task(os.path.basename(path), total=size or None)
            bar.update(tasks[path], completed=done)

        return scan_paths(paths, matcher, deadline_s=deadline_s, progress=progress)


def render_json(scans: Sequence[FileScan], matcher: Matcher, started: datetime,
                duration_s: float) -> str:
    """The ``prodx.logs/1`` document (one line of JSON)."""
    doc = {"schema": SCHEMA, "started_at": started.isoformat(timespec="seconds"),
           "duration_s": round(duration_s, 3), "backend": matcher.backend.value,
           "signatures": len(matcher.signatures), "files": [s.to_json() for s in scans]}
    return json.dumps(doc, ensure_ascii=False)


def render_text(scans: Sequence[FileScan], out: IO[str]) -> None:
    """Per file: one header line, then its signatures by count, each with an example line."""
    from rich.console import Console
    from prodx.report.safe import escape

    console = Console(file=out, highlight=False, soft_wrap=True)
    for fs in scans:
        console.print(_header(fs, escape))
        if fs.error and not fs.bytes_read:
            continue
        if fs.truncated_tail:
            console.print(f"  last line cut off mid-line: [yellow]{escape(fs.last_line)}[/]")
        if not fs.hits:
            if not fs.binary:
                console.print("  no known failure signature")
            continue
        width = len(str(max(h.count for h in fs.hits.values())))
        for h in fs.sorted_hits():
            lines = (f"line {h.first_line_no}" if h.first_line_no == h.last_line_no
                     else f"lines {h.first_line_no}-{h.last_line_no}")
            when = _short_ts(h.first_ts)
            if h.last_ts != h.first_ts:
                when += f" .. {_short_ts(h.last_ts)}"
            console.print(f"  {h.count:>{width}}  [bold]{h.signature}[/] ({h.finding})  "
                          f"{when}  {lines}")
            console.print(f"  {'':>{width}}    [dim]{escape(h.example)}[/]")


def _header(fs: FileScan, escape: Any) -> str:
    name = f"[bold]{escape(fs.path)}[/]"
    if fs.error and not fs.bytes_read:
        return f"{name}: [red]cannot read: {escape(fs.error)}[/]"
    parts = [human_bytes(fs.size_bytes)]
    if fs.compression.value != "none":
        parts.append(f"{fs.compression.value}, {human_bytes(fs.bytes_read)} uncompressed")
    parts.append(f"{fs.lines} lines")
    if fs.truncated_tail:
        parts.append("[yellow]TRUNCATED TAIL[/]")
    if fs.long_lines:
        parts.append(f"{fs.long_lines} lines over 64 KiB")
    if fs.binary:
        parts.append("[yellow]binary, not scanned[/]")
    if fs.partial:
        parts.append(f"[yellow]PARTIAL: {escape(fs.partial_reason)}[/]")
    if fs.error:
        parts.append(f"[red]stopped: {escape(fs.error)}[/]")
    return f"{name}: " + ", ".join(parts)


def _short_ts(ts: str | None) -> str:
    return "-" if ts is None else ts.replace("T", " ")[:19]


def human_bytes(n: int) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
