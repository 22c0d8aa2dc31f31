"""Memory and CPU lab scenarios reproduce their fault for real and prodx diagnoses it first.

Root only: a memory cgroup with a 32 MiB limit in which the kernel OOM-kills a worker (never a
machine-wide OOM), busy processes saturating the CPUs, one process spinning on a core.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.lab,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (cgroups, processes)"),
]


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


def test_memory_oom_kill_scenario_kills_the_worker_in_its_cgroup_and_is_diagnosed_memory_oom(lab) -> None:
    with lab.stage("memory-oom-kill") as run:
        cg = run.scenario.cgroup
        assert cg.oom_kills() >= 1
        limit_file = "memory.max" if cg.version == 2 else "memory.limit_in_bytes"
        assert int((cg.path / limit_file).read_text()) == 32 * 1024 * 1024
        assert "exited on signal 9" in run.scenario.log.read_text()
        masters = _comm_pids("lab-fpm-master")
        assert masters and all(pid in cg.pids() for pid in masters)  # the master lives on in the cgroup
        assert _comm_pids("lab-fpm-worker") == []
        dmesg = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10).stdout
        assert "(lab-fpm-worker)" in dmesg or "task=lab-fpm-worker" in dmesg
        lab.assert_diagnosed(run)
        path = cg.path
    assert not path.exists()


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
