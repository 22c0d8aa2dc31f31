"""A lab sandbox: one fresh directory that owns everything a fault scenario creates.

Everything lives under ``/tmp/prodx-lab-<name>-<random>/``: ext4 images, their loop devices
and mount points, config files, logs. The sandbox records each thing it creates in
``sandbox.json`` beside them (with the owner's pid), tears them down in reverse order, and
refuses any path outside its root. The things outside are throwaway users and network
namespaces named ``prodxlab*`` (with the namespace's ``/etc/netns/prodxlab*`` files, which
``ip netns exec`` puts in place of /etc's), and cgroups named after the sandbox, removed at
teardown.

``sandbox.json`` looks like::

    {"owner_pid": 4242, "owner_start": 123456, "kept": false,
     "resources": [["loop", "/dev/loop3", "/tmp/prodx-lab-x/disk.img"],
                   ["mount", "/tmp/prodx-lab-x/mnt"],
                   ["user", "prodxlab3f2a"], ["swap", "/tmp/prodx-lab-x/swapfile"],
                   ["cgroup", "/sys/fs/cgroup/pids/prodx-lab-x"], ["process", 4250, 123470]]}

A run that was killed (SIGKILL, power loss) leaves such a directory; :func:`cleanup_stale`
tears down every one whose owner is dead, using the same records.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASE_DIR = Path("/tmp")
PREFIX = "prodx-lab-"
USER_PREFIX = "prodxlab"
MANIFEST = "sandbox.json"
#: Deadline for one admin command (mkfs, mount, losetup, useradd): they take milliseconds.
COMMAND_TIMEOUT_S = 60.0
#: How old the healthy system looks once staged: a real server's configs, code and package
#: history are older than its fault, and older than the 48 h prodx calls a recent change.
SETUP_AGE_S = 6 * 86400
#: Filesystems :meth:`Sandbox.backdate` walks into; a FUSE share (a stand-in file server that
#: may block every request, or the backing store of a failing disk) is left alone.
_LOCAL_FS = ("ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs")


class LabError(Exception):
    """A lab step failed; the message names the step and what the command said."""


class SandboxEscape(LabError):
    """A path outside the sandbox root was about to be written, mounted or removed."""


@dataclass
class NetNs:
    """A network namespace the sandbox made, joined to the host by a veth pair (a /30)."""

    name: str
    host_ip: str  # the host's end of the veth
    ns_ip: str  # the namespace's end; its default route points at host_ip

    def exec_argv(self, argv: Sequence[str], user: Account | None = None) -> list[str]:
        """``argv`` run inside the namespace (as ``user`` when given), for Popen or run_argv."""
        drop = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups"] if user else []
        return ["ip", "netns", "exec", self.name, *drop, *argv]


@dataclass
class Account:
    """A throwaway user the sandbox created."""

    name: str
    uid: int
    gid: int


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now (another process could take it first)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(ready: Callable[[], bool], timeout_s: float, message: str) -> None:
    """Poll ``ready`` until it holds; raise LabError(message) after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise LabError(message)
        time.sleep(0.05)


def port_answers(port: int | Path, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections right now on ``host``:``port``, or on the unix
    socket at ``port`` when it is a path."""
    try:
        if isinstance(port, Path):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                s.connect(str(port))
            return True
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(port: int, up: bool = True, timeout_s: float = 15.0) -> None:
    """Wait until 127.0.0.1:``port`` accepts connections (``up``) or refuses them."""
    wait_until(lambda: port_answers(port) is up, timeout_s,
               f"127.0.0.1:{port} did not {'open' if up else 'close'} within {timeout_s:.0f} s")


def _proc_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks (field 22 of /proc/PID/stat), None if gone.

    Recorded with every pid so a recycled pid is never mistaken for ours.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    rest = raw[raw.rfind(")") + 2 :].split()
    return int(rest[19]) if len(rest) > 19 else None


def _free_slash30() -> tuple[str, str]:
    """(host end, namespace end) of a 10.x.y.z/30 that no interface of the host uses."""
    used = run_argv(["ip", "-o", "-4", "addr", "show"]).stdout
    for _ in range(100):
        base = f"10.{secrets.randbelow(200) + 50}.{secrets.randbelow(256)}.{secrets.randbelow(64) * 4}"
        net = base.rsplit(".", 1)[0] + "."
        if net not in used:
            last = int(base.rsplit(".", 1)[1])
            return f"{net}{last + 1}", f"{net}{last + 2}"
    raise LabError("no free 10.x.y.0/24 for a veth pair")


def _held_open_under(root: Path) -> set[str]:
    """Paths under ``root`` that some process holds open (from every /proc/PID/fd link)."""
    prefix = f"{root}/"
    held = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(prefix):
                held.add(target)
    return held


def _mount_types_under(root: str) -> dict[str, str]:
    """Mount point → filesystem type for the mounts at or under ``root`` (/proc/self/mountinfo)."""
    out = {}
    points = set(mounts_under(root))
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            fields = line.split()
            if " - " not in line or len(fields) < 5:
                continue
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            if point in points:
                out[point] = line.split(" - ", 1)[1].split()[0]
    return out


def _alive(pid: int, start: int | None) -> bool:
    return start is not None and _proc_start(pid) == start


def mounts_under(root: str) -> list[str]:
    """Mount points at or under ``root`` from /proc/self/mounts, deepest first."""
    out = []
    prefix = root.rstrip("/") + "/"
    with open("/proc/self/mounts", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) < 2:
                continue
            # /proc/mounts escapes space, tab, newline and backslash as octal (\040 ...).
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
            if point == root or point.startswith(prefix):
                out.append(point)
    return sorted(set(out), key=len, reverse=True)


def run_argv(argv: Sequence[str], *, timeout_s: float = COMMAND_TIMEOUT_S, check: bool = True,
             **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (never a shell) with a deadline; on failure raise LabError with its stderr."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, check=False,
                              **kwargs)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{argv[0]}: no answer within {timeout_s:.0f} s") from exc
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]}: command not found") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): {detail[-1] if detail else 'no output'}")
    return proc


class Sandbox:
    """One scenario's private directory and everything created in it.

    Create it, use its methods to make images, mounts, users and processes, and call
    :meth:`teardown` (idempotent) in a ``finally``. Every path argument is checked to lie under
    :attr:`root`; a path outside raises :class:`SandboxEscape` before anything happens.
    """

    def __init__(self, name: str, *, base: Path = BASE_DIR) -> None:
        slug = re.sub(r"[^a-z0-9-]", "-", name.lower())[:40]
        self.root = Path(f"{base}/{PREFIX}{slug}-{secrets.token_hex(4)}")
        self.root.mkdir(mode=0o755)
        # mkdir honours umask; the app user must traverse the root to reach its dirs.
        os.chmod(self.root, 0o755)
        self.root = Path(os.path.realpath(self.root))
        self.kept = False
        self._resources: list[list[Any]] = []
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._torn_down = False
        self.backdated = False
        self._save()

    # ---- records -------------------------------------------------------------------------

    @classmethod
    def adopt(cls, root: Path) -> Sandbox:
        """The sandbox recorded in ``root/sandbox.json``, to tear down what a dead run left."""
        sb = cls.__new__(cls)
        sb.root = Path(os.path.realpath(root))
        data = json.loads((sb.root / MANIFEST).read_text())
        sb.kept = bool(data.get("kept"))
        sb._resources = data.get("resources", [])
        sb._procs = {}
        sb._torn_down = False
        sb.backdated = True
        return sb

    def _save(self) -> None:
        data = {"owner_pid": os.getpid(), "owner_start": _proc_start(os.getpid()), "kept": self.kept,
                "resources": self._resources}
        tmp = self.root / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.root / MANIFEST)

    def _record(self, *item: Any) -> None:
        self._resources.append(list(item))
        self._save()

    def keep(self) -> None:
        """Mark the sandbox kept: stale cleanup leaves it alone until ``prodx lab cleanup``."""
        self.kept = True
        self._save()

    # ---- paths ---------------------------------------------------------------------------

    def check(self, path: str | os.PathLike[str]) -> Path:
        """``path`` resolved (symlinks followed); SandboxEscape unless it lies under the root."""
        real = Path(os.path.realpath(os.path.join(self.root, path)))
        if real != self.root and self.root not in real.parents:
            raise SandboxEscape(f"{path} is outside the sandbox {self.root}")
        return real

    def path(self, *parts: str) -> Path:
        """A path under the root, e.g. ``sb.path("mnt", "app")``."""
        return self.check(self.root.joinpath(*parts))

    def mkdirs(self, path: str | os.PathLike[str], *, mode: int = 0o755, owner: Account | None = None) -> Path:
        """Create ``path`` and missing parents (under the root); chown the leaf to ``owner``."""
        p = self.check(path)
        p.mkdir(parents=True, exist_ok=True)
        os.chmod(p, mode)
        if owner is not None:
            os.chown(p, owner.uid, owner.gid)
        return p

    def write_text(self, path: str | os.PathLike[str], text: str, *, mode: int = 0o644,
                   owner: Account | None = None) -> Path:
        """Write ``text`` to ``path`` (under the root)."""
        p = self.check(path)
        p.write_text(text, encoding="utf-8")
        os.chmod(p, mode)
        if owner is not None:
            os.chown(p, owner.uid, owner.gid)
        return p

    def remove(self, path: str | os.PathLike[str]) -> None:
        """Unlink one file under the root."""
        self.check(path).unlink()

    # ---- the healthy system's age --------------------------------------------------------

    def now(self) -> float:
        """The time of a scenario step, for the history it writes (git commits, lockfiles, log
        lines): SETUP_AGE_S ago while the healthy system is built, the real time once
        :meth:`backdate` has run (what inject breaks is new)."""
        return time.time() - (0 if self.backdated else SETUP_AGE_S)

    def backdate(self) -> int:
        """Make everything under the root SETUP_AGE_S old (atime and mtime; symlinks
        themselves), except files a running process holds open (a live log is written all the
        time) and what lies on filesystems other than local disks and tmpfs. Returns how many
        entries changed; from then on :meth:`now` is the real time."""
        when = time.time() - SETUP_AGE_S
        held = _held_open_under(self.root)
        foreign = {p for p, fstype in _mount_types_under(str(self.root)).items() if fstype not in _LOCAL_FS}
        changed = 0
        for top, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if os.path.join(top, d) not in foreign]
            for name in [*files, *dirs]:
                path = os.path.join(top, name)
                if path in held or name in (MANIFEST, MANIFEST + ".tmp"):
                    continue
                try:
                    os.utime(path, (when, when), follow_symlinks=False)
                    changed += 1
                except OSError:
                    pass  # vanished meanwhile (a pid file, a socket)
        os.utime(self.root, (when, when))
        self.backdated = True
        return changed

    def git(self, repo: str | os.PathLike[str], *args: str, user: Account | None = None) -> subprocess.CompletedProcess[str]:
        """``git -C REPO ARGS`` (as ``user``, else root) with a fixed identity, dated by
        :meth:`now` (commit and reflog times: history made while building the healthy system
        is old)."""
        repo = self.check(repo)
        stamp = f"@{int(self.now())} +0000"
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.root), "GIT_AUTHOR_NAME": "Deploy",
               "GIT_AUTHOR_EMAIL": "ci@shop", "GIT_COMMITTER_NAME": "Deploy", "GIT_COMMITTER_EMAIL": "ci@shop",
               "GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp, "GIT_CONFIG_NOSYSTEM": "1"}
        kwargs: dict[str, Any] = {"env": env, "cwd": self.root}
        if user is not None:
            kwargs.update(user=user.uid, group=user.gid, extra_groups=[])
        # git refuses a repository another user owns unless told it is safe.
        return run_argv(["git", "-c", "safe.directory=*", "-C", str(repo), *args], **kwargs)

    # ---- commands, images, mounts --------------------------------------------------------

    def run(self, argv: Sequence[str], *, user: Account | None = None, timeout_s: float = COMMAND_TIMEOUT_S,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` (as ``user`` if given) with its working directory at the root."""
        kwargs: dict[str, Any] = {"cwd": self.root}
        if user is not None:
            kwargs.update(user=user.uid, group=user.gid, extra_groups=[])
        return run_argv(argv, timeout_s=timeout_s, check=check, **kwargs)

    def make_ext4(self, image: str, size_mib: int, mkfs_args: Sequence[str] = ()) -> Path:
        """A sparse file of ``size_mib`` MiB formatted as ext4 (``mkfs.ext4 -F -q`` + args)."""
        p = self.check(image)
        with open(p, "wb") as fh:
            fh.truncate(size_mib * 1024 * 1024)
        self.run(["mkfs.ext4", "-F", "-q", *mkfs_args, str(p)])
        return p

    def mount_image(self, image: str | os.PathLike[str], mountpoint: str | os.PathLike[str],
                    options: Sequence[str] = ()) -> tuple[str, Path]:
        """Attach ``image`` to a free loop device and mount it; (device, mount point)."""
        img, mnt = self.check(image), self.check(mountpoint)
        mnt.mkdir(parents=True, exist_ok=True)
        dev = self.run(["losetup", "--find", "--show", str(img)]).stdout.strip()
        self._record("loop", dev, str(img))
        argv = ["mount", "-t", "ext4"]
        if options:
            argv += ["-o", ",".join(options)]
        self.run([*argv, dev, str(mnt)])
        self._record("mount", str(mnt))
        return dev, mnt

    def record_mount(self, mountpoint: str | os.PathLike[str]) -> None:
        """Take charge of a mount a process of the sandbox made (a FUSE daemon): teardown
        unmounts it in order, before the processes started earlier are stopped."""
        self._record("mount", str(self.check(mountpoint)))

    def remount(self, mountpoint: str | os.PathLike[str], options: Sequence[str]) -> None:
        """``mount -o remount,<options>`` a mount this sandbox made."""
        mnt = self.check(mountpoint)
        self.run(["mount", "-o", ",".join(["remount", *options]), str(mnt)])

    # ---- users and processes -------------------------------------------------------------

    def add_user(self) -> Account:
        """A throwaway system user ``prodxlab<hex>`` with its own group, no home, no login."""
        name = f"{USER_PREFIX}{secrets.token_hex(3)}"
        self.run(["useradd", "--system", "--no-create-home", "--user-group",
                  "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name])
        self._record("user", name)
        pw = pwd.getpwnam(name)
        return Account(name, pw.pw_uid, pw.pw_gid)

    def make_cgroup(self, parent: str | os.PathLike[str]) -> Path:
        """A new cgroup named after the sandbox under ``parent`` (a cgroup directory of any
        controller, v1 or v2), recorded so that teardown kills what is left in it and removes it."""
        path = Path(parent) / self.root.name
        if not str(path).startswith("/sys/fs/cgroup/"):
            raise SandboxEscape(f"{path} is not a cgroup")
        path.mkdir()
        self._record("cgroup", str(path))
        return path

    def swapon(self, swapfile: str | os.PathLike[str]) -> None:
        """``mkswap`` and ``swapon`` a file under the root, recorded so teardown swaps it off
        before anything removes it (an active swap file that is unlinked can no longer be named
        to swapoff)."""
        path = self.check(swapfile)
        self.run(["mkswap", str(path)])
        self._record("swap", str(path))
        self.run(["swapon", str(path)])

    def spawn(self, argv: Sequence[str], *, user: Account | None = None, log: str | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` in its own session (process group), output to ``log`` under the root.

        Teardown kills the whole group, so the process's children go with it.
        """
        out = open(self.check(log), "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - child owns it
        kwargs: dict[str, Any] = {}
        if user is not None:
            kwargs.update(user=user.uid, group=user.gid, extra_groups=[])
        try:
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    cwd=self.root, start_new_session=True, env=env, **kwargs)
        finally:
            if log:
                out.close()  # type: ignore[union-attr]
        self._procs[proc.pid] = proc
        self._record("process", proc.pid, _proc_start(proc.pid))
        return proc

    # ---- network namespaces --------------------------------------------------------------

    def add_netns(self, *, resolv_conf: str | None = None, sysctls: dict[str, str] | None = None) -> NetNs:
        """A network namespace ``prodxlab<hex>`` with loopback up and a veth pair to the host
        on a free 10.x.y.z/30; ``resolv_conf`` becomes its processes' /etc/resolv.conf (through
        ``ip netns exec``; ``{host_ip}`` in it is the host's end of the veth), ``sysctls`` are
        set inside it (``net.ipv4.ip_local_port_range``)."""
        tag = secrets.token_hex(3)
        name = f"{USER_PREFIX}{tag}"
        host_ip, ns_ip = _free_slash30()
        self.run(["ip", "netns", "add", name])
        self._record("netns", name)
        if resolv_conf is not None:
            etc = Path("/etc/netns") / name
            etc.mkdir(parents=True, exist_ok=True)
            self._record("netns_etc", str(etc))
            (etc / "resolv.conf").write_text(resolv_conf.format(host_ip=host_ip), encoding="utf-8")
        host_if, ns_if = f"vh{tag}", f"vn{tag}"
        for argv in (["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if],
                     ["ip", "link", "set", ns_if, "netns", name],
                     ["ip", "addr", "add", f"{host_ip}/30", "dev", host_if],
                     ["ip", "link", "set", host_if, "up"],
                     ["ip", "-n", name, "addr", "add", f"{ns_ip}/30", "dev", ns_if],
                     ["ip", "-n", name, "link", "set", ns_if, "up"],
                     ["ip", "-n", name, "link", "set", "lo", "up"],
                     ["ip", "-n", name, "route", "add", "default", "via", host_ip]):
            self.run(argv)
        ns = NetNs(name, host_ip, ns_ip)
        for key, value in (sysctls or {}).items():
            self.run(ns.exec_argv(["sysctl", "-q", "-w", f"{key}={value}"]))
        return ns

    # ---- teardown ------------------------------------------------------------------------

    def teardown(self) -> list[str]:
        """Undo everything in reverse order; safe to call twice. Returns what could not be undone.

        SIGINT and SIGTERM are held off while it runs, so a second Ctrl-C cannot leave a
        mount behind half-way.
        """
        if self._torn_down:
            return []
        problems: list[str] = []
        old = _block_signals()
        try:
            for item in reversed(self._resources):
                try:
                    getattr(self, f"_undo_{item[0]}")(*item[1:])
                except Exception as exc:  # noqa: BLE001 - keep undoing the rest, report at the end
                    problems.append(f"{item[0]} {item[1]}: {exc}")
            if mounts_under(str(self.root)):
                problems.append(f"mounts remain under {self.root}; directory left in place")
            else:
                shutil.rmtree(self.root, ignore_errors=True)
            self._torn_down = True
        finally:
            _restore_signals(old)
        return problems

    def _undo_process(self, pid: int, start: int | None) -> None:
        proc = self._procs.pop(pid, None)

        def gone() -> bool:
            return proc.poll() is not None if proc is not None else not _alive(pid, start)

        if gone():
            return
        _killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        while not gone() and time.monotonic() < deadline:
            time.sleep(0.05)
        # Always: the group may outlive its leader (nginx and php-fpm workers).
        _killpg(pid, signal.SIGKILL)
        if proc is not None:
            proc.wait(timeout=5)

    def _undo_swap(self, swapfile: str) -> None:
        path = str(self.check(swapfile))
        with open("/proc/swaps", encoding="utf-8") as fh:
            active = [line.split()[0] for line in fh.readlines()[1:] if line.split()]
        if path in active:
            run_argv(["swapoff", path], timeout_s=300)

    def _undo_cgroup(self, path: str) -> None:
        cg = Path(path)
        if not str(cg).startswith("/sys/fs/cgroup/") or not cg.name.startswith(PREFIX):
            raise SandboxEscape(f"refusing to remove cgroup {path}: not a lab cgroup")
        remove_cgroup(cg)

    def _undo_mount(self, mountpoint: str) -> None:
        mnt = str(self.check(mountpoint))
        if mnt not in mounts_under(mnt):
            return
        if run_argv(["umount", mnt], check=False).returncode != 0:
            # Busy (a process we do not own holds it): detach now, the kernel frees it later.
            run_argv(["umount", "-l", mnt])

    def _undo_loop(self, device: str, image: str) -> None:
        self.check(image)
        proc = run_argv(["losetup", "--noheadings", "--output", "BACK-FILE", device], check=False)
        if proc.returncode != 0 or os.path.realpath(proc.stdout.strip() or "/") != os.path.realpath(image):
            return  # already detached (and maybe reused by someone else): not ours any more
        run_argv(["losetup", "-d", device])

    def _undo_netns(self, name: str) -> None:
        if not name.startswith(USER_PREFIX):
            raise SandboxEscape(f"refusing to remove network namespace {name}: not a lab namespace")
        if os.path.exists(f"/run/netns/{name}"):
            run_argv(["ip", "netns", "del", name])  # its end of the veth goes, and the pair with it

    def _undo_netns_etc(self, path: str) -> None:
        if os.path.dirname(path) != "/etc/netns" or not os.path.basename(path).startswith(USER_PREFIX):
            raise SandboxEscape(f"refusing to remove {path}: not a lab namespace's files")
        shutil.rmtree(path, ignore_errors=True)
        try:
            os.rmdir("/etc/netns")  # only when no other namespace keeps files there
        except OSError:
            pass

    def _undo_user(self, name: str) -> None:
        if not name.startswith(USER_PREFIX):
            raise SandboxEscape(f"refusing to remove user {name}: not a lab user")
        # Another run's useradd/userdel may hold the passwd lock ("cannot remove entry ...
        # from /etc/passwd"): retry a few times before reporting it.
        for attempt in range(10):
            try:
                pwd.getpwnam(name)
            except KeyError:
                return
            proc = run_argv(["userdel", name], check=attempt == 9)
            if proc.returncode == 0:
                return
            time.sleep(0.3)


def remove_cgroup(path: Path, timeout_s: float = 5.0) -> None:
    """SIGKILL every process left in the cgroup at ``path`` (only a lab cgroup holds them:
    the caller checks), then remove it; OSError when it stays busy past ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while path.exists():
        try:
            pids = [int(x) for x in (path / "cgroup.procs").read_text().split()]
        except OSError:
            pids = []
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _block_signals() -> Any:
    try:
        return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    except (ValueError, OSError):
        return None


def _restore_signals(old: Any) -> None:
    if old is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def sandbox_dirs(base: Path = BASE_DIR) -> list[Path]:
    """Every ``prodx-lab-*`` directory under ``base`` that holds a sandbox record."""
    return sorted(p for p in base.glob(PREFIX + "*") if (p / MANIFEST).is_file())


def owner_alive(root: Path) -> bool:
    """Whether the process that made the sandbox at ``root`` still runs."""
    try:
        data = json.loads((root / MANIFEST).read_text())
        return _alive(int(data["owner_pid"]), data.get("owner_start"))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def cleanup_stale(*, include_kept: bool = False, only: list[str] | None = None,
                  base: Path = BASE_DIR) -> list[tuple[Path, list[str]]]:
    """Tear down sandboxes whose owner died (and kept ones if asked), all or those whose root
    is in ``only``: [(root, problems)]. A sandbox whose owner still runs is never touched."""
    done = []
    for root in sandbox_dirs(base):
        if (only is not None and str(root) not in only) or owner_alive(root):
            continue
        try:
            sb = Sandbox.adopt(root)
        except (OSError, ValueError):
            continue
        if sb.kept and not include_kept:
            continue
        done.append((sb.root, sb.teardown()))
    return done
