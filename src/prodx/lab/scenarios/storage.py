"""Storage faults on a loop-mounted ext4: full, full of logs, of cache, of inodes, the root
reserve, a quota, read-only, and space held by a deleted but open log."""

from __future__ import annotations

import gzip
import os
import re
import time
from pathlib import Path

from prodx.lab.framework import LOOP_COMMANDS, Needs, profile_toml
from prodx.lab.sandbox import LabError, Sandbox
from prodx.lab.scenarios.common import AppOnLoop, ServedAppOnLoop, fill, fill_argv, mib
from prodx.lab.webstack import webstack_unmet


class DiskFull(ServedAppOnLoop):
    name = "disk-full"
    condition = "disk-full"
    description = ("a PHP app (nginx + PHP-FPM as its own user) keeps its sessions on a small ext4; root writes one "
                   "big data file (mnt/data/blob.bin) until ENOSPC, root's reserve included; logins stop taking")
    symptoms = (
        "logins do not take: the session cannot be written",
        "pages return 500; the app log stops updating",
        "even root gets 'No space left on device'",
    )

    def setup(self, sb: Sandbox) -> None:
        super().setup(sb)
        if not self.web.login("alice").logged_in:
            raise LabError(f"the healthy app does not keep a login; see {self.web.logs}")

    def inject(self, sb: Sandbox) -> None:
        data = sb.mkdirs(self.mnt / "data")
        r = fill(sb, "blob", data / "blob.bin")
        self.injected.append(f"root wrote {mib(r['bytes'])} to {data / 'blob.bin'} until {r['errno']}")
        seen = self.web.login("bob")
        if seen.logged_in or "No space left on device" not in self.web.php_errors():
            raise LabError(f"a login still took on the full disk, or PHP logged no ENOSPC; see {self.web.logs}")
        self.injected.append("a login now shows the login form again; PHP logged 'No space left on device'")


class LogGrowth(AppOnLoop):
    name = "log-growth"
    condition = "log-growth"
    accept = ("disk-full",)
    description = "root appends log lines to mnt/app/var/log/prod.log until ENOSPC; the last line is cut off"
    symptoms = (
        "the site returns 500 and logins fail",
        "the log stopped updating; its last line ends mid-sentence",
    )

    def inject(self, sb: Sandbox) -> None:
        r = fill(sb, "log", self.log)
        self.injected.append(f"root appended {mib(r['bytes'])} of log lines to {self.log} until {r['errno']}")


class CacheGrowth(AppOnLoop):
    name = "cache-growth"
    condition = "cache-growth"
    accept = ("disk-full",)
    description = ("the app user writes 64 KiB cache entries under mnt/app/var/cache/prod/pools until ENOSPC "
                   "(ext4 made with -m 0, a data volume without root reserve)")
    symptoms = (
        "pages get slower, then return 500",
        "clearing the cache helped for a day",
    )
    # No root reserve: the app's own writes fill the disk completely, as on a data volume;
    # with a reserve this would reproduce disk-full-reserved-blocks instead.
    mkfs_args = ("-m", "0")

    def inject(self, sb: Sandbox) -> None:
        cache = sb.mkdirs(self.app / "var/cache/prod", owner=self.user)
        r = fill(sb, "cache", cache, user=self.user)
        self.injected.append(f"{self.user.name} wrote {r['files']} cache entries ({mib(r['bytes'])}) "
                             f"under {cache} until {r['errno']}")


class SessionStoreFull(AppOnLoop):
    name = "inode-exhaustion-sessions"
    condition = "session-store-full"
    accept = ("inode-exhaustion",)
    description = ("ext4 made with 2048 inodes; the app user creates sess_* files in mnt/app/var/sessions "
                   "until ENOSPC on inodes while blocks remain (session GC never ran)")
    symptoms = (
        "logins silently fail: the login form just reloads",
        "'No space left on device' although df shows free space",
    )
    mkfs_args = ("-N", "2048")

    def inject(self, sb: Sandbox) -> None:
        sessions = self.app / "var/sessions"
        r = fill(sb, "files", sessions, "sess_", user=self.user)
        self.injected.append(f"{self.user.name} created {r['files']} session files in {sessions} until {r['errno']}")


class InodeExhaustion(ServedAppOnLoop):
    name = "inode-exhaustion"
    condition = "inode-exhaustion"
    description = ("a PHP app (nginx + PHP-FPM as its own user) keeps its sessions on an ext4 made with 2048 "
                   "inodes; root creates tiny files in mnt/data/chunks until ENOSPC on inodes; logins stop taking")
    symptoms = (
        "'No space left on device' although df -h shows plenty free",
        "new files cannot be created; appending to existing ones still works",
    )
    mkfs_args = ("-N", "2048")

    def inject(self, sb: Sandbox) -> None:
        chunks = sb.mkdirs(self.mnt / "data/chunks")
        r = fill(sb, "files", chunks, "chunk-")
        self.injected.append(f"root created {r['files']} tiny files in {chunks} until {r['errno']}")
        if self.web.login("bob").logged_in:
            raise LabError("a login still took with no inode left")
        self.injected.append("a login now shows the login form again: PHP cannot create the session file")


class ReservedBlocks(AppOnLoop):
    name = "reserved-blocks"
    condition = "disk-full-reserved-blocks"
    description = ("ext4 with a 10 % root reserve (-m 10); the app user writes mnt/app/data/upload.bin "
                   "until ENOSPC while root can still write")
    symptoms = (
        "the app gets 'No space left on device'",
        "df shows some space free and root can still write files",
    )
    mkfs_args = ("-m", "10")

    def inject(self, sb: Sandbox) -> None:
        data = sb.mkdirs(self.app / "data", owner=self.user)
        r = fill(sb, "blob", data / "upload.bin", user=self.user)
        st = os.statvfs(self.mnt)
        self.injected.append(f"{self.user.name} wrote {mib(r['bytes'])} to {data / 'upload.bin'} until {r['errno']}; "
                             f"{mib(st.f_bfree * st.f_frsize)} still free for root")


def _kernel_config() -> str:
    """The running kernel's build config text, or "" when neither /proc/config.gz nor
    /boot/config-RELEASE is there."""
    release = os.uname().release
    try:
        with gzip.open("/proc/config.gz", "rt") as fh:
            return fh.read()
    except OSError:
        pass
    try:
        return Path(f"/boot/config-{release}").read_text()
    except OSError:
        return ""


def _quota_unmet() -> str | None:
    # /proc/sys/fs/quota exists only in kernels built with CONFIG_QUOTA (fs/quota/dquot.c).
    if not os.path.isdir("/proc/sys/fs/quota"):
        return "needs a kernel with disk quotas (CONFIG_QUOTA; /proc/sys/fs/quota missing)"
    # ext4 quotas also need the v2 quota format; without it the mount fails with
    # "The kernel was not built with CONFIG_QUOTA and CONFIG_QFMT_V2" in dmesg.
    config = _kernel_config()
    if config and not re.search(r"^CONFIG_QFMT_V2=[ym]", config, re.M):
        return "needs a kernel with the ext4 quota format (this one is built without CONFIG_QFMT_V2)"
    return None


class DiskQuota(ServedAppOnLoop):
    name = "quota"
    condition = "disk-quota"
    description = ("ext4 with the quota feature mounted usrquota; a 2 MiB block quota for the app user (who runs "
                   "nginx + PHP-FPM), who writes mnt/app/data/upload.bin until EDQUOT; its sessions then fail too")
    symptoms = (
        "the app gets 'Disk quota exceeded' while df shows the disk nearly empty",
        "root and other users can still write",
    )
    mkfs_args = ("-O", "quota")
    mount_options = ("usrquota",)
    needs = Needs(commands=(*LOOP_COMMANDS, ("setquota", "quota"), ("quota", "quota")),
                  check=lambda: _quota_unmet() or webstack_unmet())
    limit_kib = 2048

    def inject(self, sb: Sandbox) -> None:
        lim = str(self.limit_kib)
        sb.run(["setquota", "-u", self.user.name, lim, lim, "0", "0", str(self.mnt)])
        data = sb.mkdirs(self.app / "data", owner=self.user)
        r = fill(sb, "blob", data / "upload.bin", user=self.user)
        if r["errno"] != "EDQUOT":
            raise LabError(f"quota not enforced: the fill stopped with {r['errno']}, not EDQUOT")
        self.injected.append(f"block quota {lim} KiB for {self.user.name}; it wrote {mib(r['bytes'])} "
                             f"to {data / 'upload.bin'} until {r['errno']}")
        if self.web.login("bob").logged_in:
            raise LabError("a login still took with the app's user over its quota")
        self.injected.append("a login now shows the login form again: PHP cannot write the session")


class ReadonlyRemount(AppOnLoop):
    name = "readonly-remount"
    condition = "filesystem-readonly"
    description = "the app's ext4 is remounted read-only (mount -o remount,ro), as after errors=remount-ro"
    symptoms = (
        "logins fail and uploads fail; every write gets 'Read-only file system'",
        "the disk is not full",
    )

    def inject(self, sb: Sandbox) -> None:
        sb.remount(self.mnt, ["ro"])
        self.injected.append(f"remounted {self.mnt} read-only")


class DeletedOpenLog(AppOnLoop):
    name = "deleted-open-log"
    condition = "deleted-open-files"
    description = ("a worker process (lab-worker, as root) writes mnt/app/var/log/worker.log to 75 % "
                   "of the filesystem; the file is deleted while the worker keeps it open and writing, until "
                   "the filesystem is full of data no path leads to")
    symptoms = (
        "df says the disk is nearly full but du finds only a little",
        "deleting the big log freed nothing; the disk filled up anyway",
        "writes fail with 'No space left on device'",
    )
    fill_fraction = 0.75

    def inject(self, sb: Sandbox) -> None:
        st = os.statvfs(self.mnt)
        target = int(st.f_blocks * st.f_frsize * self.fill_fraction)
        self.worker_log = self.app / "var/log/worker.log"
        # As root, like the logging daemons this usually is (rsyslog, a root cron job's output):
        # it also uses root's reserve, so the filesystem ends up full for everyone.
        self.worker = sb.spawn(fill_argv("hold", self.worker_log, str(target)), log="worker.out")
        deadline = time.monotonic() + 60
        while not (self.worker_log.exists() and self.worker_log.stat().st_size >= target):
            if self.worker.poll() is not None:
                raise LabError(f"the worker exited with {self.worker.returncode}; see {sb.path('worker.out')}")
            if time.monotonic() > deadline:
                raise LabError("the worker did not reach its size within 60 s")
            time.sleep(0.1)
        sb.remove(self.worker_log)
        deadline = time.monotonic() + 60
        while os.statvfs(self.mnt).f_bavail:  # root's view: f_bavail reaches 0 before f_bfree
            if time.monotonic() > deadline:
                raise LabError("the worker did not fill the filesystem within 60 s of the delete")
            time.sleep(0.1)
        self.injected.append(f"worker pid {self.worker.pid} (root) wrote {mib(target)} to "
                             f"{self.worker_log}; the file was deleted while the worker holds it open, "
                             f"and the worker kept writing it until the filesystem was full")

    def profile(self, sb: Sandbox) -> str:
        return profile_toml(name=f"lab-{self.name}", user=self.user.name,
                            writable=[str(self.app / d) for d in ("var/cache", "var/sessions", "var/log")],
                            logs=[str(self.log)], services=["lab-worker"])
