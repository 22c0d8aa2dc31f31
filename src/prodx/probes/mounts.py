"""The mount table: which filesystems matter, and their statvfs, shared by storage probes.

Reads ``/proc/self/mountinfo`` (see proc(5)), e.g.::

    36 25 8:1 / /var rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro

and ``/etc/fstab`` for how each filesystem was meant to be mounted. Pseudo filesystems
(proc, sysfs, cgroup...) and always-full images (squashfs, iso9660) are left out.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace

from prodx.host.base import FsStats, Host
from prodx.probes.base import ProbeContext

#: Filesystems that hold no user data or are full by construction.
_IGNORED_FSTYPES = frozenset(
    "proc sysfs cgroup cgroup2 devpts mqueue debugfs tracefs securityfs pstore bpf autofs "
    "configfs fusectl hugetlbfs binfmt_misc nsfs rpc_pipefs devtmpfs efivarfs selinuxfs "
    "squashfs iso9660 udf ramfs fuse.gvfsd-fuse fuse.portal fuse.lxcfs".split()
)
#: Filesystems on a block device (or network) whose read-only state is worth reporting.
_DISK_FSTYPES = frozenset("ext2 ext3 ext4 xfs btrfs f2fs jfs reiserfs vfat exfat ntfs ntfs3 zfs nfs nfs4 cifs smb3".split())
_OCTAL = re.compile(r"\\([0-7]{3})")
#: Budget for statvfs of every mount together; a mount still silent after it is hung.
STATVFS_BOUND_S = 1.0


@dataclass(frozen=True)
class Mount:
    """One mounted filesystem and, once measured, its statvfs."""

    mount_point: str
    source: str
    fstype: str
    options: frozenset[str]
    device: str  # major:minor
    stats: FsStats | None = None
    #: The superblock's options (mountinfo's last field): an error remount sets "ro" there,
    #: and ext4 on Linux >= 6.x marks a filesystem it stopped after errors "emergency_ro".
    super_options: frozenset[str] = frozenset()

    @property
    def readonly(self) -> bool:
        return "ro" in self.options or bool({"ro", "emergency_ro"} & self.super_options)

    def describe(self) -> str:
        return f"{self.mount_point} ({self.fstype} on {self.source})"


def _unescape(field: str) -> str:
    """mountinfo and fstab escape space, tab, newline and backslash as octal (\\040 ...); other
    characters, UTF-8 ones included, are as written.

    >>> _unescape("/mnt/caf\u00e9\\\\040old")
    '/mnt/caf\u00e9 old'
    """
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field) if "\\" in field else field


def parse_mountinfo(text: str) -> list[Mount]:
    """Every mount listed in a mountinfo text, in kernel order.

    >>> m = parse_mountinfo("36 25 8:1 / /var rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro\\n"
    ...                     "37 25 7:0 / /srv rw,relatime - ext4 /dev/loop0 rw,emergency_ro")
    >>> [(x.mount_point, x.fstype, x.device, x.readonly) for x in m]
    [('/var', 'ext4', '8:1', False), ('/srv', 'ext4', '7:0', True)]
    """
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 6 or len(tail) < 2:
            continue
        options = set(fields[5].split(","))
        mounts.append(
            Mount(
                mount_point=_unescape(fields[4]),
                source=_unescape(tail[1]),
                fstype=tail[0],
                options=frozenset(options),
                device=fields[2],
                super_options=frozenset(tail[2].split(",")) if len(tail) > 2 else frozenset(),
            )
        )
    return mounts


def parse_fstab(text: str) -> dict[str, set[str]]:
    """Mount point → options, for each entry of an fstab text.

    >>> parse_fstab("UUID=1 / ext4 errors=remount-ro 0 1\\n# c\\n/dev/sdb1 /srv xfs ro 0 0")
    {'/': {'errors=remount-ro'}, '/srv': {'ro'}}
    >>> parse_fstab("/dev/sdc1 /mnt/old\\\\040disk ext4 ro 0 0")  # fstab escapes a space as \\040
    {'/mnt/old disk': {'ro'}}
    """
    out: dict[str, set[str]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and not parts[0].startswith("#"):
            out[_unescape(parts[1])] = set(parts[3].split(","))
    return out


def relevant(mounts: list[Mount], priority_paths: list[str]) -> list[Mount]:
    """Real filesystems, one per device and root, mounts holding ``priority_paths`` first.

    tmpfs counts only when writable (a read-only tmpfs is a sandbox artefact, not a fault).
    """
    seen: set[tuple[str, str]] = set()
    keep = []
    for m in mounts:
        if m.fstype in _IGNORED_FSTYPES or (m.fstype == "tmpfs" and m.readonly):
            continue
        key = (m.device, m.source)
        if key in seen:
            continue
        seen.add(key)
        keep.append(m)
    holders = {mount_of(p, keep).mount_point for p in priority_paths if mount_of(p, keep)}
    return sorted(keep, key=lambda m: (m.mount_point not in holders, m.mount_point))


def mount_of(path: str, mounts: list[Mount]) -> Mount | None:
    """The mount holding ``path``: the longest mount point that is a prefix of it."""
    path = os.path.normpath(path)
    best = None
    for m in mounts:
        mp = m.mount_point
        if path == mp or path.startswith(mp.rstrip("/") + "/"):
            if best is None or len(mp) > len(best.mount_point):
                best = m
    return best


def measure_mounts(host: Host) -> list[Mount]:
    """Relevant mounts of ``host`` with their statvfs, each made in a child bounded together
    by STATVFS_BOUND_S (a mount still silent then is HUNG). Raises OSError when the mount
    table cannot be read."""
    wanted = relevant(parse_mountinfo(host.read_text("/proc/self/mountinfo")), [])
    stats = host.statvfs_many([m.mount_point for m in wanted], STATVFS_BOUND_S)
    return [replace(m, stats=s) for m, s in zip(wanted, stats)]


def measured_mounts(ctx: ProbeContext) -> list[Mount]:
    """Relevant mounts with their statvfs, measured once per run (before the probes, by the
    diagnosis, so that no probe touches a hung mount) and shared; the mounts holding the
    target's paths first."""
    measured = ctx.fact("mounts", lambda: measure_mounts(ctx.host))
    return relevant(measured, ctx.target.writable + ctx.target.logs)


def fstab_options(ctx: ProbeContext) -> dict[str, set[str]]:
    def compute() -> dict[str, set[str]]:
        try:
            return parse_fstab(ctx.host.read_text("/etc/fstab"))
        except OSError:
            return {}

    return ctx.fact("fstab", compute)


def is_disk_fs(mount: Mount) -> bool:
    return mount.fstype in _DISK_FSTYPES or mount.source.startswith("/dev/")
