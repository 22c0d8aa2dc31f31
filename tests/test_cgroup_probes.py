"""cgroup v1 and v2 alike, and OOM kills judged against what fails now.

cgroup v1: fixture hosts captured from the lab on this machine, whose memory and pids
controllers are v1 (tests/fixtures/capture.py --areas): a worker OOM-killed in a 32 MiB cgroup
(memory-oom-kill-v1), a master refused forks at pids.max 8 (processes-pid-exhaustion), a
working set thrashing a swap file at its cgroup's limit (memory-swap-thrashing) and a leaking
worker (memory-leak).

cgroup v2: this machine's unified hierarchy offers only hugetlb, so v2 cannot run here. The
``_v2_host`` trees stand in for a v2 host: files at their real paths in the exact formats of
the kernel's cgroup v2 interface (Documentation/admin-guide/cgroup-v2.rst: memory.events,
memory.events.local, memory.max, pids.events ...) and a dmesg in the format of mm/oom_kill.c
and mm/memcontrol.c of Linux 6.x.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from prodx.host.fixture import FixtureHost
from prodx.model import Finding, FindingState
from prodx.probes.base import ProbeContext, Target
from prodx.probes.logs import LogSignaturesProbe
from prodx.probes.memcg import CgroupMemoryProbe
from prodx.probes.memory import MemoryActivityProbe
from prodx.probes.oom import OomKillerProbe
from prodx.probes.processes import LimitsProbe
from prodx.probes.runner import run_probes

MIB = 1 << 20
HOSTS = Path(__file__).parent / "fixtures" / "hosts"
PRESENT, ABSENT = FindingState.PRESENT, FindingState.ABSENT


def _run(kb, host, probes, target: Target) -> dict[str, Finding]:
    ctx = ProbeContext(host, target, kb)
    found, runs = run_probes([p() for p in probes], ctx, deadline_s=30.0)
    assert all(r.status.value == "ok" for r in runs), [(r.name, r.status.value, r.detail) for r in runs]
    return {f.id: f for f in found}


def _replay(kb, name: str, probes) -> dict[str, Finding]:
    directory = HOSTS / name
    app = tomllib.loads((directory / "profile.toml").read_text())["app"]
    target = Target(services=app["services"], logs=app["logs"], services_from_profile=True)
    return _run(kb, FixtureHost(directory), probes, target)


# ---- cgroup v1, captured on this machine ---------------------------------------------------


def test_cgroup_probe_on_captured_v1_oom_kill_reads_limit_peak_and_oom_control(kb):
    found = _replay(kb, "memory-oom-kill-v1", (OomKillerProbe, CgroupMemoryProbe))
    hit = found["memory.cgroup_limit_hit"]
    assert hit.state is PRESENT
    (group,) = hit.evidence["cgroups"]
    assert group["version"] == 1 and group["processes"] == ["lab-fpm-master"]
    assert group["limit_bytes"] == group["memsw_limit_bytes"] == 32 * MIB
    assert group["peak_bytes"] == 32 * MIB  # memory.max_usage_in_bytes: it reached the limit
    assert group["oom_kills"] == 1 and group["under_oom"] == 0
    # The kernel's own line says the same: CONSTRAINT_MEMCG at that cgroup.
    assert hit.evidence["logged"][-1]["limit_memcg"] == group["cgroup"].removeprefix("/sys/fs/cgroup/memory")


def test_oom_probe_on_captured_v1_host_keeps_the_earlier_lab_kills_apart(kb):
    """The capture's dmesg holds earlier drills' kills (their cgroups removed) and a
    throwaway test's (a bare python3): only the kill in the cgroup that still exists bears on now."""
    found = _replay(kb, "memory-oom-kill-v1", (OomKillerProbe,))
    recent, unrelated = found["memory.oom_kill_recent"], found["memory.oom_kill_unrelated"]
    assert recent.state is PRESENT and unrelated.state is PRESENT
    (victim,) = recent.evidence["victims"]
    assert victim["name"] == "lab-fpm-worker" and "still exists" in victim["why"]
    assert unrelated.evidence["count"] >= 5
    for old in unrelated.evidence["victims"]:
        assert not old["bears_on_now"] and "is gone" in old["why"]
        assert old["when"] < victim["when"]
    assert any(v["name"] == "python3" for v in unrelated.evidence["victims"])  # python3 runs, but says nothing


def test_limits_probe_on_captured_v1_pids_cgroup_reads_max_current_and_refused_forks(kb):
    found = _replay(kb, "processes-pid-exhaustion", (LimitsProbe,))
    near, hit = found["process.pid_near_limit"], found["process.pids_limit_hit"]
    assert near.state is PRESENT and hit.state is PRESENT
    (group,) = hit.evidence["cgroups"]
    assert group["version"] == 1 and group["cgroup"].startswith("/sys/fs/cgroup/pids/")
    assert (group["current"], group["max"]) == (8, 8) and group["refused"] >= 1
    assert near.evidence["limits"][0]["cgroup"] == group["cgroup"]


def test_log_probe_on_captured_pid_exhaustion_reads_the_fork_failures(kb):
    found = _replay(kb, "processes-pid-exhaustion", (LogSignaturesProbe,))
    fork = found["log.fork_failed"]
    assert fork.state is PRESENT
    assert "fork() failed: Resource temporarily unavailable (11)" in fork.evidence["hits"][0]["example"]


def test_cgroup_probe_on_captured_v1_thrashing_measures_major_faults_at_the_limit(kb):
    found = _replay(kb, "memory-swap-thrashing", (CgroupMemoryProbe, MemoryActivityProbe))
    thrash = found["memory.cgroup_thrashing"]
    assert thrash.state is PRESENT
    (group,) = thrash.evidence["cgroups"]
    assert group["limit_bytes"] == 48 * MIB and group["usage_bytes"] >= 0.9 * 48 * MIB
    assert group["swap_bytes"] >= 64 * MIB  # memsw usage minus usage: the rest of the working set
    assert group["majfaults_per_s"] >= 256
    assert found["memory.cgroup_limit_hit"].state is ABSENT  # swapping, not killing
    assert found["memory.swapping_in"].state is PRESENT


def test_activity_probe_on_captured_leak_names_the_growing_worker_and_its_siblings(kb):
    found = _replay(kb, "memory-leak", (MemoryActivityProbe,))
    growing, outgrown = found["memory.process_growing_now"], found["memory.worker_outgrown"]
    assert growing.state is PRESENT and outgrown.state is PRESENT
    (worker,) = outgrown.evidence["workers"]
    assert worker["name"] == "lab-app-worker" and worker["siblings"] == 3 and worker["times_median"] >= 10
    leaker = next(p for p in growing.evidence["processes"] if p["pid"] == worker["pid"])
    assert 2 * MIB <= leaker["rate_bytes_s"] <= 4 * MIB  # the scenario leaks 3 MiB/s
    assert leaker["rss_bytes"] == leaker["peak_bytes"] and leaker["age_s"] >= 30


# ---- cgroup v2, stand-in trees ---------------------------------------------------------------

NOW = 1717243200.0  # 2024-06-01T12:00:00Z
UPTIME_S = 90000.0
SERVICE = "/system.slice/php8.2-fpm.service"
MOUNTINFO = (
    "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
    "25 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw\n"
    "30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"
)


def _kill_lines(at_uptime_s: float, pid: int, name: str, memcg: str) -> str:
    """A memcg OOM kill as Linux 6.x prints it (mm/oom_kill.c, mm/memcontrol.c)."""
    t = f"[{at_uptime_s:12.6f}]"
    return (
        f"{t} {name} invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0\n"
        f"{t} memory: usage 524288kB, limit 524288kB, failcnt 0\n"
        f"{t} swap: usage 0kB, limit 9007199254740988kB, failcnt 0\n"
        f"{t} Memory cgroup stats for {memcg}:\n"
        f"{t} oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg={memcg},"
        f"task_memcg={memcg},task={name},pid={pid},uid=33\n"
        f"{t} Memory cgroup out of memory: Killed process {pid} ({name}) total-vm:412344kB, anon-rss:180224kB, "
        f"file-rss:10240kB, shmem-rss:8192kB, UID:33 pgtables:520kB oom_score_adj:0\n"
    )


def _v2_host(tmp: Path, *, dmesg: str, cgroups: dict[str, dict[str, str]], procs: list[tuple[int, str, str, str]],
             files: dict[str, str] | None = None) -> FixtureHost:
    """A v2 host: ``cgroups`` maps a cgroup path to its interface files, ``procs`` lists
    (pid, comm, command line, cgroup) of the running processes."""
    root = tmp / "root"

    def put(path: str, text: str) -> None:
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_text(text)

    put("/proc/self/mountinfo", MOUNTINFO)
    put("/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n")
    put("/proc/uptime", f"{UPTIME_S:.2f} 170000.00\n")
    put("/proc/sys/kernel/pid_max", "4194304\n")
    put("/proc/sys/kernel/threads-max", "191204\n")
    put("/proc/loadavg", f"0.52 0.41 0.30 2/{len(procs) + 150} 9999\n")
    for path, interface in cgroups.items():
        for name, text in interface.items():
            put(f"/sys/fs/cgroup{path}/{name}", text)
    processes = []
    for pid, comm, cmdline, cgroup in procs:
        put(f"/proc/{pid}/cgroup", f"0::{cgroup}\n")
        put(f"/proc/{pid}/stat", f"{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 100 0 0 0 10 5 0 0 20 0 1 0 100 "
                                 "200000000 5000 18446744073709551615\n")
        processes.append({"pid": pid, "name": comm, "user": "www-data", "uid": 33, "cmdline": cmdline.split(),
                          "create_time": NOW - 3600})
    for path, text in (files or {}).items():
        put(path, text)
    (tmp / "host.json").write_text(json.dumps({
        "hostname": "web1", "now": NOW, "is_root": True, "effective_uid": 0, "processes": processes,
        "commands": [{"argv": ["dmesg"], "returncode": 0, "stdout": dmesg, "stderr": ""}],
    }))
    return FixtureHost(tmp)


def _service_cgroup(*, events: str, local: str | None, current: int = 120 * MIB, maximum: str = "536870912\n",
                    pids: tuple[str, str, str] = ("64\n", "12\n", "max 0\n")) -> dict[str, str]:
    out = {"memory.max": maximum, "memory.current": f"{current}\n", "memory.peak": "536870912\n",
           "memory.events": events, "memory.swap.max": "max\n", "memory.swap.current": "0\n",
           "pids.max": pids[0], "pids.current": pids[1], "pids.events": pids[2]}
    if local is not None:
        out["memory.events.local"] = local
    return out


FPM = [(4242, "php-fpm8.2", "php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)", SERVICE),
       (4302, "php-fpm8.2", "php-fpm: pool www", SERVICE), (4303, "php-fpm8.2", "php-fpm: pool www", SERVICE)]
KILLED = "low 0\nhigh 0\nmax 1289\noom 3\noom_kill 3\noom_group_kill 0\n"
QUIET = "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n"


def test_cgroup_probe_on_a_v2_service_that_oomed_reads_memory_events_local(tmp_path, kb):
    """Stands in for a cgroup v2 host (see the module docstring)."""
    host = _v2_host(tmp_path, dmesg=_kill_lines(UPTIME_S - 300, 4301, "php-fpm8.2", SERVICE),
                    cgroups={SERVICE: _service_cgroup(events=KILLED, local=KILLED)}, procs=FPM)
    found = _run(kb, host, (OomKillerProbe, CgroupMemoryProbe), Target(services=["php8.2-fpm"], services_from_profile=True))
    hit = found["memory.cgroup_limit_hit"]
    assert hit.state is PRESENT
    (group,) = hit.evidence["cgroups"]
    assert group["version"] == 2 and group["cgroup"] == "/sys/fs/cgroup" + SERVICE
    assert (group["limit_bytes"], group["ooms"], group["oom_kills"], group["max_events"]) == (512 * MIB, 3, 3, 1289)
    assert group["swap_limit_bytes"] is None  # memory.swap.max "max"
    (victim,) = found["memory.oom_kill_recent"].evidence["victims"]
    assert victim["bears_on_now"] and victim["ago_s"] == 300
    assert "still exists" in victim["why"] and "part of the service php8.2-fpm" in victim["why"]
    assert found["memory.oom_kill_unrelated"].state is ABSENT


def test_cgroup_probe_on_v2_does_not_take_a_child_cgroups_kill_for_its_own_limit(tmp_path, kb):
    """Stands in for a cgroup v2 host: memory.events counts the kills of every cgroup below
    (a job cgroup since removed); memory.events.local, this cgroup's own, counts none, and it
    has no limit of its own. The kernel log has no line bearing on it either."""
    app = "/system.slice/app.service"
    host = _v2_host(tmp_path, dmesg="[   10.000000] EXT4-fs (vda1): mounted filesystem\n",
                    cgroups={app: _service_cgroup(events=KILLED, local=QUIET, maximum="max\n")},
                    procs=[(5000, "gunicorn", "/usr/bin/python3 /usr/bin/gunicorn app:app", app)])
    found = _run(kb, host, (OomKillerProbe, CgroupMemoryProbe), Target(services=["gunicorn"], services_from_profile=True))
    assert found["memory.cgroup_limit_hit"].state is ABSENT
    assert found["memory.oom_kill_recent"].state is ABSENT


def test_cgroup_probe_counts_a_kernel_memcg_line_as_a_limit_hit_when_the_counters_are_gone(tmp_path, kb):
    """Stands in for a cgroup v2 host whose container was recreated: the OOM happened in a
    cgroup that no longer exists, the new one has counted nothing, but the kernel's
    CONSTRAINT_MEMCG line names a victim of the program that runs again now."""
    old, new = "/system.slice/docker-0a1b2c.scope", "/system.slice/docker-9f8e7d.scope"
    host = _v2_host(tmp_path, dmesg=_kill_lines(UPTIME_S - 120, 777, "php-fpm8.2", old),
                    cgroups={new: _service_cgroup(events=QUIET, local=QUIET)},
                    procs=[(9001, "php-fpm8.2", "php-fpm: master process (/usr/local/etc/php-fpm.conf)", new),
                           (9002, "php-fpm8.2", "php-fpm: pool www", new)])
    found = _run(kb, host, (OomKillerProbe, CgroupMemoryProbe), Target())
    hit = found["memory.cgroup_limit_hit"]
    assert hit.state is PRESENT and hit.evidence["cgroups"] == []
    assert hit.evidence["logged"][0]["limit_memcg"] == old
    (victim,) = found["memory.oom_kill_recent"].evidence["victims"]
    assert "2 process(es) named php-fpm8.2 run now" in victim["why"]


def test_oom_probe_keeps_a_kill_of_a_gone_interpreter_apart_though_python3_runs(tmp_path, kb):
    """Stands in for a cgroup v2 host: a one-off python3 job was killed in a transient scope
    since removed; other python3 processes run, but a bare interpreter name says nothing."""
    job = "/system.slice/run-u42.scope"
    host = _v2_host(tmp_path, dmesg=_kill_lines(UPTIME_S - 60, 4444, "python3", job),
                    cgroups={SERVICE: _service_cgroup(events=QUIET, local=QUIET)},
                    procs=[*FPM, (6000, "python3", "/usr/bin/python3 /opt/tools/report.py", SERVICE)])
    found = _run(kb, host, (OomKillerProbe, CgroupMemoryProbe), Target())
    assert found["memory.oom_kill_recent"].state is ABSENT
    (victim,) = found["memory.oom_kill_unrelated"].evidence["victims"]
    assert victim["why"] == f"its cgroup {job} is gone and nothing named python3 runs now or is a service of the app"
    assert found["memory.cgroup_limit_hit"].state is ABSENT


def test_oom_probe_judges_a_kill_long_before_the_apps_first_error_as_earlier(tmp_path, kb):
    """Stands in for a cgroup v2 host: a PHP-FPM worker was OOM-killed at 09:45; the app's
    log is quiet until 12:00 - 15 min, when its database refuses connections. The kill is
    the service's, but it did not start the failure at hand."""
    log = "/srv/shop/var/log/prod.log"
    lines = "".join(f"[2024-06-01T11:{m:02d}:00.000000+00:00] app.ERROR: SQLSTATE[08006] [7] could not connect to "
                    "server: Connection refused\n" for m in range(45, 60))
    host = _v2_host(tmp_path, dmesg=_kill_lines(UPTIME_S - 8100, 4301, "php-fpm8.2", SERVICE),
                    cgroups={SERVICE: _service_cgroup(events=KILLED, local=KILLED)}, procs=FPM, files={log: lines})
    found = _run(kb, host, (OomKillerProbe,), Target(services=["php8.2-fpm"], logs=[log], services_from_profile=True))
    assert found["memory.oom_kill_recent"].state is ABSENT
    (victim,) = found["memory.oom_kill_unrelated"].evidence["victims"]
    assert victim["why"].endswith(f"but it came 2.0 h before the first error in the app's logs ({log})")
    assert found["memory.oom_kill_unrelated"].evidence["first_error"]["first_ts"].startswith("2024-06-01T11:45")


def test_limits_probe_on_a_v2_service_reads_pids_max_and_the_forks_refused(tmp_path, kb):
    """Stands in for a cgroup v2 host: php-fpm's unit at TasksMax=64, 17 forks refused."""
    host = _v2_host(tmp_path, dmesg="", procs=FPM,
                    cgroups={SERVICE: _service_cgroup(events=QUIET, local=QUIET, pids=("64\n", "64\n", "max 17\n"))})
    found = _run(kb, host, (LimitsProbe,), Target(services=["php8.2-fpm"], services_from_profile=True))
    hit, near = found["process.pids_limit_hit"], found["process.pid_near_limit"]
    assert hit.state is PRESENT and near.state is PRESENT
    (group,) = hit.evidence["cgroups"]
    assert (group["version"], group["cgroup"], group["max"], group["current"], group["refused"]) == (
        2, "/sys/fs/cgroup" + SERVICE, 64, 64, 17)


def test_limits_probe_on_a_v2_service_far_from_pids_max_reports_both_absent(tmp_path, kb):
    """Stands in for a cgroup v2 host: TasksMax=64 with 12 tasks and no fork refused."""
    host = _v2_host(tmp_path, dmesg="", procs=FPM, cgroups={SERVICE: _service_cgroup(events=QUIET, local=QUIET)})
    found = _run(kb, host, (LimitsProbe,), Target(services=["php8.2-fpm"], services_from_profile=True))
    assert found["process.pids_limit_hit"].state is ABSENT
    assert found["process.pid_near_limit"].state is ABSENT
