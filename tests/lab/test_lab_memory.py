"""Memory, CPU and task-limit lab scenarios reproduce their fault for real and prodx diagnoses
it first, with the scenario's profile and without any.

Root only. Every workload lives in its own cgroup named after its sandbox (never a
machine-wide OOM, never the machine's task table): a 32 MiB memory cgroup in which the kernel
OOM-kills a worker (v2 where offered, and explicitly v1), a leaking worker, a working set
thrashing a private swap file at its cgroup's limit, a master refused forks at pids.max, busy
processes saturating the CPUs, one process spinning on a core. After each, the cgroups, the
swap file and the processes are gone.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.lab,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (cgroups, processes)"),
]

MIB = 1 << 20


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def _comm_pids(name: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() == name:
                    out.append(int(d.name))
            except OSError:
                continue
    return out


def _gone(name: str, timeout_s: float = 5.0) -> bool:
    """Whether no process named ``name`` is left once init has reaped the killed grandchildren."""
    deadline = time.monotonic() + timeout_s
    while _comm_pids(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _comm_pids(name) == []


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _active_swaps() -> list[str]:
    return [line.split()[0] for line in Path("/proc/swaps").read_text().splitlines()[1:] if line.split()]


def _vmstat(key: str) -> int:
    return next(int(line.split()[1]) for line in Path("/proc/vmstat").read_text().splitlines() if line.startswith(key + " "))


def _diagnosed_both_ways(lab, run) -> None:
    lab.assert_diagnosed(run)


def _assert_oom_kill(cg, log: Path) -> None:
    assert int(cg.counters("memory.events" if cg.version == 2 else "memory.oom_control")["oom_kill"]) >= 1
    assert "exited on signal 9" in log.read_text()
    masters = _comm_pids("lab-fpm-master")
    assert masters and all(pid in cg.pids() for pid in masters)  # the master lives on in the cgroup
    assert _comm_pids("lab-fpm-worker") == []
    dmesg = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10).stdout
    assert "(lab-fpm-worker)" in dmesg or "task=lab-fpm-worker" in dmesg


def test_memory_oom_kill_scenario_kills_the_worker_in_its_cgroup_and_is_diagnosed_memory_oom(lab) -> None:
    with lab.stage("memory-oom-kill") as run:
        cg = run.scenario.cgroup
        limit_file = "memory.max" if cg.version == 2 else "memory.limit_in_bytes"
        assert int(cg.read(limit_file)) == 32 * MIB
        _assert_oom_kill(cg, run.scenario.log)
        _diagnosed_both_ways(lab, run)
        path = cg.path
    assert not path.exists()


def test_memory_oom_kill_v1_scenario_uses_the_v1_controller_and_is_diagnosed_memory_oom(lab) -> None:
    with lab.stage("memory-oom-kill-v1") as run:
        cg = run.scenario.cgroup
        assert cg.version == 1 and "/sys/fs/cgroup/memory/" in str(cg.path)
        assert int(cg.read("memory.limit_in_bytes")) == 32 * MIB
        if cg.has("memory.memsw.limit_in_bytes"):
            assert int(cg.read("memory.memsw.limit_in_bytes")) == 32 * MIB  # no swap to escape to
        assert int(cg.read("memory.max_usage_in_bytes")) >= 31 * MIB  # it reached the limit
        _assert_oom_kill(cg, run.scenario.log)
        _diagnosed_both_ways(lab, run)
        path = cg.path
    assert not path.exists()


def test_an_oom_kill_left_by_an_earlier_drill_does_not_outweigh_the_next_fault(lab) -> None:
    """The kill stays in dmesg for a day after its drill is gone (cgroup removed, worker dead):
    the next fault still leads, and the kill is counted as unrelated, with nothing in the
    product that knows the lab."""
    with lab.stage("memory-oom-kill-v1") as run:
        victim_cgroup = run.scenario.cgroup.path.name
    with lab.stage("crashed-service") as run:
        lab.assert_diagnosed(run)
        doc = lab.diagnose_json(run)
        states = {f["id"]: f for f in doc["findings"]}
        unrelated = states["memory.oom_kill_unrelated"]
        assert unrelated["state"] == "present"
        assert any(v["memcg"].endswith(victim_cgroup) and "is gone" in v["why"] for v in unrelated["evidence"]["victims"])
        recent = states["memory.oom_kill_recent"]
        assert all(not v["memcg"].endswith(victim_cgroup) for v in recent["evidence"].get("victims", []))


def test_memory_leak_scenario_grows_one_worker_far_above_its_siblings_and_is_diagnosed_memory_leak(lab) -> None:
    with lab.stage("memory-leak") as run:
        cg = run.scenario.cgroup
        workers = [pid for pid in _comm_pids("lab-app-worker") if pid in cg.pids()]
        assert len(workers) == 4
        before = {pid: _status(pid, "VmRSS") for pid in workers}
        time.sleep(1.0)
        after = {pid: _status(pid, "VmRSS") for pid in workers}
        leaker = max(after, key=after.get)
        siblings = sorted(v for pid, v in after.items() if pid != leaker)
        assert after[leaker] >= 64 * MIB and after[leaker] >= 8 * siblings[-1]
        assert after[leaker] - before[leaker] >= 2 * MIB  # still growing: 3 MiB/s
        assert _status(leaker, "VmHWM") - after[leaker] <= MIB  # at its peak
        _diagnosed_both_ways(lab, run)
        path = cg.path
    assert not path.exists() and _gone("lab-app-worker")


def test_swap_thrashing_scenario_pages_a_working_set_through_swap_and_is_diagnosed_swap_thrashing(lab) -> None:
    with lab.stage("swap-thrashing") as run:
        cg, swapfile, workers = run.scenario.cgroup, str(run.scenario.swapfile), run.scenario.worker_name
        assert swapfile in _active_swaps()
        fields = next(line.split() for line in Path("/proc/swaps").read_text().splitlines() if line.startswith(swapfile))
        assert int(fields[3]) * 1024 >= 64 * MIB  # used: the part of the working set that does not fit
        limit = int(cg.read("memory.max" if cg.version == 2 else "memory.limit_in_bytes"))
        usage = int(cg.read("memory.current" if cg.version == 2 else "memory.usage_in_bytes"))
        assert limit == 48 * MIB and usage >= 0.9 * limit
        assert cg.counters("memory.events" if cg.version == 2 else "memory.oom_control")["oom_kill"] == 0  # swaps, no kill
        first = _vmstat("pswpin")
        time.sleep(1.0)
        assert _vmstat("pswpin") - first >= 1024  # pages read back from swap, continuously
        _diagnosed_both_ways(lab, run)
        path = cg.path
    assert swapfile not in _active_swaps() and not Path(swapfile).exists()
    assert not path.exists() and _gone(workers)


def test_pid_exhaustion_scenario_refuses_forks_at_pids_max_and_is_diagnosed_pid_exhaustion(lab) -> None:
    with lab.stage("pid-exhaustion") as run:
        cg = run.scenario.cgroup
        assert int(cg.read("pids.max")) == 8 and int(cg.read("pids.current")) == 8
        assert cg.counters("pids.events")["max"] >= 1
        assert "fork() failed: Resource temporarily unavailable (11)" in run.scenario.log.read_text()
        assert len(_comm_pids("lab-pool-worker")) == 7
        _diagnosed_both_ways(lab, run)
        path = cg.path
    assert not path.exists() and _gone("lab-pool-master") and _gone("lab-pool-worker")


def test_cpu_saturation_scenario_keeps_every_cpu_busy_and_is_diagnosed_cpu_saturation(lab) -> None:
    with lab.stage("cpu-saturation") as run:
        burners = _comm_pids("lab-burner")
        assert len(burners) >= 4 * (os.cpu_count() or 1)
        assert os.getloadavg()[0] >= os.cpu_count()
        if os.path.exists("/proc/pressure/cpu"):
            some = Path("/proc/pressure/cpu").read_text().split()[1]
            assert float(some.split("=")[1]) >= 25
        lab.assert_diagnosed(run)
    assert _comm_pids("lab-burner") == []


def test_runaway_process_scenario_spins_one_process_and_is_diagnosed_runaway_process(lab) -> None:
    with lab.stage("runaway-process") as run:
        (pid,) = _comm_pids("lab-spinner")
        fields = _stat(pid)
        cpu_s = (int(fields[11]) + int(fields[12])) / 100
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        age_s = uptime - int(fields[19]) / 100
        assert age_s >= 30 and cpu_s >= 0.5 * age_s
        lab.assert_diagnosed(run)
    assert _comm_pids("lab-spinner") == []


_STAGE_AND_WAIT = """
import json, sys, time
from prodx.lab import staged
with staged("swap-thrashing") as run:
    sc = run.scenario
    print(json.dumps({"root": str(run.sandbox.root), "swapfile": str(sc.swapfile), "cgroup": str(sc.cgroup.path),
                      "pids": sc.cgroup.pids()}), flush=True)
    time.sleep(120)
"""


def test_a_killed_thrashing_run_leaves_swap_and_cgroup_that_the_next_staging_removes() -> None:
    """SIGKILL runs no teardown: the swap file stays active, the cgroup and its workers stay.
    The next staging's stale cleanup (its sandbox records) swaps off, kills and removes them;
    a lab cgroup no sandbox recorded is swept too."""
    import json
    import sys

    from prodx.lab import cleanup_stale
    from prodx.lab.scenarios.cgroups import cgroup_base, remove_stale_cgroups

    proc = subprocess.Popen([sys.executable, "-c", _STAGE_AND_WAIT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        info = json.loads(line)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert info["swapfile"] in _active_swaps() and Path(info["cgroup"]).exists()
    assert all(Path(f"/proc/{pid}").exists() for pid in info["pids"])
    base, _version, _why = cgroup_base("memory")
    orphan = base / "prodx-lab-orphan-00000000"  # as a run killed before its sandbox recorded it
    orphan.mkdir()
    done = dict(cleanup_stale())
    assert done.get(Path(info["root"])) == []
    assert Path(info["root"]) in done and not Path(info["root"]).exists()
    assert info["swapfile"] not in _active_swaps() and not Path(info["cgroup"]).exists()
    assert orphan in remove_stale_cgroups() and not orphan.exists()
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{pid}").exists() for pid in info["pids"]) and time.monotonic() < deadline:
        time.sleep(0.05)  # the killed workers are not our children: init reaps them
    assert not any(Path(f"/proc/{pid}").exists() for pid in info["pids"])
