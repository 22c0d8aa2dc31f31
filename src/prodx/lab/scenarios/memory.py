"""Memory and CPU faults, for real: the kernel OOM-kills a worker inside a memory cgroup with a
small limit (cgroup v2 where the kernel offers it, and explicitly v1), a worker leaks memory, a
workload thrashes a swap file inside a small memory cgroup, many busy processes saturate the
CPUs, one process spins on a core.

None of them risks the machine: every workload lives in its own memory cgroup
(``prodx.lab.scenarios.cgroups``, named after the sandbox, removed at teardown and at the next
staging after a killed run) and caps its own allocation below that limit whatever happens; the
swap file is small, private to the sandbox and swapped off at teardown before anything removes it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import ClassVar

from prodx.lab.framework import Needs, Scenario, profile_toml
from prodx.lab.sandbox import LabError, Sandbox
from prodx.lab.scenarios.cgroups import LabCgroup, cgroup_base, cgroup_unmet, make_cgroup, remove_stale_cgroups
from prodx.lab.scenarios.common import child_python
from prodx.probes.cpu import RUNAWAY_MIN_AGE_S, parse_loadavg, parse_psi
from prodx.probes.memory import GROWTH_MIN_AGE_S, memory_pressure_high, parse_vmstat

MIB = 1 << 20
#: The OOM worker's cgroup limit: far below what it tries to allocate.
MEMORY_LIMIT_BYTES = 32 * MIB
#: The OOM worker never allocates more than this, so a limit that failed to apply cannot hurt the host.
ALLOC_CAP_BYTES = 256 * MIB
#: The leaking worker grows this fast ...
LEAK_BYTES_S = 3 * MIB
#: ... up to this much, inside a cgroup limited to LEAK_LIMIT_BYTES.
LEAK_CAP_BYTES = 448 * MIB
LEAK_LIMIT_BYTES = 640 * MIB
#: The thrashing workload: THRASH_WORKERS workers with a working set of THRASH_SET_BYTES
#: between them in a cgroup holding THRASH_LIMIT_BYTES of RAM, the rest in a swap file of
#: SWAP_FILE_BYTES ...
THRASH_WORKERS = 2
THRASH_SET_BYTES = 128 * MIB
#: Room for the interpreters and page tables besides the resident part of the set: with
#: less, reclaim cannot keep up on a busy disk and the cgroup OOM-kills instead of thrashing.
THRASH_LIMIT_BYTES = 48 * MIB
SWAP_FILE_BYTES = 128 * MIB
#: ... written at up to this many random pages a second (24 MiB/s each with 4 KiB pages: thrashing,
#: not a disk benchmark; the disk's latency keeps it well below).
THRASH_PAGES_S = 6144
#: Staged once PSI memory pressure is this far clear of the thresholds the probe uses.
THRASH_PSI_MARGIN = 1.2

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

#: An app server master (lab-app-master) with four workers (lab-app-worker) forked from it, so
#: they share its command line; worker 0 keeps every "request"'s 256 KiB (a leak) at
#: argv[2] bytes a second up to argv[3], then holds it; the others stay small.
_LEAKER = r"""
import os, signal, sys, time
procs, rate, cap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(procs, "w") as fh:
    fh.write(str(os.getpid()))
with open("/proc/self/comm", "w") as fh:
    fh.write("lab-app-master")
for n in range(4):
    if os.fork() == 0:
        with open("/proc/self/comm", "w") as fh:
            fh.write("lab-app-worker")
        if n:
            while True:
                signal.pause()
        held, step, t0 = [], 262144, time.monotonic()
        while len(held) * step < cap:
            held.append(b"\x02" * step)
            ahead = len(held) * step / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
        while True:
            signal.pause()
while True:
    signal.pause()
"""

#: A worker (named argv[4]) whose working set (argv[2] bytes, anonymous) no longer fits in its cgroup: it
#: writes pages in a random order (as a heap or a cache is used, so swap readahead cannot
#: guess the next one) at up to argv[3] pages a second; most writes fault a page back in from swap.
_THRASHER = r"""
import mmap, os, random, sys, time
procs, size, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(procs, "w") as fh:
    fh.write(str(os.getpid()))
with open("/proc/self/comm", "w") as fh:
    fh.write(sys.argv[4])
buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
page, i, t0 = mmap.PAGESIZE, 0, time.monotonic()
pages, pick = size // page, random.Random(4).randrange
for n in range(size // page):
    buf[n * page] = 1
while True:
    for _ in range(64):
        buf[pick(pages) * page] = (i % 255) + 1
        i += 1
    ahead = i / rate - (time.monotonic() - t0)
    if ahead > 0:
        time.sleep(ahead)
"""

#: A busy loop that names itself (argv[1]) so the evidence shows what it is.
_BURN = r"""
import sys
with open("/proc/self/comm", "w") as fh:
    fh.write(sys.argv[1])
while True:
    pass
"""


def limit_memory(cg: LabCgroup, limit_bytes: int, swap_bytes: int = 0) -> None:
    """Limit ``cg`` to ``limit_bytes`` of RAM and ``swap_bytes`` of swap; LabError unless it
    reads back."""
    if cg.version == 2:
        cg.write("memory.max", limit_bytes)
        if cg.has("memory.swap.max"):
            cg.write("memory.swap.max", swap_bytes)
        elif swap_bytes:
            raise LabError(f"{cg.path}: no memory.swap.max (swap accounting is off in this kernel)")
        got = cg.read("memory.max").strip()
    else:
        cg.write("memory.limit_in_bytes", limit_bytes)
        # memsw (memory + swap) must be set after, and not below, the memory limit.
        if cg.has("memory.memsw.limit_in_bytes"):
            cg.write("memory.memsw.limit_in_bytes", limit_bytes + swap_bytes)
        elif swap_bytes:
            raise LabError(f"{cg.path}: no memory.memsw.limit_in_bytes (swap accounting is off in this kernel)")
        got = cg.read("memory.limit_in_bytes").strip()
    if not got.isdigit() or int(got) > limit_bytes:
        raise LabError(f"memory limit on {cg.path} did not apply (reads {got!r})")


def oom_kills(cg: LabCgroup) -> int:
    """OOM kills the kernel counted in ``cg`` (v2 memory.events, v1 memory.oom_control)."""
    return cg.counters("memory.events" if cg.version == 2 else "memory.oom_control").get("oom_kill", 0)


# ---- scenarios ----------------------------------------------------------------------------


class OomKillWorker(Scenario):
    name = "memory-oom-kill"
    condition = "memory-oom"
    #: None: cgroup v2 where the kernel offers its memory controller, else v1.
    cgroup_version: ClassVar[int | None] = None
    description = (f"a PHP-FPM-like master (lab-fpm-master) runs in its own memory cgroup (v2 where offered, else v1) "
                   f"limited to {MEMORY_LIMIT_BYTES // MIB} MiB without swap; its worker (lab-fpm-worker) allocates until "
                   "the kernel's OOM killer kills it (SIGKILL); the master logs the death and stays")
    symptoms = (
        "the site returns 502 Bad Gateway now and then",
        "PHP-FPM's log says a child exited on signal 9; the app's own log shows no error",
    )
    needs = Needs(commands=(), kernel=(), check=lambda: cgroup_unmet("memory"))

    def __init__(self) -> None:
        super().__init__()
        self.cgroup: LabCgroup | None = None
        self.log: Path | None = None

    def setup(self, sb: Sandbox) -> None:
        remove_stale_cgroups()
        self.cgroup = make_cgroup(sb, "memory", self.cgroup_version)
        limit_memory(self.cgroup, MEMORY_LIMIT_BYTES)
        self.log = sb.write_text("php-fpm.log", "")

    def inject(self, sb: Sandbox) -> None:
        assert self.cgroup is not None and self.log is not None
        before = oom_kills(self.cgroup)
        sb.spawn([child_python(), "-I", "-c", _MASTER, str(self.cgroup.procs_file), str(self.log), str(ALLOC_CAP_BYTES)],
                 log="master.out")
        deadline = time.monotonic() + 30
        while "exited" not in self.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        text = self.log.read_text()
        kills = oom_kills(self.cgroup) - before
        if "exited on signal 9" not in text or kills < 1:
            raise LabError(f"the worker was not OOM-killed (cgroup oom_kill +{kills}); log: {text.strip()[-300:]}")
        self.injected.append(f"cgroup v{self.cgroup.version} {self.cgroup.path} limited to {MEMORY_LIMIT_BYTES // MIB} MiB; "
                             f"the kernel OOM-killed lab-fpm-worker ({kills} kill(s) counted)")

    def profile(self, sb: Sandbox) -> str:
        return profile_toml(name=f"lab-{self.name}", user="root", logs=[str(self.log)], services=["lab-fpm-master"])


class OomKillWorkerV1(OomKillWorker):
    name = "memory-oom-kill-v1"
    cgroup_version = 1
    description = (f"the same OOM kill in a cgroup v1 memory controller (memory.limit_in_bytes and "
                   f"memory.memsw.limit_in_bytes {MEMORY_LIMIT_BYTES // MIB} MiB, memory.oom_control counting the kill), "
                   "for hosts that still mount v1")
    needs = Needs(commands=(), kernel=(), check=lambda: cgroup_unmet("memory", 1))


class MemoryLeak(Scenario):
    name = "memory-leak"
    condition = "memory-leak"
    description = (f"an app server master (lab-app-master) with four workers (lab-app-worker) in a memory cgroup "
                   f"limited to {LEAK_LIMIT_BYTES // MIB} MiB; one worker keeps what every request allocated, "
                   f"{LEAK_BYTES_S // MIB} MiB/s up to {LEAK_CAP_BYTES // MIB} MiB; staged once it has leaked for "
                   f"{GROWTH_MIN_AGE_S + 5:.0f} s")
    symptoms = (
        "the site gets slower every hour and a restart fixes it for a while",
        "one app worker uses far more memory than the others",
    )
    needs = Needs(commands=(), kernel=(), check=lambda: cgroup_unmet("memory"))
    visible_without_profile = True

    def __init__(self) -> None:
        super().__init__()
        self.cgroup: LabCgroup | None = None

    def setup(self, sb: Sandbox) -> None:
        remove_stale_cgroups()
        self.cgroup = make_cgroup(sb, "memory")
        limit_memory(self.cgroup, LEAK_LIMIT_BYTES)

    def inject(self, sb: Sandbox) -> None:
        assert self.cgroup is not None
        sb.spawn([child_python(), "-I", "-c", _LEAKER, str(self.cgroup.procs_file), str(LEAK_BYTES_S), str(LEAK_CAP_BYTES)],
                 log="app.out")
        time.sleep(GROWTH_MIN_AGE_S + 5)
        rss = sorted((worker_rss(pid), pid) for pid in self.cgroup.pids() if _comm(pid) == "lab-app-worker")
        if len(rss) != 4 or rss[-1][0] < 8 * rss[0][0]:
            raise LabError(f"the leaking worker did not outgrow its siblings: RSS {rss}")
        self.injected.append(f"lab-app-worker pid {rss[-1][1]} holds {rss[-1][0] / MIB:.0f} MiB after "
                             f"{GROWTH_MIN_AGE_S + 5:.0f} s, its 3 siblings {rss[0][0] / MIB:.0f}-{rss[-2][0] / MIB:.0f} MiB")

    def profile(self, sb: Sandbox) -> str:
        return profile_toml(name=f"lab-{self.name}", user="root", services=["lab-app-master"])


class SwapThrashing(Scenario):
    name = "swap-thrashing"
    condition = "limit-thrashing"
    accept = ("swap-thrashing",)
    description = (f"a {SWAP_FILE_BYTES // MIB} MiB swap file (this scenario's, swapped off at teardown) and "
                   f"{THRASH_WORKERS} workers (lab-heap-XXXXXX, named after the sandbox) whose "
                   f"{THRASH_SET_BYTES // MIB} MiB working set lives in a memory cgroup of {THRASH_LIMIT_BYTES // MIB} MiB: "
                   f"they page in and out continuously (up to {THRASH_PAGES_S} random pages written a second each)")
    symptoms = (
        "everything is slow, but nothing errors and nothing was killed",
        "vmstat shows si and so in the thousands",
    )
    needs = Needs(commands=(("mkswap", "util-linux"), ("swapon", "mount"), ("swapoff", "mount")),
                  kernel=(("/proc/swaps", "swap support"),), check=lambda: _swap_unmet())
    visible_without_profile = True

    def __init__(self) -> None:
        super().__init__()
        self.cgroup: LabCgroup | None = None
        self.swapfile: Path | None = None
        #: Named after the sandbox: should the kernel ever OOM-kill one, the kill (kept in the
        #: kernel log for a day) concerns this run only, not the next run's workers.
        self.worker_name = ""

    def setup(self, sb: Sandbox) -> None:
        remove_stale_cgroups()
        self.swapfile = sb.path("swapfile")
        with open(self.swapfile, "wb") as fh:  # written, not sparse: swapon refuses files with holes
            for _ in range(SWAP_FILE_BYTES // MIB):
                fh.write(b"\0" * MIB)
        os.chmod(self.swapfile, 0o600)
        sb.swapon(self.swapfile)
        self.cgroup = make_cgroup(sb, "memory")
        limit_memory(self.cgroup, THRASH_LIMIT_BYTES, swap_bytes=SWAP_FILE_BYTES)

    def inject(self, sb: Sandbox) -> None:
        assert self.cgroup is not None
        self.worker_name = "lab-heap-" + sb.root.name[-6:]
        for i in range(THRASH_WORKERS):
            sb.spawn([child_python(), "-I", "-c", _THRASHER, str(self.cgroup.procs_file),
                      str(THRASH_SET_BYTES // THRASH_WORKERS), str(THRASH_PAGES_S), self.worker_name],
                     log=f"worker-{i}.out")
        # Until the working set is in swap and PSI's 10 s average shows the stalls (slower when
        # the disk is busy with others' I/O).
        deadline, psi, stalled, used = time.monotonic() + 60, {}, False, 0
        time.sleep(8)
        while time.monotonic() < deadline:
            try:
                psi = parse_psi(Path("/proc/pressure/memory").read_text())
                stalled = memory_pressure_high(psi, THRASH_PSI_MARGIN)
            except OSError:
                stalled = True  # no PSI here: the swap-in rate alone can be waited for
            used = swap_used_bytes(self.swapfile)
            if stalled and used >= SWAP_FILE_BYTES // 2:
                break
            time.sleep(1)
        first = parse_vmstat(Path("/proc/vmstat").read_text())
        time.sleep(2)
        second = parse_vmstat(Path("/proc/vmstat").read_text())
        rate = (second["pswpin"] - first["pswpin"]) / 2
        kills = oom_kills(self.cgroup)
        some, full = psi.get("some", {}).get("avg10", 0.0), psi.get("full", {}).get("avg10", 0.0)
        if rate < 1024 or used < SWAP_FILE_BYTES // 2 or not stalled or kills:
            raise LabError(f"not thrashing: {rate:.0f} pages/s swapped in, {used / MIB:.0f} MiB of swap used, "
                           f"PSI memory some/full avg10 {some:.1f}/{full:.1f} %, {kills} OOM kill(s) in the cgroup")
        self.injected.append(f"{rate:.0f} pages/s swapped in; {used / MIB:.0f} of {SWAP_FILE_BYTES // MIB} MiB swap used; "
                             f"tasks stalled on memory {some:.0f} % of the last 10 s, all of them {full:.0f} % (PSI); "
                             f"cgroup v{self.cgroup.version} {self.cgroup.path} holds {THRASH_LIMIT_BYTES // MIB} MiB of RAM")

    def profile(self, sb: Sandbox) -> str:
        return profile_toml(name=f"lab-{self.name}", user="root", services=[self.worker_name])


def _swap_unmet() -> str | None:
    """Why the thrashing scenario cannot run here: no memory cgroup that can limit swap."""
    why = cgroup_unmet("memory")
    if why:
        return why
    base, version, _why = cgroup_base("memory")
    assert base is not None
    if version == 1 and not (base / "memory.memsw.limit_in_bytes").exists():
        return "needs swap accounting in the memory cgroup (memory.memsw.*; boot with swapaccount=1)"
    return None


def swap_used_bytes(swapfile: Path | None) -> int:
    """Bytes in use on ``swapfile`` per /proc/swaps (0 when it is not active)."""
    for line in Path("/proc/swaps").read_text().splitlines()[1:]:
        fields = line.split()
        if swapfile is not None and fields and fields[0] == str(swapfile):
            return int(fields[3]) * 1024
    return 0


def worker_rss(pid: int) -> int:
    """VmRSS of ``pid`` in bytes (0 when gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


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
