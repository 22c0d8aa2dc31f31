"""The host-access layer: the only way probes touch a machine.

A probe asks the host for files, directory listings, filesystem statistics, processes and
command output. ``LocalHost`` serves them from the running machine, ``FixtureHost`` from a
captured tree, so the same probe code runs in unit tests and in the lab.
"""

from __future__ import annotations

import abc
import enum
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class CallOutcome(str, enum.Enum):
    """How a call that may block in the kernel ended."""

    OK = "ok"
    ERROR = "error"
    HUNG = "hung"


@dataclass(frozen=True)
class FsStats:
    """``statvfs`` of one path, or why it could not be had.

    ``errno_name`` is set when ``outcome`` is ERROR; HUNG means the call did not return
    within its bound (a dead NFS server, a stuck FUSE daemon).
    """

    path: str
    outcome: CallOutcome
    block_size: int = 0
    blocks_total: int = 0
    blocks_free: int = 0
    blocks_avail: int = 0
    inodes_total: int = 0
    inodes_free: int = 0
    inodes_avail: int = 0
    readonly: bool = False
    errno_name: str = ""

    @property
    def size_bytes(self) -> int:
        return self.blocks_total * self.block_size

    @property
    def free_bytes(self) -> int:
        """Free for root, reserve included."""
        return self.blocks_free * self.block_size

    @property
    def avail_bytes(self) -> int:
        """Free for an unprivileged user."""
        return self.blocks_avail * self.block_size

    @property
    def reserved_bytes(self) -> int:
        return max(0, self.blocks_free - self.blocks_avail) * self.block_size

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "outcome"} | {
            "outcome": self.outcome.value
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FsStats:
        return cls(**(data | {"outcome": CallOutcome(data["outcome"])}))


class WriteStage(str, enum.Enum):
    """Where the write test failed: open (create), write, fsync, close, or not at all."""

    NONE = "none"
    OPEN = "open"
    WRITE = "write"
    FSYNC = "fsync"
    CLOSE = "close"


@dataclass(frozen=True)
class WriteResult:
    """The write test's outcome in one directory, as one user.

    ``stage`` is NONE when the file was created, written, fsynced, closed and removed.
    """

    directory: str
    uid: int
    outcome: CallOutcome
    stage: WriteStage = WriteStage.NONE
    errno_name: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is CallOutcome.OK and self.stage is WriteStage.NONE

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "uid": self.uid,
            "outcome": self.outcome.value,
            "stage": self.stage.value,
            "errno_name": self.errno_name,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WriteResult:
        return cls(
            directory=data["directory"],
            uid=data["uid"],
            outcome=CallOutcome(data["outcome"]),
            stage=WriteStage(data.get("stage", "none")),
            errno_name=data.get("errno_name", ""),
            detail=data.get("detail", ""),
        )


@dataclass(frozen=True)
class ProcessInfo:
    """One process as probes see it. Fields a host cannot read are empty, not guessed."""

    pid: int
    name: str
    user: str = ""
    uid: int = -1
    exe: str = ""
    cmdline: tuple[str, ...] = ()
    create_time: float = 0.0
    status: str = ""

    def to_json(self) -> dict[str, Any]:
        return self.__dict__ | {"cmdline": list(self.cmdline)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProcessInfo:
        return cls(**(data | {"cmdline": tuple(data.get("cmdline", ()))}))


@dataclass(frozen=True)
class OpenFile:
    """One file descriptor of a process: where it points and, if it could be stat-ed, its size.

    ``deleted`` is True when the kernel shows the target as ``(deleted)``: the name is gone
    but the blocks stay allocated until the last descriptor closes.
    """

    pid: int
    fd: int
    target: str
    deleted: bool = False
    size_bytes: int = 0
    allocated_bytes: int = 0
    dev: int = 0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OpenFile:
        return cls(**data)


@dataclass(frozen=True)
class CommandResult:
    """A command's outcome. ``returncode`` is None when it timed out or could not start."""

    argv: tuple[str, ...]
    returncode: int | None
    stdout: str = ""
    stderr: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass(frozen=True)
class UserInfo:
    """An account from the host's passwd and group databases."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...] = field(default_factory=tuple)


class NotCaptured(LookupError):
    """A replayed host was asked something its capture does not hold."""


class MountHung(OSError):
    """A path on a mount whose statvfs did not answer: prodx does not touch it (a thread
    blocked there in the kernel would keep prodx from ever exiting)."""


class HostAccessDenied(PermissionError):
    """The host refused a read for lack of privilege; probes turn it into ``unknown``."""


class Host(abc.ABC):
    """What probes may ask of a machine. Every method is read-only except ``write_test``."""

    #: True when the probes run with root privileges on this host.
    is_root: bool = False
    #: The uid the probes run as on this host.
    effective_uid: int = -1

    @abc.abstractmethod
    def hostname(self) -> str: ...

    @abc.abstractmethod
    def now(self) -> float:
        """Seconds since the epoch on this host (a fixture replays its capture time)."""

    @abc.abstractmethod
    def real_path(self, path: str) -> str:
        """Where ``path`` of this host can be read on the machine running prodx; raises
        MountHung for a path on a mount given to ``avoid_mounts``."""

    def avoid_mounts(self, mount_points: list[str]) -> None:
        """Mounts that did not answer statvfs: every later access to a path on them raises
        MountHung instead of blocking (a replayed host touches nothing live: no-op)."""

    def read_bytes(self, path: str, max_bytes: int = 1 << 20) -> bytes:
        """At most ``max_bytes`` from the start of a file."""
        with open(self.real_path(path), "rb") as f:
            return f.read(max_bytes)

    def read_text(self, path: str, max_bytes: int = 1 << 20) -> str:
        return self.read_bytes(path, max_bytes).decode("utf-8", "replace")

    def read_tail(self, path: str, max_bytes: int) -> bytes:
        """The last ``max_bytes`` of a file, never more: logs can be many GB."""
        with open(self.real_path(path), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - max_bytes))
            return f.read(max_bytes)

    def stat(self, path: str) -> os.stat_result:
        return os.stat(self.real_path(path))

    def lstat(self, path: str) -> os.stat_result:
        return os.lstat(self.real_path(path))

    def exists(self, path: str) -> bool:
        return os.path.lexists(self.real_path(path))

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(self.real_path(path)))

    def readlink(self, path: str) -> str:
        return os.readlink(self.real_path(path))

    def glob(self, pattern: str) -> list[str]:
        """Host paths matching a shell-style ``pattern``, sorted; empty when none match."""
        import glob as globmod

        real = self.real_path(pattern)
        offset = len(real) - len(pattern)
        return sorted(p[offset:] if offset > 0 else p for p in globmod.glob(real))

    @abc.abstractmethod
    def statvfs_many(self, paths: list[str], deadline_s: float) -> list[FsStats]:
        """``statvfs`` of each path, in order; a call that blocks is reported HUNG."""

    @abc.abstractmethod
    def write_test(self, directory: str, user: UserInfo, deadline_s: float) -> WriteResult:
        """Create, write, fsync, close and remove one uniquely named file as ``user``."""

    @abc.abstractmethod
    def processes(self) -> list[ProcessInfo]:
        """Every process the host shows; empty only if it has none."""

    @abc.abstractmethod
    def open_files(self, pid: int) -> list[OpenFile]:
        """The file descriptors of ``pid``; raises HostAccessDenied or ProcessLookupError."""

    def observe(self, kind: str, key: Any, compute: Callable[[], Any]) -> Any:
        """An observation that is neither a file nor a command: a TCP connect, a DNS lookup,
        an HTTP exchange, a TLS handshake. ``compute`` makes it on a live host and returns
        JSON-serialisable data; a recording host keeps it under (kind, key) and a fixture host
        replays it (raising NotCaptured when it holds none). ``key`` is JSON-serialisable.
        """
        return compute()

    def scan_space(self, path: str, deadline_s: float, top_n: int = 10) -> dict[str, Any]:
        """What fills the filesystem under ``path`` (schema ``prodx.space/1``), bounded."""
        from prodx.scanners.space import ScanMode, scan

        return scan(self.real_path(path), deadline_s=deadline_s, mode=ScanMode.BOTH, top_n=top_n).to_json()

    @abc.abstractmethod
    def run(self, argv: list[str], timeout_s: float) -> CommandResult:
        """Run a command as an argv list, never through a shell, bounded by ``timeout_s``."""

    def user(self, name_or_uid: str | int) -> UserInfo | None:
        """Look a user up in the host's /etc/passwd and /etc/group; None if unknown."""
        from prodx.host.accounts import lookup_user

        return lookup_user(self, name_or_uid)

    def user_name(self, uid: int) -> str:
        info = self.user(uid)
        return info.name if info else str(uid)

    def group_name(self, gid: int) -> str:
        from prodx.host.accounts import group_name

        return group_name(self, gid)
