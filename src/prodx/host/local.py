"""The running machine, read through /proc, /sys, /etc, psutil and bounded child processes."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import time

import psutil

from prodx.host.base import (
    CallOutcome,
    CommandResult,
    FsStats,
    Host,
    HostAccessDenied,
    MountHung,
    OpenFile,
    ProcessInfo,
    UserInfo,
    WriteResult,
    WriteStage,
)
from prodx.host.isolated import errno_name, run_isolated

_DELETED_SUFFIX = " (deleted)"
_WRITE_TEST_BYTES = 4096


def _statvfs_line(path: str) -> str:
    try:
        st = os.statvfs(path)
    except OSError as exc:
        return f"err {errno_name(exc.errno or 0)}"
    ro = int(bool(st.f_flag & os.ST_RDONLY))
    return (
        f"ok {st.f_frsize or st.f_bsize} {st.f_blocks} {st.f_bfree} {st.f_bavail} "
        f"{st.f_files} {st.f_ffree} {st.f_favail} {ro}"
    )


def _parse_statvfs_line(path: str, line: str | None) -> FsStats:
    if line is None:
        return FsStats(path, CallOutcome.HUNG)
    kind, *fields = line.split()
    if kind != "ok":
        return FsStats(path, CallOutcome.ERROR, errno_name=fields[0] if fields else "")
    bsize, blocks, bfree, bavail, files, ffree, favail, ro = (int(x) for x in fields)
    return FsStats(
        path, CallOutcome.OK, bsize, blocks, bfree, bavail, files, ffree, favail, bool(ro)
    )


def _write_test_line(directory: str, user: UserInfo) -> str:
    """Runs in the forked child: drop to ``user``, then create/write/fsync/close/unlink."""
    try:
        if os.geteuid() != user.uid:
            os.setgroups(list(user.groups))
            os.setgid(user.gid)
            os.setuid(user.uid)
    except OSError as exc:
        return f"setuid {errno_name(exc.errno or 0)}"
    name = os.path.join(directory, f".prodx-write-test-{os.getpid()}-{time.time_ns()}")
    stage = "open"
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        return f"fail open {errno_name(exc.errno or 0)}"
    failure = ""
    try:
        stage = "write"
        os.write(fd, b"p" * _WRITE_TEST_BYTES)
        # Hazard: with delayed allocation (ext4, xfs) the write is accepted into the page
        # cache and ENOSPC/EDQUOT/EIO only surfaces at fsync or close.
        stage = "fsync"
        os.fsync(fd)
    except OSError as exc:
        failure = f"fail {stage} {errno_name(exc.errno or 0)}"
    try:
        os.close(fd)
    except OSError as exc:
        failure = failure or f"fail close {errno_name(exc.errno or 0)}"
    try:
        os.unlink(name)
    except OSError as exc:
        return failure or f"leftover {errno_name(exc.errno or 0)}"
    return failure or "ok"


#: How long a path's filesystem may take to answer statvfs before it counts as hung.
HUNG_BOUND_S = 1.0


def hung_paths(paths: list[str]) -> set[str]:
    """Those of ``paths`` (files or folders named by a person) whose filesystem does not answer
    statvfs within HUNG_BOUND_S, each asked in a child: a lookup of ours blocked on a dead
    mount would keep prodx from ever exiting. Ask before touching them."""
    stats = LocalHost().statvfs_many(list(paths), HUNG_BOUND_S) if paths else []
    return {p for p, st in zip(paths, stats) if st.outcome is CallOutcome.HUNG}


class LocalHost(Host):
    """The machine prodx runs on."""

    def __init__(self) -> None:
        self.effective_uid = os.geteuid()
        self.is_root = self.effective_uid == 0
        self._avoid: tuple[str, ...] = ()

    def hostname(self) -> str:
        return socket.gethostname()

    def now(self) -> float:
        return time.time()

    def real_path(self, path: str) -> str:
        mount_point = self._avoided(path)
        if mount_point:
            raise MountHung(errno.ETIMEDOUT, f"on {mount_point}, a mount that does not answer statvfs", path)
        return path

    def _avoided(self, path: str) -> str:
        """The avoided mount holding ``path``, or ""."""
        if self._avoid:
            normal = os.path.normpath(path)
            for mount_point in self._avoid:
                if normal == mount_point or normal.startswith(mount_point + "/"):
                    return mount_point
        return ""

    def avoid_mounts(self, mount_points: list[str]) -> None:
        # "/" is never avoided: with the root hung, nothing could be read at all.
        self._avoid = tuple(sorted({os.path.normpath(m) for m in mount_points} - {"/"}))

    def statvfs_many(self, paths: list[str], deadline_s: float) -> list[FsStats]:
        lines = run_isolated([lambda p=p: _statvfs_line(p) for p in paths], deadline_s)
        return [_parse_statvfs_line(p, line) for p, line in zip(paths, lines)]

    def write_test(self, directory: str, user: UserInfo, deadline_s: float) -> WriteResult:
        (line,) = run_isolated([lambda: _write_test_line(directory, user)], deadline_s)
        if line is None:
            return WriteResult(directory, user.uid, CallOutcome.HUNG, detail="no answer")
        kind, *rest = line.split()
        if kind == "ok":
            return WriteResult(directory, user.uid, CallOutcome.OK)
        if kind == "fail":
            return WriteResult(
                directory, user.uid, CallOutcome.OK, WriteStage(rest[0]), rest[1]
            )
        if kind == "leftover":
            return WriteResult(
                directory, user.uid, CallOutcome.OK,
                detail=f"test file could not be removed ({rest[0]})",
            )
        return WriteResult(directory, user.uid, CallOutcome.ERROR, detail=line)

    def processes(self) -> list[ProcessInfo]:
        out = []
        attrs = ["pid", "name", "username", "uids", "exe", "cmdline", "create_time", "status"]
        for proc in psutil.process_iter(attrs, ad_value=None):
            info = proc.info
            uids = info.get("uids")
            out.append(
                ProcessInfo(
                    pid=info["pid"],
                    name=info.get("name") or "",
                    user=info.get("username") or "",
                    uid=uids.real if uids else -1,
                    exe=info.get("exe") or "",
                    cmdline=tuple(info.get("cmdline") or ()),
                    create_time=info.get("create_time") or 0.0,
                    status=info.get("status") or "",
                )
            )
        return out

    def open_files(self, pid: int) -> list[OpenFile]:
        fd_dir = f"/proc/{pid}/fd"
        try:
            names = os.listdir(fd_dir)
        except PermissionError as exc:
            raise HostAccessDenied(f"needs root to read {fd_dir}") from exc
        except FileNotFoundError as exc:
            raise ProcessLookupError(pid) from exc
        out = []
        for name in names:
            link = f"{fd_dir}/{name}"
            try:
                target = os.readlink(link)
            except OSError:
                continue  # closed or the process exited while we read
            deleted = target.endswith(_DELETED_SUFFIX)
            size = allocated = dev = 0
            if deleted:
                target = target[: -len(_DELETED_SUFFIX)]
            if deleted and not self._avoided(target):
                try:
                    st = os.stat(link)  # follows the magic link to the unlinked inode
                    size, allocated, dev = st.st_size, st.st_blocks * 512, st.st_dev
                except OSError:
                    pass
            out.append(OpenFile(pid, int(name), target, deleted, size, allocated, dev))
        return out

    def run(self, argv: list[str], timeout_s: float) -> CommandResult:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            )
        except OSError as exc:
            return CommandResult(tuple(argv), None, error=f"{errno_name(exc.errno or 0)}: {exc.strerror}")
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            # Hazard: a child stuck in the kernel ignores SIGKILL until it wakes; waiting
            # for it (as subprocess.run does) would hang us too. Kill and abandon.
            proc.kill()
            return CommandResult(tuple(argv), None, error=f"timed out after {timeout_s:.1f} s")
        return CommandResult(
            tuple(argv), proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        )
