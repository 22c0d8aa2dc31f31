"""Workload and network-filesystem lab scenarios reproduce their fault for real and prodx ranks
the scenario's condition first: a tar that filled the disk, cron runs piling up under a
stand-in scheduler, a real nginx under a surge of connections, and (a labelled stand-in for
NFS, which this kernel lacks) a FUSE share whose server stopped answering.

mac-denial has no lab scenario: AppArmor is not built into this kernel and SELinux is built in
but not initialised (no selinuxfs), so no policy can deny anything here; tests/test_mac_probe.py
covers the probe on denial lines in the kernel's formats.

Root only: loop mounts, throwaway users, private nginx and PHP-FPM, FUSE.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from prodx.lab.scenarios.netfs import mounted
from prodx.lab.scenarios.workload import CRON_RUNS, _children, established_to, recent_requests

pytestmark = [
    pytest.mark.lab,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (mounts, users, services)"),
]


def test_backup_job_scenario_fills_the_disk_with_a_truncated_archive_and_is_diagnosed(lab) -> None:
    with lab.stage("backup-job") as run:
        scenario = run.scenario
        usage = shutil.disk_usage(scenario.mnt)
        assert usage.free < 2 << 20
        assert scenario.archive.stat().st_size > usage.total * 0.6
        assert lab.write_as(None, scenario.mnt, 1 << 20) == "ENOSPC"
        lab.assert_diagnosed(run)


def test_cron_overload_scenario_keeps_every_run_alive_at_once_and_is_diagnosed(lab) -> None:
    with lab.stage("cron-overload") as run:
        scheduler = run.scenario.scheduler
        assert Path(f"/proc/{scheduler.pid}/comm").read_text().strip() == "cron"
        runs = _children(scheduler.pid)
        assert len(runs) == CRON_RUNS
        assert all(Path(f"/proc/{pid}").exists() for pid in runs)
        lab.assert_diagnosed(run)


def test_traffic_spike_scenario_floods_a_real_nginx_and_is_diagnosed(lab) -> None:
    with lab.stage("traffic-spike") as run:
        scenario = run.scenario
        assert established_to(scenario.web.port) >= 256
        assert recent_requests(scenario.access_log) >= 300
        lab.assert_diagnosed(run)


def test_nfs_hang_stand_in_blocks_its_clients_in_the_kernel_and_is_diagnosed(lab) -> None:
    with lab.stage("nfs-hang") as run:
        scenario = run.scenario
        assert mounted(scenario.mnt)
        for client in scenario.clients:
            assert client.poll() is None
            assert Path(f"/proc/{client.pid}/wchan").read_text().startswith(("request_wait_answer", "fuse_"))
        lab.assert_diagnosed(run)
    assert not mounted(scenario.mnt)
