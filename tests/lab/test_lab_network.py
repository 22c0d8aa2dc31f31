"""Network and dependency lab scenarios reproduce their fault for real (a stopped PostgreSQL
under a PHP app, a port taken from nginx under supervisord, PostgreSQL out of slots), and
prodx diagnoses each first, with the scenario's profile and without.

Root only: PostgreSQL runs as the postgres user; nginx as root with its own config.
"""

from __future__ import annotations

import os
import socket

import pytest

pytestmark = [
    pytest.mark.lab,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (servers run as their own users)"),
]


def _connect(port: int) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return "OK"
    except OSError as exc:
        return type(exc).__name__


def test_dependency_down_scenario_refuses_the_database_port_and_is_diagnosed_dependency_down(lab) -> None:
    with lab.stage("dependency-down") as run:
        pg = run.scenario.pg
        assert not pg.running
        assert _connect(pg.port) == "ConnectionRefusedError"
        lab.assert_diagnosed(run)


def test_port_conflict_scenario_keeps_nginx_from_its_port_and_is_diagnosed_port_conflict(lab) -> None:
    with lab.stage("port-conflict") as run:
        sc = run.scenario
        assert "Address already in use" in sc.error_log.read_text()
        assert _connect(sc.port) == "OK"  # the squatter answers, not nginx
        assert "FATAL" in sc.ctl(run.sandbox, "status", "nginx")  # supervisord gave up starting it
        lab.assert_diagnosed(run)


def test_db_connections_exhausted_scenario_refuses_new_sessions_and_is_diagnosed_first(lab) -> None:
    with lab.stage("db-connections-exhausted") as run:
        refused = run.scenario.pg.psql_result("SELECT 1")
        assert refused.returncode != 0 and "too many clients" in refused.stderr
        lab.assert_diagnosed(run)
