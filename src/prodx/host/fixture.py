"""A host replayed from a captured tree: files at their real paths, everything else in JSON.

Layout of a fixture directory::

    root/                 files at their real paths (root/proc/self/mountinfo, root/etc/passwd,
                          root/var/log/app.log ...)
    host.json             {"hostname", "now", "is_root",
                           "statvfs": [FsStats...], "write_tests": [WriteResult...],
                           "processes": [ProcessInfo...], "open_files": {"PID": [OpenFile...]},
                           "commands": [{"argv": [...], "returncode", "stdout", "stderr"}]}
    expected.yaml         what the tests expect prodx to conclude (read by tests only)

A path, syscall or command the capture does not hold behaves as on a host where it is
missing (FileNotFoundError, an ENOENT statvfs, a command that could not start).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from prodx.host.base import (
    CallOutcome,
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
    """Serves a captured host from ``directory``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        meta_path = self.directory / "host.json"
        self._meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        self.is_root = bool(self._meta.get("is_root", True))
        self.effective_uid = int(self._meta.get("effective_uid", 0 if self.is_root else 1000))

    def hostname(self) -> str:
        return str(self._meta.get("hostname", self.directory.name))

    def now(self) -> float:
        return float(self._meta.get("now", 0.0))

    def real_path(self, path: str) -> str:
        return str(self.directory / "root" / path.lstrip("/"))

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
        table = self._meta.get("open_files", {})
        if str(pid) not in table:
            if any(p["pid"] == pid for p in self._meta.get("processes", [])):
                raise HostAccessDenied(f"the capture could not read /proc/{pid}/fd")
            raise ProcessLookupError(pid)
        return [OpenFile.from_json(f) for f in table[str(pid)]]

    def run(self, argv: list[str], timeout_s: float) -> CommandResult:
        for cmd in self._meta.get("commands", []):
            if cmd["argv"] == list(argv):
                return CommandResult(
                    tuple(argv), cmd.get("returncode"), cmd.get("stdout", ""), cmd.get("stderr", "")
                )
        return CommandResult(tuple(argv), None, error="ENOENT: not in the capture")
