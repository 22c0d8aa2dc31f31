"""Task limits, for real: a PHP-FPM-like master in a pids cgroup (v2 where the kernel offers
the controller, else v1) whose pids.max is below the workers it wants; fork() fails with
EAGAIN and the master logs it as php-fpm does, once a second.

Only the scenario's own processes are confined: the limit binds inside its cgroup alone, and
the cgroup (named after the sandbox) is removed at teardown and at the next staging after a
killed run.
"""

from __future__ import annotations

import time
from pathlib import Path

from prodx.lab.framework import Needs, Scenario, profile_toml
from prodx.lab.sandbox import LabError, Sandbox, wait_until
from prodx.lab.scenarios.cgroups import LabCgroup, cgroup_unmet, make_cgroup, remove_stale_cgroups
from prodx.lab.scenarios.common import child_python

#: Tasks the cgroup may hold: the master and seven workers ...
PIDS_MAX = 8
#: ... of the sixteen it is configured for (pm.max_children).
WANTED_CHILDREN = 16

#: The master: joins the cgroup, starts workers up to argv[3], and retries every second while
#: fork() fails, logging each failure with strerror and errno as php-fpm's zlog does.
_FORKER = r"""
import os, signal, sys, time
procs, log, children = sys.argv[1], sys.argv[2], int(sys.argv[3])
def say(msg):
    with open(log, "a") as fh:
        fh.write(time.strftime("[%d-%b-%Y %H:%M:%S] ") + msg + "\n")
with open(procs, "w") as fh:
    fh.write(str(os.getpid()))
with open("/proc/self/comm", "w") as fh:
    fh.write("lab-pool-master")
say("NOTICE: fpm is running, pid %d" % os.getpid())
kids = 0
while True:
    while kids < children:
        try:
            pid = os.fork()
        except OSError as exc:
            say("ERROR: fork() failed: %s (%d)" % (os.strerror(exc.errno), exc.errno))
            break
        if pid == 0:
            with open("/proc/self/comm", "w") as fh:
                fh.write("lab-pool-worker")
            while True:
                signal.pause()
        kids += 1
        say("NOTICE: [pool www] child %d started" % pid)
    time.sleep(1.0)
"""


class PidExhaustion(Scenario):
    name = "pid-exhaustion"
    condition = "pid-exhaustion"
    description = (f"a PHP-FPM-like master (lab-pool-master) configured for {WANTED_CHILDREN} workers runs in a pids "
                   f"cgroup with pids.max {PIDS_MAX}: once it holds {PIDS_MAX} tasks, fork() fails with EAGAIN and "
                   "the master logs \"fork() failed: Resource temporarily unavailable (11)\" every second")
    symptoms = (
        "some requests get 502 while the server has plenty of memory and CPU",
        "the PHP-FPM log says fork() failed: Resource temporarily unavailable",
    )
    needs = Needs(commands=(), kernel=(), check=lambda: cgroup_unmet("pids"))
    visible_without_profile = True

    def __init__(self) -> None:
        super().__init__()
        self.cgroup: LabCgroup | None = None
        self.log: Path | None = None

    def setup(self, sb: Sandbox) -> None:
        remove_stale_cgroups()
        self.cgroup = make_cgroup(sb, "pids")
        self.cgroup.write("pids.max", PIDS_MAX)
        if self.cgroup.read("pids.max").strip() != str(PIDS_MAX):
            raise LabError(f"pids.max on {self.cgroup.path} did not apply")
        self.log = sb.write_text("php-fpm.log", "")

    def inject(self, sb: Sandbox) -> None:
        assert self.cgroup is not None and self.log is not None
        cg, log = self.cgroup, self.log
        sb.spawn([child_python(), "-I", "-c", _FORKER, str(cg.procs_file), str(log), str(WANTED_CHILDREN)], log="master.out")
        wait_until(lambda: log.read_text().count("fork() failed") >= 2, 20,
                   f"the master never hit pids.max {PIDS_MAX}: {log.read_text()[-300:]}")
        refused = cg.counters("pids.events").get("max", 0) if cg.has("pids.events") else 0
        current = int(cg.read("pids.current"))
        if current != PIDS_MAX or refused < 1:
            raise LabError(f"pids.current {current} of {PIDS_MAX}, {refused} fork(s) refused: the limit did not bind")
        self.injected.append(f"cgroup v{cg.version} {cg.path}: pids.current {current} of pids.max {PIDS_MAX}; "
                             f"{refused} fork(s) refused so far (pids.events max); the master logs each")
        time.sleep(0.5)

    def profile(self, sb: Sandbox) -> str:
        return profile_toml(name=f"lab-{self.name}", user="root", logs=[str(self.log)], services=["lab-pool-master"])
