"""A FUSE filesystem whose statfs never answers: the lab's stand-in for a dead NFS server.

Run as ``python -m tests.helpers.hangfs MOUNTPOINT [--hang-lookups]`` (needs root, /dev/fuse,
libfuse2 and fusepy). getattr and readdir of the root answer at once, so the mount comes up;
statfs blocks until the daemon is killed, exactly as statvfs(2) blocks in the kernel on a hung
network mount; with ``--hang-lookups`` so does every lookup of a path on it.
"""

from __future__ import annotations

import errno
import stat
import sys
import threading
import time

from fuse import FUSE, FuseOSError, Operations


class HangFS(Operations):
    def __init__(self) -> None:
        self.forever = threading.Event()
        self.started = time.time()

    def getattr(self, path, fh=None):
        if path != "/" and HANG_LOOKUPS:
            self.forever.wait()  # a lookup of anything on the mount blocks too
        if path != "/":
            raise FuseOSError(errno.ENOENT)
        return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2, "st_ctime": self.started, "st_mtime": self.started, "st_atime": self.started}

    def readdir(self, path, fh):
        return [".", ".."]

    def statfs(self, path):
        self.forever.wait()  # never set: the caller blocks in the kernel
        return {}


#: ``--hang-lookups``: every path but the root blocks as well (profile paths on a dead mount).
HANG_LOOKUPS = "--hang-lookups" in sys.argv[2:]

if __name__ == "__main__":
    FUSE(HangFS(), sys.argv[1], foreground=True, nothreads=False, fsname="hangfs")
