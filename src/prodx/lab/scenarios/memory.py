"""Memory and CPU faults, for real: the kernel OOM-kills a worker inside a memory cgroup with a
small limit, many busy processes saturate the CPUs, one process spins on a core.

The OOM scenario never risks a machine-wide OOM: the worker lives in its own memory cgroup
(``prodx-lab-*``, cgroup v2 under the root when its memory controller is enabled there, else
the v1 memory controller under prodx's own cgroup) with ``MEMORY_LIMIT_BYTES`` and no swap,
and it stops allocating at ``ALLOC_CAP_BYTES`` whatever happens. The cgroup is removed at
teardown; one left by a killed run is removed by the next run once its sandbox is gone.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from prodx.lab.framework import Needs, Scenario, profile_toml
from prodx.lab.sandbox import BASE_DIR, PREFIX, LabError, Sandbox
from prodx.lab.scenarios.common import child_python
from prodx.probes.cpu import RUNAWAY_MIN_AGE_S, parse_loadavg, parse_psi
from prodx.probes.memory import cgroup_mounts, parse_flat_keyed, parse_proc_cgroup

MIB = 1 << 20
#: The worker's cgroup limit: far below what it tries to allocate.
MEMORY_LIMIT_BYTES = 32 * MIB
#: The worker never allocates more than this, so a limit that failed to apply cannot hurt the host.
ALLOC_CAP_BYTES = 256 * MIB

#: A PHP-FPM-like master: joins the cgroup, logs like php-fpm, forks one worker that allocates
#: 1 MiB at a time (touching every page) until the kernel kills it, logs how it died, then idles.
_MASTER = r"""
import os, sys, time
procs, log, cap = sys.argv[1], sys.argv[2], int(sys.argv[3])
def say(msg):
    with open(log, "a") as fh:
        fh.write(time.strftime("[%d-%b-%Y %H:%M:%S] ") + msg + "\n")
with open(procs, "w") as fh:
    fh.write(str(os.getpid()))
with open("/proc/self/comm", "w") as fh:
    fh.write("lab-fpm-master")
say("NOTICE: fpm is running, pid %d" % os.getpid())
pid = os.fork()
if pid == 0:
    with open("/proc/self/comm", "w") as fh:
        fh.write("lab-fpm-worker")
    held = []
    while len(held) * 1048576 < cap:
        held.append(b"\x01" * 1048576)
    os._exit(0)
say("NOTICE: [pool www] child %d started" % pid)
_, status = os.waitpid(pid, 0)
if os.WIFSIGNALED(status):
    say("WARNING: [pool www] child %d exited on signal %d (SIGKILL) after 0.5 seconds from start" % (pid, os.WTERMSIG(status)))
else:
    say("NOTICE: [pool www] child %d exited with code %d" % (pid, os.WEXITSTATUS(status)))
while True:
    time.sleep(3600)
"""

#: A busy loop that names itself (argv[1]) so the evidence shows what it is.
_BURN = r"""
import sys
with open("/proc/self/comm", "w") as fh:
    fh.write(sys.argv[1])
while True:
    pass
"""


# ---- memory cgroups -----------------------------------------------------------------------


@dataclass
class MemCgroup:
    """One memory cgroup this lab created, v1 or v2."""

    path: Path
    version: int

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def set_limit(self, limit_bytes: int) -> None:
        """Limit memory to ``limit_bytes`` with no swap; LabError unless it reads back."""
        if self.version == 2:
            (self.path / "memory.max").write_text(str(limit_bytes))
            if (self.path / "memory.swap.max").exists():
                (self.path / "memory.swap.max").write_text("0")
            got = (self.path / "memory.max").read_text().strip()
        else:
            (self.path / "memory.limit_in_bytes").write_text(str(limit_bytes))
            # memsw (memory + swap) must be set after, and not below, the memory limit.
            if (self.path / "memory.memsw.limit_in_bytes").exists():
                (self.path / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))
            got = (self.path / "memory.limit_in_bytes").read_text().strip()
        if not got.isdigit() or int(got) > limit_bytes:
            raise LabError(f"memory limit on {self.path} did not apply (reads {got!r})")

    def oom_kills(self) -> int:
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        return parse_flat_keyed((self.path / name).read_text()).get("oom_kill", 0)

    def pids(self) -> list[int]:
        try:
            return [int(x) for x in self.procs_file.read_text().split()]
        except OSError:
            return []

    def remove(self) -> None:
        """SIGKILL what is left inside (only processes we put there), then rmdir."""
        deadline = time.monotonic() + 5.0
        while self.path.exists():
            for pid in self.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def _cgroup_base() -> tuple[Path | None, int, str]:
    """Where a child memory cgroup can be made: (directory, version, "") or (None, 0, why not)."""
    try:
        mounts = cgroup_mounts(Path("/proc/self/mountinfo").read_text())
        own = parse_proc_cgroup(Path("/proc/self/cgroup").read_text())
    except OSError as exc:
        return None, 0, f"cannot read the cgroup mounts ({exc})"
    if "v2" in mounts:
        root = Path(mounts["v2"][0])
        try:
            if "memory" in (root / "cgroup.subtree_control").read_text().split():
                return root, 2, ""
        except OSError:
            pass
    if "v1" in mounts and "memory" in own:
        base = Path(mounts["v1"][0]) / own["memory"].lstrip("/")
        if (base / "memory.limit_in_bytes").exists():
            return base, 1, ""
    return None, 0, ("needs a memory cgroup: cgroup2 at /sys/fs/cgroup has no memory controller enabled for its "
                     "children and no cgroup v1 memory controller is mounted")


def memcg_unmet() -> str | None:
    """Why no memory cgroup can be made here, or None."""
    base, _version, why = _cgroup_base()
    if base is None:
        return why
    if not os.access(base, os.W_OK):
        return f"cannot create cgroups under {base}"
    return None


def remove_stale_cgroups() -> None:
    """Remove lab cgroups whose sandbox directory no longer exists (a killed run's)."""
    base, version, _why = _cgroup_base()
    if base is None:
        return
    for d in base.glob(PREFIX + "*"):
        if d.is_dir() and not (BASE_DIR / d.name).exists():
            MemCgroup(d, version).remove()


def make_cgroup(sb: Sandbox) -> MemCgroup:
    """A fresh memory cgroup named after the sandbox; LabError when none can be had."""
    base, version, why = _cgroup_base()
    if base is None:
        raise LabError(why)
    path = base / sb.root.name
    path.mkdir()
    return MemCgroup(path, version)


# ---- scenarios ----------------------------------------------------------------------------


class OomKillWorker(Scenario):
    name = "memory-oom-kill"
    condition = "memory-oom"
    description = (f"a PHP-FPM-like master (lab-fpm-master) runs in its own memory cgroup limited to "
                   f"{MEMORY_LIMIT_BYTES // MIB} MiB without swap; its worker (lab-fpm-worker) allocates until the "
                   "kernel's OOM killer kills it (SIGKILL); the master logs the death and stays")
    symptoms = (
        "the site returns 502 Bad Gateway now and then",
        "PHP-FPM's log says a child exited on signal 9; the app's own log shows no error",
    )
    needs = Needs(commands=(), kernel=(), check=memcg_unmet)

    def __init__(self) -> None:
        super().__init__()
        self.cgroup: MemCgroup | None = None
        self.log: Path | None = None

    def setup(self, sb: Sandbox) -> None:
        remove_stale_cgroups()
        self.cgroup = make_cgroup(sb)
        self.cgroup.set_limit(MEMORY_LIMIT_BYTES)
        self.log = sb.write_text("php-fpm.log", "")

    def inject(self, sb: Sandbox) -> None:
        assert self.cgroup is not None and self.log is not None
        before = self.cgroup.oom_kills()
        sb.spawn([child_python(), "-I", "-c", _MASTER, str(self.cgroup.procs_file), str(self.log), str(ALLOC_CAP_BYTES)],
                 log="master.out")
        deadline = time.monotonic() + 30
        while "exited" not in self.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        text = self.log.read_text()
        kills = self.cgroup.oom_kills() - before
        if "exited on signal 9" not in text or kills < 1:
            raise LabError(f"the worker was not OOM-killed (cgroup oom_kill +{kills}); log: {text.strip()[-300:]}")
        self.injected.append(f"cgroup v{self.cgroup.version} {self.cgroup.path} limited to {MEMORY_LIMIT_BYTES // MIB} MiB; "
                             f"the kernel OOM-killed lab-fpm-worker ({kills} kill(s) counted)")

    def teardown(self, sb: Sandbox) -> None:
        if self.cgroup is not None:
            self.cgroup.remove()

    def profile(self, sb: Sandbox) -> str:
        return profile_toml(name=f"lab-{self.name}", user="root", logs=[str(self.log)], services=["lab-fpm-master"])


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class CpuSaturation(Scenario):
    name = "cpu-saturation"
    condition = "cpu-saturation"
    description = ("4 busy processes per CPU (lab-burner, at nice 19 so the rest of the machine keeps its share) "
                   "run until the lab stops them; staged once PSI CPU pressure and the 1-minute load are high")
    symptoms = (
        "every page is slow; nothing errors",
        "top shows no idle CPU and many processes sharing it",
    )
    needs = Needs(commands=(("nice", "coreutils"),), kernel=(("/proc/loadavg", "the load average"),))
    per_cpu = 4
    #: How long inject waits for the load average to climb (it follows with a 1-minute time constant).
    settle_s = 60.0

    def inject(self, sb: Sandbox) -> None:
        cpus = _cpus()
        count = self.per_cpu * cpus
        for i in range(count):
            sb.spawn(["nice", "-n", "19", child_python(), "-I", "-c", _BURN, "lab-burner"], log=f"burner-{i}.out")
        deadline = time.monotonic() + self.settle_s
        load, some = 0.0, 0.0
        while time.monotonic() < deadline:
            load = parse_loadavg(Path("/proc/loadavg").read_text())["load1"]
            try:
                some = parse_psi(Path("/proc/pressure/cpu").read_text())["some"]["avg10"]
            except OSError:
                some = 100.0  # no PSI here: only the load can be waited for
            if load >= 1.6 * cpus and some >= 40:
                break
            time.sleep(0.5)
        self.injected.append(f"{count} busy processes on {cpus} CPU(s): load {load:.2f}, PSI cpu some avg10 {some:.0f} %")

    def profile(self, sb: Sandbox) -> str:
        return profile_toml(name=f"lab-{self.name}", user="root")


class RunawayProcess(Scenario):
    name = "runaway-process"
    condition = "runaway-process"
    description = (f"one process (lab-spinner) spins in an endless loop for {RUNAWAY_MIN_AGE_S + 5:.0f} s before "
                   "the diagnosis, and on until the lab stops it")
    symptoms = (
        "the site got slower after a deploy; one process sits at 100 % CPU in top",
        "restarting PHP-FPM helped for a while",
    )
    needs = Needs(commands=(), kernel=())

    def inject(self, sb: Sandbox) -> None:
        proc = sb.spawn([child_python(), "-I", "-c", _BURN, "lab-spinner"], log="spinner.out")
        time.sleep(RUNAWAY_MIN_AGE_S + 5)
        ticks = sum(int(x) for x in Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()[11:13])
        self.injected.append(f"lab-spinner (pid {proc.pid}) used {ticks / 100:.1f} s of CPU in {RUNAWAY_MIN_AGE_S + 5:.0f} s")

    def profile(self, sb: Sandbox) -> str:
        return profile_toml(name=f"lab-{self.name}", user="root")
