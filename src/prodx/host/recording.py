"""A host that records everything probes ask of another host, to replay it as a fixture.

Wraps a live host; after a run, ``save(directory)`` writes the fixture layout that
``FixtureHost`` reads (see ``prodx.host.fixture``): the files read (tails only, at most
``FILE_CAP_BYTES`` each) under ``root/``, and stats, listings, statvfs, write tests,
processes, open files, space scans and command outputs in ``host.json``. Used to capture
fixture trees from real machines and lab scenarios.
"""

from __future__ import annotations

import copy
import json
import os
import stat as statmod
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prodx.host.base import (
    CommandResult,
    FsStats,
    Host,
    HostAccessDenied,
    OpenFile,
    ProcessInfo,
    UserInfo,
    WriteResult,
)
from prodx.host.zone import this_zone

FILE_CAP_BYTES = 1 << 20


def _stat_json(st: os.stat_result) -> dict[str, Any]:
    return {
        "mode": st.st_mode,
        "uid": st.st_uid,
        "gid": st.st_gid,
        "size": st.st_size,
        "mtime": st.st_mtime,
        "blocks": st.st_blocks,
        "dev": st.st_dev,
        "ino": st.st_ino,
        "nlink": st.st_nlink,
    }


def _tail_of(real: str) -> bytes | None:
    """The last FILE_CAP_BYTES of a regular file; None for anything else or on error."""
    try:
        if not statmod.S_ISREG(os.stat(real).st_mode):
            return None
        with open(real, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - FILE_CAP_BYTES))
            return f.read(FILE_CAP_BYTES)
    except OSError:
        return None


class RecordingHost(Host):
    """Delegates to ``inner`` and remembers every answer."""

    def __init__(self, inner: Host) -> None:
        self.inner = inner
        self.is_root = inner.is_root
        self.effective_uid = inner.effective_uid
        self._lock = threading.Lock()
        self._files: set[str] = set()
        self._opened: dict[str, bytes] = {}
        self._meta: dict[str, Any] = {
            "stats": {}, "lstats": {}, "listdirs": {}, "globs": {}, "statvfs": [], "write_tests": [],
            "processes": [], "open_files": {}, "commands": [], "space": {}, "missing": [],
            "observations": {}, "reads": {}, "readlinks": {},
        }

    def _note(self, key: str, value: Any, sub: str | None = None) -> None:
        with self._lock:
            if sub is None:
                self._meta[key].append(value)
            else:
                self._meta[key][sub] = value

    def hostname(self) -> str:
        self._meta["hostname"] = self.inner.hostname()
        return self._meta["hostname"]

    def now(self) -> float:
        self._meta["now"] = self.inner.now()
        return self._meta["now"]

    def avoid_mounts(self, mount_points: list[str]) -> None:
        self.inner.avoid_mounts(mount_points)

    def real_path(self, path: str) -> str:
        real = self.inner.real_path(path)
        # Keep the file as the probe sees it now: a log still growing would have another
        # tail by the time the capture is saved.
        data = _tail_of(real)
        with self._lock:
            self._files.add(path)
            if data is not None and path not in self._opened:
                self._opened[path] = data
        return real

    def stat(self, path: str) -> os.stat_result:
        try:
            st = self.inner.stat(path)
        except OSError:
            self._note("missing", path)
            raise
        self._note("stats", _stat_json(st), path)
        return st

    def lstat(self, path: str) -> os.stat_result:
        try:
            st = self.inner.lstat(path)
        except OSError:
            self._note("missing", path)
            raise
        self._note("lstats", _stat_json(st), path)
        return st

    def exists(self, path: str) -> bool:
        found = self.inner.exists(path)
        if found:
            try:
                self._note("lstats", _stat_json(self.inner.lstat(path)), path)
            except OSError:
                pass
        else:
            self._note("missing", path)
        return found

    def listdir(self, path: str) -> list[str]:
        names = self.inner.listdir(path)
        self._note("listdirs", names, path)
        return names

    def readlink(self, path: str) -> str:
        try:
            target = self.inner.readlink(path)
        except OSError:
            self._note("missing", path)
            raise
        self._note("readlinks", target, path)
        return target

    def glob(self, pattern: str) -> list[str]:
        paths = self.inner.glob(pattern)
        self._note("globs", paths, pattern)
        return paths

    def read_bytes(self, path: str, max_bytes: int = 1 << 20) -> bytes:
        data = self.inner.read_bytes(path, max_bytes)
        self._note_read(path, data, "head", max_bytes)
        return data

    def read_tail(self, path: str, max_bytes: int) -> bytes:
        data = self.inner.read_tail(path, max_bytes)
        self._note_read(path, data, "tail", max_bytes)
        return data

    def _note_read(self, path: str, data: bytes, end: str, max_bytes: int) -> None:
        """Keep what was read, in order: /proc/stat read twice for a rate must replay as two
        different samples, not as the file re-read when the capture is saved."""
        with self._lock:
            self._meta["reads"].setdefault(path, []).append({"end": end, "max": max_bytes, "data": data.decode("latin-1")})

    def statvfs_many(self, paths: list[str], deadline_s: float) -> list[FsStats]:
        out = self.inner.statvfs_many(paths, deadline_s)
        for s in out:
            self._note("statvfs", s.to_json())
        return out

    def write_test(self, directory: str, user: UserInfo, deadline_s: float) -> WriteResult:
        result = self.inner.write_test(directory, user, deadline_s)
        self._note("write_tests", result.to_json())
        return result

    def processes(self) -> list[ProcessInfo]:
        from prodx.redact import redact

        out = self.inner.processes()
        # Command lines can carry passwords and tokens: they leave the host redacted.
        self._meta["processes"] = [p.to_json() | {"cmdline": [redact(a) for a in p.cmdline]} for p in out]
        return out

    def open_files(self, pid: int) -> list[OpenFile]:
        try:
            out = self.inner.open_files(pid)
        except HostAccessDenied:
            self._note("open_files", "denied", str(pid))
            raise
        except ProcessLookupError:
            self._note("open_files", "vanished", str(pid))
            raise
        self._note("open_files", [f.to_json() for f in out], str(pid))
        return out

    def observe(self, kind: str, key: Any, compute: Callable[[], Any]) -> Any:
        result = self.inner.observe(kind, key, compute)
        with self._lock:
            self._meta["observations"].setdefault(kind, {})[json.dumps(key, sort_keys=True)] = result
        return result

    def scan_space(self, path: str, deadline_s: float, top_n: int = 10) -> dict[str, Any]:
        report = self.inner.scan_space(path, deadline_s, top_n)
        self._note("space", report, path)
        return report

    def run(self, argv: list[str], timeout_s: float) -> CommandResult:
        result = self.inner.run(argv, timeout_s)
        self._note(
            "commands",
            {"argv": list(argv), "returncode": result.returncode, "stdout": result.stdout, "stderr": result.stderr},
        )
        return result

    def snapshot(self) -> dict[str, Any]:
        """What the run read so far, as the fixture's ``host.json`` data: a copy, because probe
        threads abandoned at their deadline may still be recording while it is written."""
        hostname = self._meta.get("hostname") or self.inner.hostname()
        now = self._meta.get("now") or self.inner.now()
        with self._lock:
            self._meta.setdefault("hostname", hostname)
            self._meta.setdefault("now", now)
            self._meta["is_root"] = self.is_root
            self._meta["effective_uid"] = self.effective_uid
            self._meta.setdefault("timezone", this_zone())
            return copy.deepcopy(self._meta)

    def opened_files(self) -> Iterator[tuple[str, bytes]]:
        """(path, last FILE_CAP_BYTES as first opened) of each regular file a probe opened by
        path (``real_path``: the log and space scanners). Such a file may also have been read
        through the host (its ``reads`` replay those calls); the scanners need the file."""
        with self._lock:
            opened = dict(self._opened)
        yield from sorted(opened.items())

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write the fixture: ``host.json`` and the tails of the files opened under ``root/``."""
        out = Path(directory)
        (out / "root").mkdir(parents=True, exist_ok=True)
        for path, data in self.opened_files():
            target = out / "root" / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        (out / "host.json").write_text(json.dumps(self.snapshot(), indent=1, sort_keys=True, default=str))
