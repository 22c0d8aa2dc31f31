"""Lab: changes that break a working site, reproduced for real on a private nginx + PHP-FPM,
and diagnosed first by `prodx diagnose --json --profile <sandbox profile>`.

Root only. What each scenario simulates is said in prodx/lab/scenarios/changes.py (the
dependency update writes what composer would; the errors after it are real).
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import time

import pytest
from prodx.lab.sandbox import wait_port

pytestmark = [
    pytest.mark.lab,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (throwaway users, servers)"),
]


def _status(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def test_bad_config_change_scenario_breaks_nginx_config_test_and_is_diagnosed_config_error(lab) -> None:
    with lab.stage("bad-config-change") as run:
        web = run.scenario.web
        conf = run.sandbox.path("nginx/nginx.conf")
        test = subprocess.run([web.nginx, "-t", "-q", "-e", "/dev/null", "-p", f"{run.sandbox.path('nginx')}/",
                               "-c", str(conf)], capture_output=True, text=True, timeout=30)
        assert test.returncode != 0 and "[emerg]" in test.stderr
        # The reload failed: the old config still serves, without the new location.
        assert _status(web.port, "/login.php") == 200
        assert _status(web.port, "/status") == 404
        lab.assert_diagnosed(run)


def test_dependency_regression_scenario_breaks_the_page_after_the_update_and_is_diagnosed_first(lab) -> None:
    with lab.stage("dependency-regression") as run:
        sc = run.scenario
        assert _status(sc.web.port, "/shop.php") == 500
        log = sc.web.php_error_log.read_text(errors="replace")
        assert "Call to undefined method Acme\\Greeter::greet()" in log
        assert '"version": "2.0.0"' in (sc.app / "composer.lock").read_text()
        head = (sc.app / ".git/logs/HEAD").read_text()
        assert "Release 1.8" in head  # the code itself was deployed days ago
        lab.assert_diagnosed(run)


def test_nginx_restarted_on_the_bad_config_stays_down_and_is_diagnosed_config_error_not_service_down(lab) -> None:
    """The bad edit, then a restart: nginx stops and its start fails on the config, so it is
    down. With the profile naming nginx and its error log, its last failed start is the
    evidence (change.last_start_failed_config) and the diagnosis is config-error, not the
    service-down a crash would be. (Without a profile a stopped nginx outside /etc leaves no
    trace on a host without systemd or a supervisor: no process, no well-known log.)"""
    with lab.stage("bad-config-change") as run:
        web = run.scenario.web
        prefix = run.sandbox.path("nginx")
        argv = [web.nginx, "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf"), "-e", str(web.nginx_error_log)]
        # What `systemctl restart nginx` does first: SIGQUIT to the master (`nginx -s quit`
        # would parse the broken config and refuse).
        os.kill(int(run.sandbox.path("nginx.pid").read_text().split()[0]), signal.SIGQUIT)
        wait_port(web.port, up=False)
        start = subprocess.run([*argv, "-g", "daemon off;"], capture_output=True, text=True, timeout=30)
        assert start.returncode != 0 and "[emerg]" in start.stderr
        doc = lab.diagnose(run)
        found = {f["id"]: f for f in doc["findings"]}
        assert found["change.last_start_failed_config"]["state"] == "present", found["change.last_start_failed_config"]
        lead = doc["differential"][0]
        assert lead["condition"] == "config-error" and lead["probability"] >= 0.5, (
            [(d["condition"], round(d["probability"], 3)) for d in doc["differential"][:4]],
            [f for f, v in found.items() if v["state"] == "present"])


def test_bad_deploy_scenario_pulls_a_broken_commit_and_is_diagnosed_first_with_and_without_profile(lab) -> None:
    with lab.stage("bad-deploy") as run:
        sc = run.scenario
        assert _status(sc.web.port, "/shop.php") == 500
        log = sc.web.php_error_log.read_text(errors="replace")
        assert "ArgumentCountError: Too few arguments to function App\\Price::format()" in log
        head = (sc.app / ".git/logs/HEAD").read_text().splitlines()
        assert "pull --ff-only: Fast-forward" in head[-1]
        # The deploy is new; the lockfile and vendor/ are as deployed days ago.
        assert time.time() - int(head[-1].split("\t")[0].split()[-2]) < 600
        for rel in ("composer.lock", "vendor/composer/installed.json", "vendor/acme/greeter/src/Greeter.php"):
            assert time.time() - (sc.app / rel).stat().st_mtime > 5 * 86400, rel
        assert time.time() - (sc.app / "src/Price.php").stat().st_mtime < 600
        lab.assert_diagnosed(run)
