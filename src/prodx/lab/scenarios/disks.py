"""Disks that fail a server: a database's own disk filling up, and a disk that returns I/O
errors.

``db-disk-full``: all real. A private PostgreSQL (prodx.lab.services) keeps its data directory
on a small loop-mounted ext4 of its own, as a dedicated database volume; its socket and log
stay in the sandbox, as /var/log/postgresql does on Debian. The app's event table grows until
the volume is full: PostgreSQL answers the insert with "could not extend file ... No space
left on device" and logs it.

``io-errors``: real EIO from the block layer, through a FUSE-backed loop device. This kernel
has no device-mapper (no dm ``error`` or ``flakey`` target), so the failing disk is a loop
device whose backing file lives on a small FUSE filesystem the lab runs (``fuse.labdisk``):
once told to, it fails every read and write past the first MiB with EIO, as a disk with a
failing region does. Everything above it is the real kernel: the loop driver logs "I/O error,
dev loopN, sector ...", the page cache "Buffer I/O error ... lost async page write", ext4
aborts its journal ("EXT4-fs error", "Detected aborted journal") and refuses further writes;
the app on it (nginx + PHP-FPM, sessions and cache on that disk) gets EIO reading its cached
catalog and loses its logins.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from pathlib import Path

from prodx.lab.framework import LOOP_COMMANDS, Needs, Scenario, profile_toml
from prodx.lab.sandbox import LabError, Sandbox, wait_until
from prodx.lab.scenarios.common import AppOnLoop, mib
from prodx.lab.scenarios.netfs import fuse_unmet, mounted
from prodx.lab.webstack import WebStack, webstack_unmet
from prodx.lab.services import PostgresInstance, _run_as, find_postgres_bindir, free_port, postgres_unmet

#: One batch of the app's events: ~20 MiB of rows of ~1 KiB that do not compress.
_EVENTS_SQL = ("INSERT INTO events (kind, payload) SELECT 'checkout', repeat(md5(random()::text), 32) "
               "FROM generate_series(1, 20000)")


class DbDiskFull(Scenario):
    name = "db-disk-full"
    condition = "db-disk-full"
    description = ("a private PostgreSQL keeps its data directory on its own 128 MiB loop-mounted ext4; the app's "
                   "event table grows until the volume is full and PostgreSQL refuses the writes with 'could not "
                   "extend file ... No space left on device'")
    symptoms = (
        "checkout fails with a database error; reads still work",
        "the PostgreSQL log says 'could not extend file' ... 'No space left on device'",
    )
    needs = Needs(commands=(*LOOP_COMMANDS, ("psql", "postgresql")), check=postgres_unmet)

    def setup(self, sb: Sandbox) -> None:
        bindir = find_postgres_bindir()
        account = _run_as("postgres")
        if bindir is None:
            raise LabError("needs Debian package postgresql")
        image = sb.make_ext4("pgdata.img", 128)
        _dev, self.volume = sb.mount_image(image, "pgdata")
        data = sb.mkdirs(self.volume / "15-main", mode=0o700)
        if account is not None:
            os.chown(data, account.pw_uid, account.pw_gid)
        self.pg = PostgresInstance(sb.mkdirs("postgres"), free_port(), sandbox=sb, bindir=bindir, account=account,
                                   data_path=data)
        self.pg.start()
        self.pg.psql("CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz DEFAULT now(), kind text, "
                     "payload text)")
        self.pg.psql(_EVENTS_SQL.replace("20000", "2000"))
        st = os.statvfs(self.volume)
        self.injected.append(f"PostgreSQL on 127.0.0.1:{self.pg.port}, data in {data} on its own ext4 "
                             f"({mib(st.f_bavail * st.f_frsize)} free); the events table takes inserts")

    def inject(self, sb: Sandbox) -> None:
        refused = ""
        for _ in range(40):
            proc = self.pg.psql_result(_EVENTS_SQL, timeout_s=120)
            if proc.returncode != 0:
                refused = proc.stderr.strip()
                break
        if "No space left on device" not in refused:
            raise LabError(f"PostgreSQL did not run out of space: {refused or 'every insert succeeded'}")
        st = os.statvfs(self.volume)
        rows = self.pg.psql("SELECT count(*) FROM events") if self.pg.running else "?"
        self.injected.append(f"the events table grew to {rows} rows; {self.volume} has {mib(st.f_bavail * st.f_frsize)} "
                             f"free; the next insert got: {refused.splitlines()[0]}")

    def teardown(self, sb: Sandbox) -> None:
        if getattr(self, "pg", None) is not None:
            self.pg.stop(signal.SIGINT)

    def profile(self, sb: Sandbox) -> str:
        return profile_toml(name=f"lab-{self.name}", user="root", logs=[str(self.pg.log)], services=["postgres"]) + (
            f"\n[[dependency]]\nname = \"database\"\nurl = {json.dumps(self.pg.url)}\n")


#: The failing disk's firmware: fusepy serving one file, disk.img, backed by a real file; once
#: the flag file exists every read or write past BAD_FROM fails with EIO.
FAILING_DISK_SOURCE = r'''
import errno, os, stat, sys, time
from fuse import FUSE, FuseOSError, Operations

class FailingDisk(Operations):
    def __init__(self, backing, flag, bad_from):
        self.fd = os.open(backing, os.O_RDWR)
        self.flag, self.bad_from, self.t = flag, bad_from, time.time()

    def _bad(self, offset, size):
        return offset + size > self.bad_from and os.path.exists(self.flag)

    def getattr(self, path, fh=None):
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2, "st_mtime": self.t, "st_ctime": self.t, "st_atime": self.t}
        if path != "/disk.img":
            raise FuseOSError(errno.ENOENT)
        st = os.fstat(self.fd)
        return {"st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": st.st_size, "st_mtime": st.st_mtime,
                "st_ctime": st.st_ctime, "st_atime": st.st_atime}

    def readdir(self, path, fh):
        return [".", "..", "disk.img"]

    def open(self, path, flags):
        return 0

    def read(self, path, size, offset, fh):
        if self._bad(offset, size):
            raise FuseOSError(errno.EIO)
        return os.pread(self.fd, size, offset)

    def write(self, path, data, offset, fh):
        if self._bad(offset, len(data)):
            raise FuseOSError(errno.EIO)
        return os.pwrite(self.fd, data, offset)

    def fsync(self, path, datasync, fh):
        if os.path.exists(self.flag):
            raise FuseOSError(errno.EIO)
        os.fsync(self.fd)
        return 0

FUSE(FailingDisk(sys.argv[2], sys.argv[3], int(sys.argv[4])), sys.argv[1], foreground=True, nothreads=False,
     direct_io=True, fsname="labdisk", subtype="labdisk")
'''
#: Where the failing region begins: the superblock and the first group descriptors stay readable.
BAD_FROM = 1 << 20

_CATALOG_PHP = """<?php
$path = __DIR__ . '/../var/cache/catalog.html';
$html = file_get_contents($path);
if ($html === false || strlen($html) !== filesize($path)) {
    http_response_code(500);
    error_log('catalog: cannot read the cached catalog ' . $path);
    exit('error');
}
echo $html;
"""


def _io_errors_unmet() -> str | None:
    return fuse_unmet() or webstack_unmet()


class IoErrors(AppOnLoop):
    name = "io-errors"
    condition = "io-errors"
    description = ("nginx + PHP-FPM keep the app's sessions and cache on a 64 MiB ext4 whose disk starts failing: "
                   "the disk is a FUSE-backed loop device (no device-mapper here) that returns EIO for every "
                   "sector past the first MiB; the kernel logs real I/O errors, ext4 aborts its journal")
    symptoms = (
        "the catalog page returns 500; logins stop taking",
        "dmesg shows 'I/O error, dev loop...' and 'Buffer I/O error'; the app log says 'Input/output error'",
    )
    size_mib = 64
    needs = Needs(commands=LOOP_COMMANDS, check=_io_errors_unmet)

    def disk_image(self, sb: Sandbox) -> Path:
        sb.mkdirs("backing")
        raw = sb.make_ext4("backing/disk.raw", self.size_mib)
        self.flag = sb.path("disk-failing")
        self.disk_dir = sb.mkdirs("labdisk")
        self.daemon = sb.spawn([sys.executable, "-c", FAILING_DISK_SOURCE, str(self.disk_dir), str(raw), str(self.flag),
                                str(BAD_FROM)], log="labdisk.log")
        wait_until(lambda: mounted(self.disk_dir) or self.daemon.poll() is not None, 15, f"{self.disk_dir} was not mounted")
        if self.daemon.poll() is not None:
            raise LabError(f"the failing-disk daemon exited: {sb.path('labdisk.log').read_text()[-300:]}")
        sb.record_mount(self.disk_dir)
        return self.disk_dir / "disk.img"

    def setup(self, sb: Sandbox) -> None:
        super().setup(sb)
        self.device = next(os.path.basename(line.split()[0]) for line in Path("/proc/self/mounts").read_text().splitlines()
                           if line.split()[1] == str(self.mnt))
        u = self.user
        self.catalog = sb.write_text(self.app / "var/cache/catalog.html",
                                     "".join(f"<li>item {i}: {'x' * 200}</li>\n" for i in range(1200)), owner=u)
        self.web = WebStack(sb, u, self.app / "public", self.app / "var/sessions")
        self.web.start()
        sb.write_text(self.app / "public/catalog.php", _CATALOG_PHP, owner=u)
        status = self.web._request("GET", "/catalog.php").status
        if status != 200 or not self.web.login("alice").logged_in:
            raise LabError(f"the healthy app does not serve its catalog ({status}) or keep a login; see {self.web.logs}")
        sb.run(["sync", "-f", str(self.mnt)])  # long on disk, as on a server that has run for days
        self.injected.append(f"nginx on http://127.0.0.1:{self.web.port}/ and PHP-FPM as {u.name}; sessions and cache "
                             f"on {self.mnt} (ext4 on a FUSE-backed loop device); catalog and login worked")

    def inject(self, sb: Sandbox) -> None:
        sb.write_text(self.flag, "")
        # The disk's failing region now holds the cached catalog; the kernel would drop its pages
        # under memory pressure sooner or later, here at once, so the next read goes to the disk.
        fd = os.open(self.catalog, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        # Writeback (every 5 s for ext4's journal) meets the failing sectors; do it now.
        sb.run(["sync", "-f", str(self.mnt)], check=False)
        status = self.web._request("GET", "/catalog.php").status
        login = self.web.login("bob")
        wait_until(lambda: any("I/O error" in line for line in self.kernel_lines(sb)), 15,
                   f"no I/O error on {self.device} in the kernel log")
        self.injected.append(f"sectors past {BAD_FROM >> 20} MiB of {self.device} fail with EIO; /catalog.php answers "
                             f"{status}; a login {'still works' if login.logged_in else 'is lost'}; the kernel logged "
                             f"{len(self.kernel_lines(sb))} line(s) about {self.device}")

    def kernel_lines(self, sb: Sandbox) -> list[str]:
        """The kernel's lines about this scenario's loop device since it was attached."""
        lines = sb.run(["dmesg"]).stdout.splitlines()
        attached = max((i for i, line in enumerate(lines) if f"{self.device}: detected capacity change from 0" in line),
                       default=0)
        return [line for line in lines[attached + 1:]
                if re.search(rf"\b{self.device}\b", line)]

    def teardown(self, sb: Sandbox) -> None:
        # A healthy disk again, so the unmount can write what it must.
        flag = getattr(self, "flag", None)
        if flag is not None and flag.exists():
            flag.unlink()

    def profile(self, sb: Sandbox) -> str:
        return profile_toml(name=f"lab-{self.name}", user=self.user.name,
                            writable=[str(self.app / d) for d in ("var/cache", "var/sessions", "var/log")],
                            logs=[str(self.log), *self.web.logs], services=self.web.service_names)
