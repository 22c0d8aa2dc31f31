"""Discovery against real processes: a private nginx + PHP-FPM (prodx.lab.webstack) serving a
Symfony-shaped app, and a private PostgreSQL and Redis (prodx.lab.services), all started in a
lab sandbox on free 127.0.0.1 ports and always stopped. Root only (the stack switches users).

The parsers' own samples run as doctests (prodx.discovery.*)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from prodx.discovery import Discovery, discover
from prodx.host.local import LocalHost
from prodx.lab.sandbox import Sandbox
from prodx.lab.services import PostgresInstance, RedisInstance, postgres, postgres_unmet, redis, redis_unmet
from prodx.lab.webstack import WebStack, webstack_unmet
from prodx.profile import parse_profile

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the web stack runs as a throwaway user")


@dataclass
class Stack:
    sb: Sandbox
    web: WebStack
    app: Path
    pg: PostgresInstance | None
    redis: RedisInstance | None
    found: Discovery


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    unmet = webstack_unmet()
    if unmet:
        pytest.skip(unmet)
    sb = Sandbox("test-discovery")
    try:
        user = sb.add_user()
        app = sb.mkdirs("srv/shop", owner=user)
        sb.mkdirs(app / "bin")
        sb.write_text(app / "bin/console", "#!/usr/bin/env php\n")
        sb.write_text(app / "composer.lock", "{}\n")
        for d in ("var/cache", "var/log", "public"):
            sb.mkdirs(app / d, owner=user)
        web = WebStack(sb, user, app / "public", sb.mkdirs("sessions", owner=user))
        web.start()
        with _maybe(postgres, postgres_unmet, sb) as pg, _maybe(redis, redis_unmet, sb) as rd:
            yield Stack(sb, web, app, pg, rd, discover(LocalHost()))
    finally:
        assert sb.teardown() == []


class _maybe:
    """The service's context manager when it can run here, else None."""

    def __init__(self, cm, unmet, sb: Sandbox) -> None:  # noqa: ANN001
        self.cm = None if unmet() else cm(sandbox=sb)

    def __enter__(self):  # noqa: ANN204
        return self.cm.__enter__() if self.cm else None

    def __exit__(self, *exc):  # noqa: ANN002, ANN204
        return self.cm.__exit__(*exc) if self.cm else False


def _service(found: Discovery, pid: int):  # noqa: ANN202
    return next(s for s in found.services if s.pid == pid)


def _master(stack: Stack, argv0: str) -> int:
    """The pid the sandbox spawned for ``argv0`` (nginx or php-fpm's master)."""
    for proc in stack.sb._procs.values():
        if Path(proc.args[0]).name.startswith(argv0):
            return proc.pid
    raise AssertionError(f"{argv0} not spawned")


def test_discovery_finds_the_nginx_master_its_worker_user_port_config_and_logs(stack: Stack) -> None:
    nginx = _service(stack.found, _master(stack, "nginx"))
    assert nginx.kind == "nginx" and nginx.user == "root"
    assert nginx.worker_users == [stack.web.user.name]
    assert nginx.ports == [f"127.0.0.1:{stack.web.port}"]
    assert nginx.config == str(stack.sb.path("nginx/nginx.conf"))
    assert str(stack.web.nginx_error_log) in nginx.logs
    logs = dict(stack.found.logs)
    assert str(stack.sb.path("nginx-access.log")) in logs


def test_discovery_finds_php_fpm_its_pool_user_session_folder_and_error_log(stack: Stack) -> None:
    fpm = _service(stack.found, _master(stack, "php-fpm"))
    assert fpm.kind == "php-fpm" and fpm.worker_users == [stack.web.user.name]
    assert stack.found.user[0] == stack.web.user.name and "pool [lab]" in stack.found.user[1]
    writable = dict(stack.found.writable)
    assert "session.save_path of pool [lab]" in writable[str(stack.web.session_dir)]
    assert str(stack.web.php_error_log) in dict(stack.found.logs)


def test_discovery_follows_the_nginx_root_to_the_symfony_project_and_its_writable_folders(stack: Stack) -> None:
    assert (str(stack.app), "symfony") in stack.found.frameworks
    writable = dict(stack.found.writable)
    assert str(stack.app / "var/cache") in writable and str(stack.app / "var/log") in writable


def test_discovery_finds_the_private_postgresql_with_its_port_and_log(stack: Stack) -> None:
    if stack.pg is None:
        pytest.skip(postgres_unmet() or "")
    pg = _service(stack.found, stack.pg.pid)
    assert pg.kind == "postgresql" and pg.user == "postgres"
    assert f"127.0.0.1:{stack.pg.port}" in pg.ports
    assert str(stack.pg.log) in pg.logs


def test_discovery_reads_the_backend_nginx_hands_php_to_from_the_config_it_was_started_with(stack: Stack) -> None:
    upstreams = dict(stack.found.upstreams)
    sock = f"unix:{stack.sb.path('php-fpm.sock')}"
    assert sock in upstreams and "fastcgi_pass in " + str(stack.sb.path("nginx/nginx.conf")) in upstreams[sock]
    nginx = _service(stack.found, _master(stack, "nginx"))
    assert nginx.config_files[0] == str(stack.sb.path("nginx/nginx.conf"))


def test_discovery_reads_postgresql_config_from_its_data_directory_argument(stack: Stack) -> None:
    if stack.pg is None:
        pytest.skip(postgres_unmet() or "")
    assert _service(stack.found, stack.pg.pid).config == str(stack.pg.data_dir / "postgresql.conf")


def test_discovery_finds_the_private_redis_with_its_port(stack: Stack) -> None:
    if stack.redis is None:
        pytest.skip(redis_unmet() or "")
    rd = _service(stack.found, stack.redis.pid)
    assert rd.kind == "redis" and rd.ports == [f"127.0.0.1:{stack.redis.port}"]
    assert str(stack.redis.log) in rd.logs


def test_init_prints_a_profile_that_loads_and_names_the_stack(stack: Stack) -> None:
    proc = subprocess.run([sys.executable, "-m", "prodx", "init", "-o", "-"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    profile = parse_profile(proc.stdout, "init")
    assert {"nginx", Path(stack.web.php_fpm).name} <= set(profile.services)
    assert str(stack.web.session_dir) in profile.writable
    assert profile.user  # the first app user discovery saw (other stacks may run here too)
    if stack.pg is not None:
        assert any(d.url.endswith(f"127.0.0.1:{stack.pg.port}") for d in profile.dependencies)


def test_init_refuses_to_overwrite_without_force(stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "prodx.toml"
    out.write_text("# mine\n")
    argv = [sys.executable, "-m", "prodx", "init", "-o", str(out)]
    refused = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--force" in refused.stderr and out.read_text() == "# mine\n"
    forced = subprocess.run([*argv, "--force"], capture_output=True, text=True, timeout=60)
    assert forced.returncode == 0, forced.stderr
    assert parse_profile(out.read_text(), str(out)).services


def test_diagnose_without_a_profile_uses_the_discovered_services_and_says_where_they_came_from(stack: Stack) -> None:
    proc = subprocess.run([sys.executable, "-m", "prodx", "diagnose", "--json", "--no-write-test"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 1), proc.stderr
    target = json.loads(proc.stdout)["target"]
    assert {"nginx", Path(stack.web.php_fpm).name} <= set(target["services"])
    assert target["sources"]["services"]["nginx"].startswith("discovery: nginx pid")
    assert target["sources"]["writable"][str(stack.web.session_dir)].startswith("discovery: session.save_path")
    assert str(stack.web.nginx_error_log) in target["logs"]
    pids = {s["pid"] for s in target["discovered"]["services"]}
    assert _master(stack, "nginx") in pids
