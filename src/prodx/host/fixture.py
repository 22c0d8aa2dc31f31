"""A host replayed from a captured tree: files at their real paths, everything else in JSON.

Layout of a fixture directory::

    root/                 files at their real paths (root/proc/self/mountinfo, root/etc/passwd,
                          root/var/log/app.log ...)
    host.json             {"hostname", "now", "is_root", "effective_uid",
                           "statvfs": [FsStats...], "write_tests": [WriteResult...],
                           "processes": [ProcessInfo...], "open_files": {"PID": [OpenFile...]},
                           "commands": [{"argv": [...], "returncode", "stdout", "stderr"}],
                           "stats"/"lstats": {path: {mode, uid, gid, size, mtime, ...}},
                           "listdirs": {path: [names]}, "globs": {pattern: [paths]},
                           "space": {path: prodx.space/1 document}, "missing": [paths],
                           "observations": {kind: {json key: result}},
                           "reads": {path: [{"end": "head"|"tail", "max": bytes asked, "data": latin-1 text}, ...]},
                           "readlinks": {path: target}}

Files in ``reads`` replay what each read returned, in order (the last one repeats), so a
file sampled twice for a rate gives both samples.

Recorded stats, listings and globs win over the files under ``root/`` (git does not keep
owners, modes or mtimes); a path with neither behaves as missing.
    expected.yaml         what the tests expect prodx to conclude (read by tests only)

A path, syscall or command the capture does not hold behaves as on a host where it is
missing (FileNotFoundError, an ENOENT statvfs, a command that could not start).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prodx.host.base import (
    CallOutcome,
    NotCaptured,
    CommandResult,
    FsStats,
    Host,
    HostAccessDenied,
    OpenFile,
    ProcessInfo,
    UserInfo,
    WriteResult,
)


class FixtureHost(Host):
    """Serves a captured host from ``directory``: its ``host.json`` (what prodx recorded) and
    the files under ``root`` (``directory/root`` unless given: another tool's tree has its
    ``proc/``, ``etc/``, ``var/`` at the top). ``now`` is the capture's time when host.json does
    not record one."""

    def __init__(self, directory: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None,
                 now: float | None = None) -> None:
        self.directory = Path(directory)
        self.root = Path(root) if root is not None else self.directory / "root"
        meta_path = self.directory / "host.json"
        self._meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        if now is not None:
            self._meta.setdefault("now", now)
        self.is_root = bool(self._meta.get("is_root", True))
        self.effective_uid = int(self._meta.get("effective_uid", 0 if self.is_root else 1000))
        self._read_index: dict[str, int] = {}
        self._read_lock = threading.Lock()

    def hostname(self) -> str:
        return str(self._meta.get("hostname", self.directory.name))

    def now(self) -> float:
        return float(self._meta.get("now", 0.0))

    def real_path(self, path: str) -> str:
        return str(self.root / path.lstrip("/"))

    def _next_read(self, path: str, end: str, max_bytes: int) -> bytes | None:
        """The next recorded read of ``path`` made the same way (head or tail, same size);
        probes run concurrently, so reads of other sizes are not theirs to replay."""
        reads = self._meta.get("reads", {}).get(path)
        if not reads:
            return None
        same = [r for r in reads if r.get("end") == end and r.get("max") == max_bytes] or reads
        key = f"{path}\0{end}\0{max_bytes}"
        with self._read_lock:
            index = self._read_index.get(key, 0)
            self._read_index[key] = index + 1
        return same[min(index, len(same) - 1)]["data"].encode("latin-1")

    def read_bytes(self, path: str, max_bytes: int = 1 << 20) -> bytes:
        data = self._next_read(path, "head", max_bytes)
        return data[:max_bytes] if data is not None else super().read_bytes(path, max_bytes)

    def read_tail(self, path: str, max_bytes: int) -> bytes:
        data = self._next_read(path, "tail", max_bytes)
        return data[-max_bytes:] if data is not None else super().read_tail(path, max_bytes)

    def _recorded_stat(self, kind: str, path: str) -> os.stat_result | None:
        data = self._meta.get(kind, {}).get(path) or self._meta.get("stats", {}).get(path) or self._meta.get("lstats", {}).get(path)
        if data is None:
            return None
        return os.stat_result(
            (data["mode"], data.get("ino", 0), data.get("dev", 0), data.get("nlink", 1), data["uid"], data["gid"],
             data["size"], int(data["mtime"]), int(data["mtime"]), int(data["mtime"]))
        )

    def stat(self, path: str) -> os.stat_result:
        return self._recorded_stat("stats", path) or os.stat(self.real_path(path))

    def lstat(self, path: str) -> os.stat_result:
        return self._recorded_stat("lstats", path) or os.lstat(self.real_path(path))

    def exists(self, path: str) -> bool:
        if path in self._meta.get("missing", []):
            return False
        return self._recorded_stat("lstats", path) is not None or os.path.lexists(self.real_path(path))

    def listdir(self, path: str) -> list[str]:
        recorded = self._meta.get("listdirs", {}).get(path)
        return list(recorded) if recorded is not None else sorted(os.listdir(self.real_path(path)))

    def readlink(self, path: str) -> str:
        recorded = self._meta.get("readlinks", {}).get(path)
        if recorded is not None:
            return recorded
        if path in self._meta.get("missing", []):
            raise FileNotFoundError(path)
        return super().readlink(path)

    def glob(self, pattern: str) -> list[str]:
        recorded = self._meta.get("globs", {}).get(pattern)
        return list(recorded) if recorded is not None else super().glob(pattern)

    def observe(self, kind: str, key: Any, compute: Callable[[], Any]) -> Any:
        """The recorded observation. A plain read of a file (``proc.read``) that was not
        recorded is read from ``root/`` when the file is there, or when the tree records no
        observations at all (a tree captured by another tool has files, not observations: a
        file it lacks is missing, not uncaptured). Raises NotCaptured otherwise."""
        observations = self._meta.get("observations")
        table = (observations or {}).get(kind, {})
        wanted = json.dumps(key, sort_keys=True)
        if wanted in table:
            return table[wanted]
        if kind == "proc.read" and isinstance(key, str) and (observations is None or os.path.isfile(self.real_path(key))):
            return compute()
        raise NotCaptured(f"the capture holds no {kind} observation for {key}")

    def scan_space(self, path: str, deadline_s: float, top_n: int = 10) -> dict[str, Any]:
        recorded = self._meta.get("space", {}).get(path)
        return recorded if recorded is not None else super().scan_space(path, deadline_s, top_n)

    def statvfs_many(self, paths: list[str], deadline_s: float) -> list[FsStats]:
        known = {s["path"]: FsStats.from_json(s) for s in self._meta.get("statvfs", [])}
        return [known.get(p, FsStats(p, CallOutcome.ERROR, errno_name="ENOENT")) for p in paths]

    def write_test(self, directory: str, user: UserInfo, deadline_s: float) -> WriteResult:
        for data in self._meta.get("write_tests", []):
            if data["directory"] == directory and data["uid"] == user.uid:
                return WriteResult.from_json(data)
        return WriteResult(directory, user.uid, CallOutcome.ERROR, detail="not in the capture")

    def processes(self) -> list[ProcessInfo]:
        return [ProcessInfo.from_json(p) for p in self._meta.get("processes", [])]

    def open_files(self, pid: int) -> list[OpenFile]:
        recorded = self._meta.get("open_files", {}).get(str(pid))
        if recorded == "denied":
            raise HostAccessDenied(f"the capture could not read /proc/{pid}/fd")
        if recorded is None or recorded == "vanished":
            raise ProcessLookupError(pid)  # exited before (or while) the capture looked
        return [OpenFile.from_json(f) for f in recorded]

    def run(self, argv: list[str], timeout_s: float) -> CommandResult:
        for cmd in self._meta.get("commands", []):
            if cmd["argv"] == list(argv):
                return CommandResult(
                    tuple(argv), cmd.get("returncode"), cmd.get("stdout", ""), cmd.get("stderr", "")
                )
        return CommandResult(tuple(argv), None, error="ENOENT: not in the capture")
