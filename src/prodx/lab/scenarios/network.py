"""Network and dependency faults with real servers: a database that stopped under a running
PHP app, a port another process took from nginx, a database out of connection slots.

Each runs its servers from the sandbox (PostgreSQL from prodx.lab.services, nginx and
PHP-FPM with their own configs) on free ports of 127.0.0.1; no loop device is needed.
"""

from __future__ import annotations

import json
import signal

from prodx.lab.framework import Needs, Scenario, profile_toml
from prodx.lab.sandbox import LabError, Sandbox, run_argv, wait_port, wait_until
from prodx.lab.scenarios.common import child_python
from prodx.lab.services import PostgresInstance, _run_as, find_postgres_bindir, free_port, postgres_unmet
from prodx.lab.webstack import find_nginx

_PG_NEEDS = Needs(commands=(("psql", "postgresql"),), kernel=(), check=postgres_unmet)


def _dependency(name: str, url: str) -> str:
    return f"\n[[dependency]]\nname = {json.dumps(name)}\nurl = {json.dumps(url)}\n"


class _WithPostgres(Scenario):
    """An app that needs a private PostgreSQL in the sandbox."""

    settings: dict[str, object] = {}

    def setup(self, sb: Sandbox) -> None:
        bindir = find_postgres_bindir()
        if bindir is None:
            raise LabError("needs Debian package postgresql")
        self.pg = PostgresInstance(sb.mkdirs(sb.path("postgres")), free_port(), sandbox=sb, bindir=bindir,
                                   account=_run_as("postgres"), settings=dict(self.settings))
        self.pg.start()
        self.injected.append(f"PostgreSQL on 127.0.0.1:{self.pg.port} (data in {self.pg.data_dir}) answers "
                             f"{self.pg.psql('SELECT 1')!r} to SELECT 1")

    def teardown(self, sb: Sandbox) -> None:
        if getattr(self, "pg", None) is not None:
            self.pg.stop(signal.SIGINT)

    def profile(self, sb: Sandbox) -> str:
        return profile_toml(name=f"lab-{self.name}", user="root") + _dependency("database", self.pg.url)


#: The shop's product page: one query through PDO, the way a PHP app reads its database.
_PRODUCTS_PHP = r"""<?php
$db = new PDO('pgsql:host=127.0.0.1;port=%(port)d;dbname=postgres', 'postgres', '',
              [PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION, PDO::ATTR_TIMEOUT => 3]);
echo 'products: ' . $db->query('SELECT 3')->fetchColumn() . "\n";
"""


def _pdo_pgsql_unmet() -> str | None:
    from prodx.lab.webstack import find_php_fpm, webstack_unmet

    why = webstack_unmet() or postgres_unmet()
    if why:
        return why
    modules = run_argv([find_php_fpm() or "php-fpm", "-m"], check=False).stdout
    return None if "pdo_pgsql" in modules else "needs Debian package php-pgsql (PDO for PostgreSQL)"


class DependencyDown(_WithPostgres):
    name = "dependency-down"
    condition = "dependency-down"
    description = ("a PHP app (nginx + PHP-FPM as its own user) reads its private PostgreSQL through PDO; the "
                   "database is stopped, and every page that needs it fails with the driver's connection error")
    symptoms = ("every page that reads the database returns 500",
                "the PHP log says SQLSTATE[08006] ... Connection refused")
    needs = Needs(commands=(("psql", "postgresql"), ("useradd", "passwd"), ("userdel", "passwd")), kernel=(),
                  check=_pdo_pgsql_unmet)

    def setup(self, sb: Sandbox) -> None:
        from prodx.lab.webstack import WebStack

        super().setup(sb)
        self.user = sb.add_user()
        app = sb.mkdirs("app", owner=self.user)
        sb.mkdirs(app / "sessions", mode=0o700, owner=self.user)
        self.web = WebStack(sb, self.user, app / "public", app / "sessions")
        self.web.start()
        sb.write_text(self.web.docroot / "products.php", _PRODUCTS_PHP % {"port": self.pg.port}, owner=self.user)
        status, body = _get(self.web.port, "/products.php")
        if status != 200 or "products: 3" not in body:
            raise LabError(f"the healthy shop answers {status}: {body[:200]!r}; see {self.web.logs}")
        self.injected.append(f"nginx on http://127.0.0.1:{self.web.port}/ and PHP-FPM as {self.user.name}; "
                             "/products.php read the database")

    def inject(self, sb: Sandbox) -> None:
        self.pg.stop(signal.SIGINT)
        self.injected.append(f"PostgreSQL stopped (fast shutdown); 127.0.0.1:{self.pg.port} now refuses connections")
        codes = [_get(self.web.port, "/products.php")[0] for _ in range(3)]
        if codes != [500, 500, 500]:
            raise LabError(f"the shop did not fail without its database: {codes}")
        self.injected.append(f"/products.php now answers {codes}; PHP logged the driver's error to {self.web.php_error_log}")

    def profile(self, sb: Sandbox) -> str:
        assert self.user is not None
        return profile_toml(name=f"lab-{self.name}", user=self.user.name, logs=self.web.logs,
                            services=self.web.service_names) + _dependency("database", self.pg.url)


def _get(port: int, path: str) -> tuple[int, str]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


class DbConnectionsExhausted(_WithPostgres):
    name = "db-connections-exhausted"
    condition = "db-connections-exhausted"
    description = ("a private PostgreSQL with max_connections = 5 (none reserved) whose five slots are all held "
                   "by idle client sessions, as leaked connections of app workers would")
    symptoms = ("pages fail with 'FATAL: sorry, too many clients already'", "restarting the app helps for a while")
    needs = _PG_NEEDS
    settings = {"max_connections": 5, "superuser_reserved_connections": 0}

    def inject(self, sb: Sandbox) -> None:
        self.pg.hold_connections(5)
        refused = self.pg.psql_result("SELECT 1")
        self.injected.append(f"5 idle sessions hold every slot; a new one gets: {refused.stderr.strip().splitlines()[-1]}")


_NGINX_CONF = """worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log;
events {{ worker_connections 16; }}
http {{
    access_log {root}/nginx-access.log;
    client_body_temp_path {root}/nginx-tmp;
    server {{
        listen 127.0.0.1:{port};
        return 200 "shop is up\\n";
    }}
}}
"""
_SQUAT = ("import socket, sys, time\n"
          "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
          "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\n"
          "time.sleep(86400)\n")


_SUPERVISOR_CONF = """[unix_http_server]
file={root}/supervisor.sock
chmod=0700

[supervisord]
logfile={root}/supervisord.log
pidfile={root}/supervisord.pid
childlogdir={root}
nodaemon=true

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{root}/supervisor.sock

[program:nginx]
command={nginx} -p {root}/ -c {root}/nginx.conf -e {root}/nginx-error.log -g "daemon off;"
autorestart=true
; nginx retries bind() for about 2.5 s before it gives up: above that, each such attempt
; counts as a failed start, and after startretries supervisord stops trying (FATAL).
startsecs=5
startretries=2
stopsignal=QUIT
stopasgroup=true
killasgroup=true
stdout_logfile={root}/nginx.stdout.log
stderr_logfile={root}/nginx.stderr.log
"""


class PortConflict(Scenario):
    name = "port-conflict"
    condition = "port-conflict"
    description = ("nginx (own config in the sandbox) runs under supervisord, as in many containers; it is "
                   "restarted while another process (a stray Python server) has taken 127.0.0.1:PORT, the port its "
                   "config listens on: every start fails and supervisord gives up (FATAL)")
    symptoms = ("after a restart the site is down", "nginx will not start: bind() ... failed (98: Address already in use)")
    needs = Needs(commands=(("nginx", "nginx-light"), ("supervisord", "supervisor"), ("supervisorctl", "supervisor")),
                  kernel=())

    def setup(self, sb: Sandbox) -> None:
        self.nginx = find_nginx() or "nginx"
        self.port = free_port()
        sb.mkdirs(sb.path("nginx-tmp"))
        self.conf = sb.write_text("nginx.conf", _NGINX_CONF.format(root=sb.root, port=self.port))
        self.error_log = sb.write_text("nginx-error.log", "")
        sb.run([self.nginx, "-p", f"{sb.root}/", "-c", str(self.conf), "-e", str(self.error_log), "-t", "-q"])
        self.supervisor_conf = sb.write_text("supervisord.conf", _SUPERVISOR_CONF.format(root=sb.root, nginx=self.nginx),
                                             mode=0o600)
        self.supervisord = sb.spawn(["supervisord", "-n", "-c", str(self.supervisor_conf)], log="supervisord.out")
        wait_port(self.port, True)
        self.injected.append(f"nginx under supervisord (pid {self.supervisord.pid}) serves http://127.0.0.1:{self.port}/")

    def ctl(self, sb: Sandbox, *args: str) -> str:
        """``supervisorctl`` on the sandbox's supervisord; its output."""
        proc = sb.run(["supervisorctl", "-c", str(self.supervisor_conf), *args], check=False, timeout_s=60)
        return (proc.stdout + proc.stderr).strip()

    def inject(self, sb: Sandbox) -> None:
        self.ctl(sb, "stop", "nginx")  # a restart stops first...
        wait_port(self.port, False)
        squatter = sb.spawn([child_python(), "-I", "-c", _SQUAT, str(self.port)], log="squatter.out")
        wait_port(self.port, True)
        said = self.ctl(sb, "start", "nginx")  # ...and the start finds the port taken
        wait_until(lambda: "FATAL" in self.ctl(sb, "status", "nginx"), 30, "supervisord did not give up on nginx")
        self.injected.append(f"python3 (pid {squatter.pid}) holds 127.0.0.1:{self.port}; `supervisorctl start nginx` "
                             f"said {said!r}; nginx's log: {self.error_log.read_text().strip().splitlines()[-1]}")

    def teardown(self, sb: Sandbox) -> None:
        # supervisord starts each program in a process group of its own: stop them through it
        # before the sandbox ends supervisord's own group.
        if getattr(self, "supervisord", None) is not None and self.supervisord.poll() is None:
            self.ctl(sb, "stop", "all")

    def profile(self, sb: Sandbox) -> str:
        return profile_toml(name=f"lab-{self.name}", user="root", logs=[str(self.error_log)], services=["nginx"])
