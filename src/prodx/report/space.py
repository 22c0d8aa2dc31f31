"""Renders a SpaceReport for a person (rich, like ncdu or dust) or as JSON (prodx.space/1).

Sample terminal output::

    /var on / · /dev/vda ext4
    size 252.0 GiB, used 22.0 GiB (22%), avail 80.0 GiB · inodes used 404,412 of 16,777,216 (2%)
    scanned 5.3 GiB in 137,719 inodes in 0.28 s (c walker)

    Largest directories
      2.0 GiB  38%  ███████▋            /var/lib/postgresql/16/main/base
    ...
"""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import datetime, timezone
from typing import IO, Any

from prodx.model import ExitStatus
from prodx.scanners.space import ScanMode, SpaceReport, scan

BAR_WIDTH = 12
_PROGRESS_AFTER_S = 0.5


def space_command(
    path: str,
    *,
    as_json: bool,
    top_n: int,
    deadline_s: float,
    mode: ScanMode,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """Runs `prodx space`: scans, renders, and returns the exit status.

    Args:
        path: the directory to scan from.
        as_json: print one JSON document instead of tables.
        top_n: rows per list.
        deadline_s: scan budget.
        mode: what to measure.
        out: where the report goes (stdout by default).
        err: where errors and progress go (stderr by default).

    Returns:
        0 after a report (partial or not), 2 when PATH is not a usable directory.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    from prodx.host.local import hung_paths

    if hung_paths([path]):
        print(f"prodx space: {path} is on a mount that does not answer (statvfs hung): a dead NFS server or "
              "FUSE daemon; find it with `grep -E ' (nfs|fuse)' /proc/mounts`", file=err)
        return int(ExitStatus.USAGE_ERROR)
    try:
        report = scan_with_progress(path, deadline_s=deadline_s, mode=mode, top_n=top_n, err=err)
    except FileNotFoundError:
        print(f"prodx space: no such directory: {path}", file=err)
        return int(ExitStatus.USAGE_ERROR)
    except NotADirectoryError:
        print(f"prodx space: not a directory: {path}", file=err)
        return int(ExitStatus.USAGE_ERROR)
    except PermissionError:
        print(f"prodx space: permission denied: {path}", file=err)
        return int(ExitStatus.USAGE_ERROR)
    except OSError as exc:  # a symlink loop, a name too long: the path cannot be opened
        print(f"prodx space: cannot open {path}: {exc.strerror or exc}", file=err)
        return int(ExitStatus.USAGE_ERROR)
    if as_json:
        out.write(render_json(report) + "\n")
    else:
        render_text(report, out)
    return int(ExitStatus.NOTHING_LIKELY)


def scan_with_progress(path: str, *, deadline_s: float, mode: ScanMode, top_n: int, err: IO[str]) -> SpaceReport:
    """scan(), with a spinner on ``err`` when it is a terminal and the scan takes a while.

    The C walker releases the GIL, so the spinner thread costs the walk nothing.
    """
    if not _isatty(err):
        return scan(path, deadline_s=deadline_s, mode=mode, top_n=top_n)
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["report"] = scan(path, deadline_s=deadline_s, mode=mode, top_n=top_n)
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    worker = threading.Thread(target=work, name="prodx-space-scan", daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(_PROGRESS_AFTER_S)
    if worker.is_alive():
        from rich.console import Console

        console = Console(file=err, stderr=True)
        with console.status("") as status:
            while worker.is_alive():
                elapsed_s = time.monotonic() - started
                status.update(f"scanning {path} … {elapsed_s:.0f} s of at most {deadline_s:.0f} s")
                worker.join(0.2)
    if "error" in result:
        raise result["error"]
    return result["report"]


def render_json(report: SpaceReport) -> str:
    """One JSON document, schema ``prodx.space/1``."""
    return json.dumps(report.to_json(), indent=2, ensure_ascii=False)


def render_text(report: SpaceReport, out: IO[str]) -> None:
    """Header, PARTIAL line, largest directories, largest files, most inodes, unreadable."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=out, highlight=False, soft_wrap=False)
    for line in _header(report):
        console.print(Text(line, style="bold"))
    scanned = f"scanned {human_bytes(report.total_bytes)} in " if report.mode is not ScanMode.INODES else "scanned "
    console.print(
        f"{scanned}{report.total_inodes:,} inodes in {report.elapsed_s:.2f} s ({report.backend} walker)",
        style="dim",
    )
    if report.partial:
        console.print(Text(f"PARTIAL: {report.partial_reason}; totals are lower bounds", style="bold red"))

    if report.dirs_by_bytes:
        table = _table(Table, "Largest directories", ["size", "share", "", "directory"])
        for d in report.dirs_by_bytes:
            share = _share(d.bytes, report.total_bytes)
            table.add_row(human_bytes(d.bytes), f"{share:.0%}", _bar(share), d.path)
        console.print()
        console.print(table)
    if report.files_by_bytes:
        table = _table(Table, "Largest files", ["size", "modified", "file"])
        for f in report.files_by_bytes:
            modified = datetime.fromtimestamp(f.mtime, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")
            table.add_row(human_bytes(f.bytes), modified, f.path)
        console.print()
        console.print(table)
    if report.dirs_by_inodes:
        table = _table(Table, "Most inodes (many small files)", ["inodes", "share", "", "directory"])
        for d in report.dirs_by_inodes:
            share = _share(d.inodes, report.total_inodes)
            table.add_row(f"{d.inodes:,}", f"{share:.0%}", _bar(share), d.path)
        console.print()
        console.print(table)
    if report.unreadable:
        by_errno = ", ".join(f"{name} {count:,}" for name, count in report.unreadable_errors.items())
        console.print()
        console.print(f"unreadable: {report.unreadable:,} ({by_errno}), e.g.", style="yellow")
        for sample in report.unreadable_samples:
            console.print(f"  {sample}", style="yellow", markup=False)


def human_bytes(n: int) -> str:
    """Binary units, one decimal: ``human_bytes(1536) == '1.5 KiB'``.

    >>> human_bytes(0), human_bytes(1536), human_bytes(5 * 2**30)
    ('0 B', '1.5 KiB', '5.0 GiB')
    """
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def _header(report: SpaceReport) -> list[str]:
    lines = [f"{report.root} on {report.mount_point} · {report.device} {report.fstype}".rstrip()]
    fs = report.fs
    if fs is not None:
        used_pct = _share(fs.used_bytes, fs.used_bytes + fs.avail_bytes)  # as df computes Use%
        inodes_pct = _share(fs.inodes_used, fs.inodes_total)
        lines.append(
            f"size {human_bytes(fs.size_bytes)}, used {human_bytes(fs.used_bytes)} ({used_pct:.0%}), "
            f"avail {human_bytes(fs.avail_bytes)} · inodes used {fs.inodes_used:,} of {fs.inodes_total:,} "
            f"({inodes_pct:.0%})"
        )
    return lines


def _table(table_cls: Any, title: str, columns: list[str]) -> Any:
    table = table_cls(title=title, title_justify="left", title_style="bold", box=None, pad_edge=False)
    for i, name in enumerate(columns):
        last = i == len(columns) - 1
        table.add_column(name, justify="left" if last or name == "" else "right", no_wrap=not last, overflow="fold")
    return table


def _share(part: int, whole: int) -> float:
    return part / whole if whole > 0 else 0.0


def _bar(share: float) -> str:
    eighths = round(max(0.0, min(1.0, share)) * BAR_WIDTH * 8)
    full, rest = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[rest] if rest else ""
    return ("█" * full + partial).ljust(BAR_WIDTH)


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
