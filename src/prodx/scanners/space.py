"""What fills a filesystem: a bounded, read-only walk that sums bytes and inodes per directory.

Reads the directory tree under a path (getdents64 and fstatat, never following symlinks,
never leaving the filesystem that holds the path), /proc/self/mountinfo to name the mount,
and os.statvfs for the filesystem's size. Writes nothing anywhere, so it works on a full or
read-only disk.

Example:
    >>> report = scan("/var", deadline_s=1.5)          # doctest: +SKIP
    >>> report.dirs_by_bytes[0].path, report.partial   # doctest: +SKIP
    ('/var/log/app', False)

Two backends walk in the same order and give identical numbers: the C extension
``prodx.scanners._fastscan`` (fast, releases the GIL) and a pure-Python scandir walker used
when the extension did not build. Both return raw per-directory aggregates; this module does
the cumulative sums and the ranking.
"""

from __future__ import annotations

import enum
import errno as errno_mod
import heapq
import os
import stat
import time
from dataclasses import asdict, dataclass, field
from typing import Any

try:
    from prodx.scanners import _fastscan
except ImportError:  # optional extension: no compiler at install time, or not Linux
    _fastscan = None

SCHEMA = "prodx.space/1"
HOTSPOT_MIN_SHARE = 0.01
DOMINANT_CHILD_SHARE = 0.5
UNREADABLE_SAMPLES = 10
# Directories deeper than this are read, then their dirfd is closed and their children are
# opened by absolute path: keeps open fds bounded whatever the tree depth.
FD_KEEP_DEPTH = 48
_CHECK_EVERY = 1024


class ScanMode(str, enum.Enum):
    """What to measure.

    BYTES and BOTH stat every entry (allocated bytes, hard links once). INODES stats only
    directories (and entries whose type getdents cannot tell), so it is much faster; it
    counts directory entries, so a file with several hard links counts once per link.
    """

    BYTES = "bytes"
    INODES = "inodes"
    BOTH = "both"


class Backend(str, enum.Enum):
    """Which walker ran."""

    C = "c"
    PYTHON = "python"


@dataclass
class DirUsage:
    """One directory with totals over its whole subtree (on the same filesystem).

    Attributes:
        path: absolute path.
        bytes: allocated bytes (st_blocks * 512), like ``du -s``; 0 in INODES mode.
        inodes: inodes, the directory itself included, like ``du --inodes -s``.
        files: non-directory entries (regular files, symlinks, sockets, ...).
        depth: levels below the scan root (the root is 0).
    """

    path: str
    bytes: int
    inodes: int
    files: int
    depth: int


@dataclass
class FileUsage:
    """One large file: allocated bytes and modification time (epoch seconds)."""

    path: str
    bytes: int
    mtime: float


@dataclass
class FsUsage:
    """The filesystem's own view (os.statvfs); avail is what an unprivileged user can use."""

    size_bytes: int
    used_bytes: int
    avail_bytes: int
    inodes_total: int
    inodes_used: int
    inodes_free: int


@dataclass
class SpaceReport:
    """What fills the filesystem holding ``root``.

    ``dirs_by_bytes`` and ``dirs_by_inodes`` are hotspots, not a chain of ancestors. A
    directory is listed when (1) its subtree holds at least HOTSPOT_MIN_SHARE (1 %) of the
    scanned total and (2) no child directory that also passes (1) holds more than
    DOMINANT_CHILD_SHARE (half) of it. Following the biggest child down from the root, the
    first directory where the usage fans out is listed, and so is every other directory
    where usage fans out; ``/`` and ``/var`` are skipped when ``/var/log/app`` holds most of
    them. Lists are sorted by size, largest first, ties by walk order, and cut at top_n.
    Empty lists mean the measure was not taken (mode) or the tree is empty.

    Attributes:
        root: the scanned directory (symlinks in it resolved).
        mount_point: where the filesystem holding root is mounted.
        device: its source (``/dev/vda1``, ``tmpfs``) or ``major:minor`` when unknown.
        fstype: ``ext4``, ``xfs``, ... or "" when unknown.
        partial: the deadline stopped the walk; totals are lower bounds.
        partial_reason: why partial, for a person; "" when complete.
        elapsed_s: wall time of the scan.
        total_bytes: allocated bytes under root (0 in INODES mode).
        total_inodes: inodes under root, root included.
        dirs_by_bytes: byte hotspots (see above).
        dirs_by_inodes: inode hotspots: many small files (sessions, caches).
        files_by_bytes: the top_n largest files (empty in INODES mode).
        unreadable: directories that could not be opened or read and entries that vanished
            mid-scan (EACCES, ENOENT, ...); normal on a live system.
        unreadable_samples: the first few of those paths.
        unreadable_errors: counts by errno name, e.g. ``{"EACCES": 3}``.
        backend: "c" or "python".
        mode: what was measured.
        entries: directory entries seen.
        fs: statvfs figures, or None when statvfs failed.
    """

    root: str
    mount_point: str
    device: str
    fstype: str
    partial: bool
    partial_reason: str
    elapsed_s: float
    total_bytes: int
    total_inodes: int
    dirs_by_bytes: list[DirUsage]
    dirs_by_inodes: list[DirUsage]
    files_by_bytes: list[FileUsage]
    unreadable: int
    unreadable_samples: list[str]
    backend: str
    mode: ScanMode = ScanMode.BOTH
    entries: int = 0
    unreadable_errors: dict[str, int] = field(default_factory=dict)
    fs: FsUsage | None = None

    def to_json(self) -> dict[str, Any]:
        """The report as one JSON-serialisable document, schema ``prodx.space/1``."""
        doc = asdict(self)
        doc["mode"] = self.mode.value
        return {"schema": SCHEMA, **doc}


def scan(
    root: str,
    *,
    deadline_s: float = 10.0,
    mode: ScanMode = ScanMode.BOTH,
    top_n: int = 20,
    backend: Backend | None = None,
) -> SpaceReport:
    """Walks the filesystem holding ``root``, from ``root`` down, and ranks what fills it.

    Never crosses into another mount, never follows symlinks, never writes. Unreadable or
    vanishing entries are counted in ``unreadable``, never raised.

    Args:
        root: a directory; a symlink to one is resolved first.
        deadline_s: wall-time budget; when reached, the report is returned with
            ``partial=True`` and what was seen so far.
        mode: what to measure; INODES skips the per-file stat.
        top_n: length of each ranked list.
        backend: force a walker (tests, benchmarks); default C when built, else Python.

    Returns:
        The report.

    Raises:
        FileNotFoundError, NotADirectoryError, PermissionError: root itself is unusable.
        RuntimeError: backend C was asked for but the extension is not built.
    """
    started = time.monotonic()
    real_root = os.path.realpath(root)
    st = os.stat(real_root)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno_mod.ENOTDIR, "not a directory", root)
    if backend is None:
        backend = Backend.C if _fastscan is not None else Backend.PYTHON
    if backend is Backend.C and _fastscan is None:
        raise RuntimeError("prodx.scanners._fastscan is not built")
    mount_point, device, fstype = mount_of(real_root, st.st_dev)
    stat_files = mode is not ScanMode.INODES
    budget_s = max(0.0, deadline_s - (time.monotonic() - started))
    walk = _fastscan.walk if backend is Backend.C else _walk_python
    raw = walk(real_root, stat_files, budget_s, max(0, top_n), UNREADABLE_SAMPLES, FD_KEEP_DEPTH)
    report = _build_report(raw, real_root, mode, top_n)
    report.mount_point, report.device, report.fstype = mount_point, device, fstype
    report.backend = backend.value
    report.fs = fs_usage(real_root)
    report.elapsed_s = round(time.monotonic() - started, 6)
    if report.partial:
        report.partial_reason = f"deadline {deadline_s:.1f} s reached after {report.entries:,} entries"
    return report


def fs_usage(path: str) -> FsUsage | None:
    """Size, use and inode use of the filesystem holding ``path``; None when statvfs fails."""
    try:
        sv = os.statvfs(path)
    except OSError:
        return None
    return FsUsage(
        size_bytes=sv.f_blocks * sv.f_frsize,
        used_bytes=(sv.f_blocks - sv.f_bfree) * sv.f_frsize,
        avail_bytes=sv.f_bavail * sv.f_frsize,
        inodes_total=sv.f_files,
        inodes_used=sv.f_files - sv.f_ffree,
        inodes_free=sv.f_favail,
    )


def mount_of(path: str, dev: int, mountinfo: str = "/proc/self/mountinfo") -> tuple[str, str, str]:
    """The mount point, device and fstype of the filesystem holding ``path``.

    Reads mountinfo lines such as
    ``27 1 254:0 / / rw,relatime - ext4 /dev/vda rw`` and picks the longest mount point that
    contains ``path``, preferring one whose major:minor is ``dev``. Without /proc, walks up
    from ``path`` while st_dev stays the same and names the device ``major:minor``.
    """
    want = f"{os.major(dev)}:{os.minor(dev)}"
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
            mounts = [_parse_mountinfo_line(line) for line in f]
    except OSError:
        mounts = []
    best: tuple[int, int, str, str, str] | None = None
    for i, m in enumerate(mounts):
        if m is None:
            continue
        majmin, mnt, fstype, source = m
        if not (path == mnt or mnt == "/" or path.startswith(mnt + "/")):
            continue
        # Later lines shadow earlier ones on the same mount point.
        key = (len(mnt), int(majmin == want), i)
        if best is None or key > best[:3]:
            best = (*key, mnt, fstype, source)  # type: ignore[assignment]
    if best is not None:
        return best[3], best[5], best[4]
    return _mount_point_by_dev(path, dev), want, ""


def _parse_mountinfo_line(line: str) -> tuple[str, str, str, str] | None:
    parts = line.split()
    try:
        sep = parts.index("-")
        majmin, mnt = parts[2], parts[4]
        fstype, source = parts[sep + 1], parts[sep + 2]
    except (ValueError, IndexError):
        return None
    return majmin, _unescape(mnt), fstype, _unescape(source)


def _unescape(field_text: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \040 \011 \012 \134 (proc(5)).
    for code in ("040", "011", "012", "134"):
        field_text = field_text.replace("\\" + code, chr(int(code, 8)))
    return field_text


def _mount_point_by_dev(path: str, dev: int) -> str:
    current = path
    while current != "/":
        parent = os.path.dirname(current)
        try:
            if os.lstat(parent).st_dev != dev:
                break
        except OSError:
            break
        current = parent
    return current


def _walk_python(
    root: str, stat_files: bool, budget_s: float, top_n: int, sample_n: int, fd_depth: int
) -> tuple[list, list, int, int, list, dict, bool]:
    """The pure-Python twin of ``_fastscan.walk``: same visit order, same result tuple."""
    deadline = time.monotonic() + budget_s
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        root_st = os.fstat(root_fd)
    except OSError:
        os.close(root_fd)
        raise
    root_dev = root_st.st_dev
    dirs: list[list] = [["", -1, root_st.st_blocks * 512, 1, 0]]
    heap: list[tuple] = []
    links: set[int] = set()
    samples: list[tuple[str, int]] = []
    errors: dict[int, int] = {}
    counters = {"entries": 0, "seq": 0, "unreadable": 0, "since": 0}
    timed_out = False

    def note(path: str, err: int | None) -> None:
        err = err or 0
        counters["unreadable"] += 1
        errors[err] = errors.get(err, 0) + 1
        if len(samples) < sample_n:
            samples.append((path, err))

    def tick() -> bool:
        counters["since"] += 1
        if counters["since"] >= _CHECK_EVERY:
            counters["since"] = 0
            return time.monotonic() >= deadline
        return False

    def read_dir(fd: int, path: str, index: int) -> tuple[list[tuple[str, int, int]], bool]:
        rec = dirs[index]
        kids: list[tuple[str, int, int]] = []
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    counters["entries"] += 1
                    counters["seq"] += 1
                    name = entry.name
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                        st = entry.stat(follow_symlinks=False) if (is_dir or stat_files) else None
                    except OSError as exc:
                        note(f"{path}/{name}", exc.errno)
                        if tick():
                            return kids, True
                        continue
                    if is_dir:
                        if st.st_dev == root_dev:
                            kids.append((name, st.st_ino, st.st_blocks))
                    elif st is None:
                        rec[3] += 1
                        rec[4] += 1
                    elif not (st.st_nlink > 1 and _seen(links, st.st_ino)):
                        nbytes = st.st_blocks * 512
                        rec[2] += nbytes
                        rec[3] += 1
                        rec[4] += 1
                        if top_n > 0:
                            seq = counters["seq"]
                            item = (nbytes, -seq, seq, index, name, st.st_mtime)
                            if len(heap) < top_n:
                                heapq.heappush(heap, item)
                            elif nbytes > heap[0][0]:
                                heapq.heapreplace(heap, item)
                    if tick():
                        return kids, True
        except OSError as exc:
            note(path, exc.errno)
        return kids, False

    base = "" if root == "/" else root.rstrip("/")
    # A frame: [fd or -1, path, subdirectories to visit, next position, dirs index]
    kids, timed_out = read_dir(root_fd, base, 0)
    stack: list[list] = [[root_fd, base, kids, 0, 0]]
    try:
        while stack and not timed_out:
            frame = stack[-1]
            if frame[0] >= 0 and len(stack) > fd_depth:
                os.close(frame[0])
                frame[0] = -1
            if frame[3] >= len(frame[2]):
                if frame[0] >= 0:
                    os.close(frame[0])
                stack.pop()
                continue
            name, ino, blocks = frame[2][frame[3]]
            frame[3] += 1
            dirs.append([name, frame[4], blocks * 512, 1, 0])
            index = len(dirs) - 1
            path = f"{frame[1]}/{name}"
            try:
                fd = os.open(name, flags, dir_fd=frame[0]) if frame[0] >= 0 else os.open(path, flags)
            except OSError as exc:
                note(path, exc.errno)
                continue
            try:
                st = os.fstat(fd)
                same = st.st_dev == root_dev and st.st_ino == ino
            except OSError:
                same = False
            if not same:
                os.close(fd)
                note(path, errno_mod.ESTALE)
                continue
            stack.append([fd, path, [], 0, index])
            stack[-1][2], timed_out = read_dir(fd, path, index)
            timed_out = tick() or timed_out
    finally:
        for frame in stack:
            if frame[0] >= 0:
                os.close(frame[0])
    files = [(seq, index, name, nbytes, mtime) for nbytes, _neg, seq, index, name, mtime in heap]
    return (
        [tuple(d) for d in dirs],
        files,
        counters["entries"],
        counters["unreadable"],
        samples,
        errors,
        timed_out,
    )


def _seen(links: set[int], ino: int) -> bool:
    if ino in links:
        return True
    links.add(ino)
    return False


def _build_report(raw: tuple, root: str, mode: ScanMode, top_n: int) -> SpaceReport:
    dirs, files, entries, unreadable, samples, errors, timed_out = raw
    n = len(dirs)
    parent = [d[1] for d in dirs]
    cum_bytes = [d[2] for d in dirs]
    cum_inodes = [d[3] for d in dirs]
    cum_files = [d[4] for d in dirs]
    # Pre-order walk: a parent's index is always below its children's.
    for i in range(n - 1, 0, -1):
        p = parent[i]
        cum_bytes[p] += cum_bytes[i]
        cum_inodes[p] += cum_inodes[i]
        cum_files[p] += cum_files[i]
    depth = [0] * n
    for i in range(1, n):
        depth[i] = depth[parent[i]] + 1

    paths: dict[int, str] = {0: root}

    def path_of(i: int) -> str:
        chain = []
        j = i
        while j not in paths:
            chain.append(j)
            j = parent[j]
        for k in reversed(chain):
            above = paths[parent[k]]
            paths[k] = (above if above != "/" else "") + "/" + dirs[k][0]
        return paths[i]

    def usage(i: int) -> DirUsage:
        nbytes = cum_bytes[i] if mode is not ScanMode.INODES else 0
        return DirUsage(path_of(i), nbytes, cum_inodes[i], cum_files[i], depth[i])

    dirs_by_bytes: list[DirUsage] = []
    dirs_by_inodes: list[DirUsage] = []
    if n and mode is not ScanMode.INODES:
        dirs_by_bytes = [usage(i) for i in hotspots(parent, cum_bytes, top_n)]
    if n and mode is not ScanMode.BYTES:
        dirs_by_inodes = [usage(i) for i in hotspots(parent, cum_inodes, top_n)]
    files_by_bytes = [
        FileUsage(f"{path_of(index).rstrip('/')}/{name}", nbytes, mtime)
        for _seq, index, name, nbytes, mtime in sorted(files, key=lambda f: (-f[3], f[0]))
    ]
    return SpaceReport(
        root=root,
        mount_point="",
        device="",
        fstype="",
        partial=bool(timed_out),
        partial_reason="",
        elapsed_s=0.0,
        total_bytes=cum_bytes[0] if n and mode is not ScanMode.INODES else 0,
        total_inodes=cum_inodes[0] if n else 0,
        dirs_by_bytes=dirs_by_bytes,
        dirs_by_inodes=dirs_by_inodes,
        files_by_bytes=files_by_bytes,
        unreadable=unreadable,
        unreadable_samples=[path for path, _err in samples],
        backend="",
        mode=mode,
        entries=entries,
        unreadable_errors={
            errno_mod.errorcode.get(err, str(err)): count for err, count in sorted(errors.items())
        },
    )


def hotspots(parent: list[int], cum: list[int], top_n: int) -> list[int]:
    """Indices of the directories worth showing, largest first (rule in SpaceReport).

    Args:
        parent: parent index per directory, pre-order (``parent[0] == -1``).
        cum: cumulative measure per directory.
        top_n: how many to return at most.

    Returns:
        Indices sorted by (measure descending, walk order); empty when top_n is 0.

    >>> hotspots([-1, 0, 1, 1], [100, 99, 40, 39], 5)  # the root is dominated by dir 1
    [1, 2, 3]
    """
    if not cum or top_n <= 0:
        return []
    floor = max(1, cum[0] * HOTSPOT_MIN_SHARE)
    dominated = [False] * len(cum)
    for i in range(1, len(cum)):
        p = parent[i]
        if cum[i] >= floor and cum[i] > cum[p] * DOMINANT_CHILD_SHARE:
            dominated[p] = True
    chosen = [i for i, value in enumerate(cum) if value >= floor and not dominated[i]]
    chosen.sort(key=lambda i: (-cum[i], i))
    return chosen[:top_n]
