"""A lab sandbox: one fresh directory that owns everything a fault scenario creates.

Everything lives under ``/tmp/prodx-lab-<name>-<random>/``: ext4 images, their loop devices
and mount points, config files, logs. The sandbox records each thing it creates in
``sandbox.json`` beside them (with the owner's pid), tears them down in reverse order, and
refuses any path outside its root. The things outside are throwaway users named
``prodxlab*`` and cgroups named after the sandbox, removed at teardown.

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


class LabError(Exception):
    """A lab step failed; the message names the step and what the command said."""


class SandboxEscape(LabError):
    """A path outside the sandbox root was about to be written, mounted or removed."""


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


def port_answers(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port`` right now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
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

    def _undo_user(self, name: str) -> None:
        if not name.startswith(USER_PREFIX):
            raise SandboxEscape(f"refusing to remove user {name}: not a lab user")
        try:
            pwd.getpwnam(name)
        except KeyError:
            return
        run_argv(["userdel", name])


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
