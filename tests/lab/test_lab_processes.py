"""Process lab scenarios reproduce their fault for real (a killed PHP-FPM behind nginx, a
Node app out of file descriptors, a PHP-FPM pool held by slow requests) and prodx ranks the
scenario's condition first, with the scenario's profile and without.

Root only: throwaway users, real nginx and PHP-FPM from Debian packages.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prodx.lab.scenarios.processes import WORKER_FD_LIMIT, children_of, fpm_master_pid, get

pytestmark = [
    pytest.mark.lab,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (users, services)"),
]


def test_crashed_service_scenario_leaves_nginx_answering_502_and_is_diagnosed_service_down(lab) -> None:
    with lab.stage("crashed-service") as run:
        scenario = run.scenario
        assert children_of(scenario.killed) == []
        with pytest.raises(Exception):
            fpm_master_pid(run.sandbox)
        assert get(scenario.web.port, "/login.php")[0] == 502
        assert "(111: Connection refused)" in Path(scenario.web.nginx_error_log).read_text()
        lab.assert_diagnosed(run)


def test_fd_exhaustion_scenario_holds_every_fd_of_its_limit_and_is_diagnosed_fd_exhaustion(lab) -> None:
    with lab.stage("fd-exhaustion") as run:
        worker = run.scenario.worker
        assert worker.poll() is None
        assert Path(f"/proc/{worker.pid}/comm").read_text().strip() == "node"
        limits = Path(f"/proc/{worker.pid}/limits").read_text()
        assert [line.split()[3] for line in limits.splitlines() if line.startswith("Max open files")] == [str(WORKER_FD_LIMIT)]
        assert len(os.listdir(f"/proc/{worker.pid}/fd")) >= 0.95 * WORKER_FD_LIMIT
        assert "EMFILE: too many open files" in run.scenario.log.read_text()
        assert get(run.scenario.port, "/", timeout_s=5)[0] == 500
        lab.assert_diagnosed(run)


def test_worker_pool_scenario_keeps_both_fpm_workers_busy_and_users_get_504_and_is_diagnosed(lab) -> None:
    with lab.stage("worker-pool-exhausted") as run:
        master = fpm_master_pid(run.sandbox)
        workers = children_of(master)
        assert len(workers) == 2
        assert all("wait_for_more_packets" not in Path(f"/proc/{pid}/wchan").read_text() for pid in workers)
        assert get(run.scenario.web.port, "/account.php")[0] == 504
        lab.assert_diagnosed(run)
