"""nfs-hang, with a labelled stand-in: a FUSE file server that stops answering.

This kernel has no NFS client (CONFIG_NFS_FS unset, no modules), so a real NFS hang cannot be
staged here. The stand-in is the closest real thing one machine offers: a FUSE filesystem
mounted like a network share (type ``fuse.labnfs``, source ``127.0.0.1:/srv/export``) whose
daemon answers only the mount's root and then blocks every other request forever, as a dead
NFS server with a hard mount does. Processes that touch it (a `df`, workers listing the
shared uploads) block in the kernel waiting for the daemon; `statvfs` never returns. What
differs from real NFS: no "nfs: server not responding" kernel line, and FUSE waits show as
state S (interruptible) in ``request_wait_answer`` rather than D in ``rpc_wait_bit_killable``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from prodx.lab.framework import Needs, Scenario, profile_toml
from prodx.lab.sandbox import LabError, Sandbox, wait_until

#: The stand-in file server: fusepy, root answers, everything else blocks until killed.
DEAD_SERVER_SOURCE = r'''
import errno, stat, sys, threading, time
from fuse import FUSE, FuseOSError, Operations

class DeadServer(Operations):
    def __init__(self):
        self.never = threading.Event()
        self.t = time.time()

    def getattr(self, path, fh=None):
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2, "st_ctime": self.t, "st_mtime": self.t, "st_atime": self.t}
        self.never.wait()
        raise FuseOSError(errno.EIO)

    def readdir(self, path, fh):
        self.never.wait()
        return [".", ".."]

    def statfs(self, path):
        self.never.wait()
        return {}

FUSE(DeadServer(), sys.argv[1], foreground=True, nothreads=False, fsname=sys.argv[2], subtype="labnfs")
'''

#: What the blocked clients run: a df of the share, and two workers reading shared uploads.
CLIENTS = (("stat", "-f", "{mnt}"), ("ls", "{mnt}/uploads"), ("cat", "{mnt}/avatars/1.png"))


def fuse_unmet() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "needs /dev/fuse (FUSE)"
    probe = subprocess.run([sys.executable, "-c", "import fuse"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return "needs fusepy and libfuse2 (pip install fusepy; Debian package libfuse2)"
    return None


def mounted(path: str | os.PathLike[str]) -> bool:
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        return any(line.split()[4] == str(path) for line in fh)


class NfsHang(Scenario):
    name = "nfs-hang"
    condition = "nfs-hang"
    description = ("STAND-IN (no NFS client in this kernel): a FUSE share fuse.labnfs 127.0.0.1:/srv/export "
                   "whose server stops answering; a df and two readers of shared uploads block on it")
    symptoms = (
        "df hangs; ls of the shared uploads folder never returns",
        "pages that show uploads time out; load climbs while the CPU idles",
    )
    needs = Needs(commands=(("stat", "coreutils"), ("umount", "mount")), kernel=(), check=fuse_unmet)

    def setup(self, sb: Sandbox) -> None:
        self.mnt = sb.mkdirs("share")
        self.daemon = sb.spawn([sys.executable, "-c", DEAD_SERVER_SOURCE, str(self.mnt), "127.0.0.1:/srv/export"],
                               log="labnfs.log")
        wait_until(lambda: mounted(self.mnt) or self.daemon.poll() is not None, 15, f"{self.mnt} was not mounted")
        if self.daemon.poll() is not None:
            raise LabError(f"the FUSE stand-in exited: {sb.path('labnfs.log').read_text()[-300:]}")

    def inject(self, sb: Sandbox) -> None:
        self.clients = [sb.spawn([a.format(mnt=self.mnt) for a in argv]) for argv in CLIENTS]

        def all_blocked() -> bool:
            waits = []
            for c in self.clients:
                try:
                    waits.append(Path(f"/proc/{c.pid}/wchan").read_text())
                except OSError:
                    return False
            return all(w.startswith(("request_wait_answer", "fuse_")) for w in waits)

        wait_until(all_blocked, 15, "the clients did not block on the stand-in share")
        self.injected.append(f"{len(self.clients)} processes blocked on {self.mnt} (fuse.labnfs 127.0.0.1:/srv/export): "
                             + ", ".join(" ".join(a).format(mnt="SHARE") for a in CLIENTS))

    def teardown(self, sb: Sandbox) -> None:
        daemon = getattr(self, "daemon", None)
        if daemon is not None and daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGKILL)  # blocked callers now get ENOTCONN and exit
            daemon.wait(10)
        if getattr(self, "mnt", None) is not None and mounted(self.mnt):
            subprocess.run(["umount", "-l", str(self.mnt)], check=False, capture_output=True, timeout=30)

    def profile(self, sb: Sandbox) -> str:
        return profile_toml(name=f"lab-{self.name}", user="root")
