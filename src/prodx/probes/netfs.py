"""Network filesystems: which are mounted, whether the kernel says their server stopped
answering, and which processes are stuck waiting on them.

Reads, through the host, and never touches a network mount itself (a stat on a dead NFS
server blocks forever; ``storage.mounts`` already reports a statvfs that never returns as
``storage.mount_hung``):

- ``/proc/self/mountinfo`` for nfs, nfs4, cifs, smb3, ceph, glusterfs and FUSE network
  mounts (``fuse.sshfs``, ``fuse.rclone``, or any FUSE mount whose source is ``host:path``)::

      41 25 0:45 / /mnt/shared rw,relatime shared:30 - nfs4 files.lan:/export rw,vers=4.2,hard

- the kernel log (``dmesg``, else kern.log) for the RPC client's complaints, the last word per
  server wins (``nfs: server files.lan OK`` after ``not responding`` means it recovered)::

      [81234.5] nfs: server files.lan not responding, still trying
      [81420.1] CIFS: VFS: \\\\files.lan has not responded in 180 seconds. Reconnecting...

- ``/proc/PID/stat`` (state) and ``/proc/PID/wchan`` of every process, twice ``SAMPLE_GAP_S``
  apart: a process that stays blocked in the RPC client (``rpc_wait_bit_killable``),
  ``nfs_*``/``nfs4_*``, CIFS (``wait_for_response``) or FUSE (``request_wait_answer``) is stuck
  on a network filesystem.

No network mount means the kernel-log and stuck-process findings are judged all the same
(a lazily unmounted dead mount may still hold processes); an unreadable wchan (needs root)
leaves stuck processes unknown, never absent.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

from prodx.model import Finding, absent, present, unknown
from prodx.probes.base import Probe, ProbeContext
from prodx.probes.mac import kernel_lines
from prodx.probes.mounts import Mount, parse_mountinfo

#: Pause between the two samples of blocked processes.
SAMPLE_GAP_S = 0.4
_NETFS_TYPES = frozenset("nfs nfs4 cifs smb3 smbfs ceph glusterfs 9p afs ncpfs".split())
_FUSE_NETFS = frozenset("sshfs rclone s3fs gcsfuse glusterfs goofys davfs2 curlftpfs cephfs juicefs".split())
_REMOTE_SOURCE = re.compile(r"^(?:[\w.-]+@)?[\w.-]+:|^//[\w.-]+/")
#: Kernel wait channels of a task waiting for a network filesystem's server.
_NETFS_WCHAN = re.compile(r"^(?:__)?(?:rpc_|nfs|cifs|smb2?_|wait_for_response|fuse_|request_wait_answer|ceph_)")
#: FUSE waits interruptibly (state S) for its daemon before it waits killably (state D).
_FUSE_WAIT = re.compile(r"^(?:request_wait_answer|fuse_)")
#: Where a FUSE daemon waits for the kernel's next request (/dev/fuse reads).
_FUSE_SERVER = re.compile(r"^fuse_dev_")
_NFS_LINE = re.compile(r"nfs: server (\S+?),? (not responding|OK)")
_CIFS_LINE = re.compile(r"CIFS:? (?:VFS: )?\\\\+([\w.-]+)\S* has not responded")


def network_mounts(mounts: Sequence[Mount]) -> list[Mount]:
    """The mounts served over the network.

    >>> ms = parse_mountinfo("41 25 0:45 / /mnt/shared rw - nfs4 files.lan:/export rw\\n"
    ...                      "42 25 0:46 / /mnt/box rw - fuse.sshfs u@box:/srv rw\\n"
    ...                      "43 25 0:47 / /mnt/lab rw - fuse.labnfs 127.0.0.1:/export rw\\n"
    ...                      "44 25 8:1 / /var rw - ext4 /dev/sda1 rw\\n"
    ...                      "45 25 0:48 / /run/user/1000/doc rw - fuse.portal portal rw")
    >>> [m.mount_point for m in network_mounts(ms)]
    ['/mnt/shared', '/mnt/box', '/mnt/lab']
    """
    out = []
    for m in mounts:
        kind, _, sub = m.fstype.partition(".")
        if m.fstype in _NETFS_TYPES or (kind in ("fuse", "fuseblk") and (sub in _FUSE_NETFS or _REMOTE_SOURCE.match(m.source))):
            out.append(m)
    return out


def server_of(source: str) -> str:
    """The server's name in a mount source.

    >>> server_of("files.lan:/export"), server_of("//nas/share"), server_of("u@box:/srv"), server_of("[fd00::1]:/x")
    ('files.lan', 'nas', 'box', 'fd00::1')
    """
    if source.startswith("//"):
        return source[2:].split("/", 1)[0]
    if source.startswith("["):
        return source[1:].split("]", 1)[0]
    return source.split(":", 1)[0].rsplit("@", 1)[-1]


def server_states(lines: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Server → (last state, its line) from kernel log lines: ``not responding`` or ``OK``.

    >>> server_states(["[1.0] nfs: server a not responding, still trying",
    ...                "[2.0] nfs: server b not responding, timed out",
    ...                "[3.0] nfs: server a OK",
    ...                "[4.0] CIFS: VFS: \\\\\\\\nas has not responded in 180 seconds. Reconnecting..."])
    {'a': ('OK', '[3.0] nfs: server a OK'), 'b': ('not responding', '[2.0] nfs: server b not responding, timed out'), 'nas': ('not responding', '[4.0] CIFS: VFS: \\\\\\\\nas has not responded in 180 seconds. Reconnecting...')}
    """
    out: dict[str, tuple[str, str]] = {}
    for line in lines:
        m = _NFS_LINE.search(line)
        if m:
            out[m.group(1)] = (m.group(2), line.strip())
            continue
        m = _CIFS_LINE.search(line)
        if m:
            out[m.group(1)] = ("not responding", line.strip())
        elif "CIFS" in line and "reconnect" in line.lower() and "success" in line.lower():
            for server in list(out):
                if server in line:
                    out[server] = ("OK", line.strip())
    return dict(sorted(out.items()))


def is_netfs_wait(state: str, wchan: str) -> bool:
    """Whether a task in ``state`` sleeping in ``wchan`` waits for a network filesystem.

    >>> is_netfs_wait("D", "rpc_wait_bit_killable"), is_netfs_wait("D", "nfs_wait_bit_killable")
    (True, True)
    >>> is_netfs_wait("S", "request_wait_answer"), is_netfs_wait("S", "rpc_wait_bit_killable")
    (True, False)
    >>> is_netfs_wait("D", "io_schedule"), is_netfs_wait("D", "0")
    (False, False)

    The FUSE server itself waits for requests in ``fuse_dev_do_read``: it serves the mount,
    it is not blocked on it.

    >>> is_netfs_wait("S", "fuse_dev_do_read"), is_netfs_wait("D", "fuse_dev_do_read")
    (False, False)
    """
    wchan = wchan.strip()
    if _FUSE_SERVER.match(wchan):
        return False
    if state == "D":
        return bool(_NETFS_WCHAN.match(wchan))
    return state == "S" and bool(_FUSE_WAIT.match(wchan))


class NetworkFilesystemsProbe(Probe):
    """Are network filesystems mounted; has their server stopped answering; who is stuck on them?"""

    name = "netfs.mounts"
    findings = ("netfs.mounted", "netfs.server_not_responding", "netfs.processes_stuck")
    cost = 1.0
    deadline_s = 2.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        mounts = network_mounts(parse_mountinfo(ctx.host.read_text("/proc/self/mountinfo")))
        described = [{"mount_point": m.mount_point, "fstype": m.fstype, "source": m.source} for m in mounts]
        if mounts:
            yield present("netfs.mounted", "network filesystems: " + ", ".join(m.describe() for m in mounts[:5]),
                          mounts=described)
        else:
            yield absent("netfs.mounted", "no NFS, CIFS or FUSE network filesystem is mounted")
        yield self._kernel(ctx, mounts)
        yield self._stuck(ctx, mounts)

    @staticmethod
    def _kernel(ctx: ProbeContext, mounts: list[Mount]) -> Finding:
        from prodx.redact import redact

        fid = "netfs.server_not_responding"
        lines, source = kernel_lines(ctx)
        if lines is None:
            return unknown(fid, "cannot read the kernel log: dmesg needs root (kernel.dmesg_restrict) and no "
                                "kern.log is readable")
        servers = {server_of(m.source): m for m in mounts}
        states = server_states(lines)
        dead = {s: line for s, (state, line) in states.items() if state != "OK"}
        current = {s: line for s, line in dead.items() if s in servers}
        if current:
            return present(fid, "; ".join(f"{servers[s].describe()}: {redact(line)[:200]}" for s, line in current.items()),
                           source=source, servers=sorted(current),
                           last_lines=[redact(line)[:300] for line in current.values()])
        history = {s: st for s, (st, _l) in states.items()}
        return absent(fid, f"no mounted server is reported not responding in {source}", source=source,
                      history=history)

    @staticmethod
    def _stuck(ctx: ProbeContext, mounts: list[Mount]) -> Finding:
        from prodx.probes.processes import ProcTableUnreadable, parse_proc_stat, proc_table

        fid = "netfs.processes_stuck"
        try:
            table = proc_table(ctx)
        except ProcTableUnreadable as exc:
            return unknown(fid, f"cannot read the process table: {exc}")
        blocked = [p for p in table if p.stat.state in ("D", "S")]
        first: dict[int, str] = {}
        unreadable = 0
        for p in blocked:
            wchan = _wchan(ctx, p.info.pid)
            if wchan is None:
                # Root reads every sleeper's wait channel: "0" then means the task woke (a
                # page-in done) between the two reads, not that its wait is hidden.
                if p.stat.state == "D" and not ctx.host.is_root:
                    unreadable += 1
                continue
            if is_netfs_wait(p.stat.state, wchan):
                first[p.info.pid] = wchan
        if first:
            time.sleep(SAMPLE_GAP_S)
        stuck: list[dict[str, Any]] = []
        by_pid = {p.info.pid: p for p in blocked}
        now = ctx.host.now()
        for pid, wchan in first.items():
            try:
                st = parse_proc_stat(ctx.host.read_text(f"/proc/{pid}/stat", 4096))
            except OSError:
                continue
            again = _wchan(ctx, pid)
            if st is None or again is None or not is_netfs_wait(st.state, again):
                continue
            info = by_pid[pid].info
            stuck.append({"pid": pid, "name": info.name, "state": st.state, "wchan": again,
                          "age_s": round(now - info.create_time) if info.create_time else None,
                          "command": " ".join(info.cmdline)[:200]})
        if stuck:
            names = ", ".join(f"{s['name']} ({s['pid']}, {s['state']} in {s['wchan']})" for s in stuck[:5])
            where = f" with {', '.join(m.describe() for m in mounts[:3])} mounted" if mounts else ""
            return present(fid, f"{len(stuck)} process(es) blocked waiting for a network filesystem{where}: {names}",
                           processes=stuck[:20], count=len(stuck))
        if unreadable:
            return unknown(fid, f"{unreadable} process(es) in uninterruptible sleep (D) whose wait channel is unreadable "
                                "(run as root to read /proc/PID/wchan)")
        return absent(fid, "no process is blocked waiting for a network filesystem")


def _wchan(ctx: ProbeContext, pid: int) -> str | None:
    """The wait channel of ``pid``; None when unreadable ("0" without privilege, or gone)."""
    try:
        text = ctx.host.read_text(f"/proc/{pid}/wchan", 256).strip()
    except OSError:
        return None
    return None if text in ("", "0") else text
